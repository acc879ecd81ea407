"""The training run: data, mesh, state, the step loop, metrics and Orbax checkpoints (`train.py`'s body).

`WORKDIR/checkpoints/STEP/` (Orbax `CheckpointManager`, asynchronous, the last `keep_checkpoints`)
holds `state` (parameters, AdamW state, EMA, PRNG key, step) and `meta` (the resolved config, the data
pipeline's position). Started again with the same command, a run resumes from its latest checkpoint;
one made with other binding settings (`_BINDING_EXCLUDED` may change) or unreadable is an error,
never a fresh start. `WORKDIR/metrics.jsonl` gets one JSON object per logged step; on resume the lines
after the checkpoint's step (written by the interrupted run) are dropped, so the file reads as one run.
Every `generate_every` steps the EMA weights' samples of `sample_prompts` go to `WORKDIR/samples/STEP/`
(`samples.py`). SIGTERM (a TPU preemption, to any process) saves a step and returns; a run killed at any moment
resumes from its latest checkpoint and repeats exactly (bitwise on the same machine) what followed it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time

import jax
import ml_collections
import numpy as np
from etils import epath

from musicgen_jax.config import LMConfig, interleaved_delays
from musicgen_jax.data import shards
from musicgen_jax.data.pipeline import PipelineConfig, TrainBatches, eval_batches, load_host_examples
from musicgen_jax.fileio import TextLog, exists, make_dirs, path, read_text
from musicgen_jax.lm.model import stack_layers, stereo_from_mono
from musicgen_jax.metrics.suite import Sources
from musicgen_jax.musicgen import load_components
from musicgen_jax.sharding import make_mesh, shardings
from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.train.experiment import RunConfig, default_config, pipeline_config, run_config
from musicgen_jax.train.experiment import step_config as experiment_step_config
from musicgen_jax.train.objective import Objective
from musicgen_jax.train.rundir import checkpoint_manager, ema_weights, run_lm_config
from musicgen_jax.train.samples import EMAModel, Samples
from musicgen_jax.train.trainer import (
    StepConfig,
    compile_eval,
    compile_step,
    global_batch,
    init_state,
    state_shapes,
    state_specs,
)

METRICS = "metrics.jsonl"
_BINDING_EXCLUDED = (
    "log_every",
    "checkpoint_every",
    "eval_every",
    "keep_checkpoints",
    "total_steps",
    "generate_every",
    "sample_prompts",
    "sample_seconds",
    "sample_seed",
    "sample_dtype",
)


class TrainingError(ValueError):
    """A run that cannot start or continue: bad config, mismatched or unreadable checkpoint, diverged weights."""


def lm_config(config: ml_collections.ConfigDict, info: dict, text_dim: int) -> LMConfig:
    """The LM of the run (`rundir.run_lm_config`: the same as when it is loaded for sampling)."""
    return run_lm_config(config.to_dict(), info, text_dim)


class _TrainData:
    """This process's share of the train split: of `parts` pipeline parts (fixed for the run, stored in its
    checkpoints) process i of P holds parts [i * parts / P, (i + 1) * parts / P), each a `TrainBatches` of
    `batch_size / parts` rows, concatenated in order. The global batch of a step is therefore the same for
    any number of processes dividing `parts`: a run resumes on another number of hosts unchanged."""

    def __init__(self, config, parts: int, start: int, tokenizer, chroma_frames: int):
        count, index = jax.process_count(), jax.process_index()
        if parts < 1 or parts % count or config.batch_size % parts:
            raise TrainingError(
                f"{parts} data parts must be a multiple of the {count} processes and divide "
                f"config.batch_size {config.batch_size}"
            )
        pipeline = pipeline_config(config, config.batch_size // parts, chroma_frames)
        self.parts, self.streams = parts, []
        for part in range(index * parts // count, (index + 1) * parts // count):
            examples = load_host_examples(config.data_dir, "train", part, parts)
            self.streams.append(TrainBatches(examples, pipeline, tokenizer, start=start))

    def __next__(self) -> dict:
        batches = [next(stream) for stream in self.streams]
        return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}

    def state(self) -> dict:
        return {"parts": self.parts, "step": self.streams[0].step}


class Evaluation:
    """A split of a dataset, this host's part, in as many batches on every host (the first `frames` frames
    of each example, its plain description); `__call__(params)` -> the metrics of `params`: `eval_loss`
    and per-codebook `eval_ppl_k` (the trainer's evaluation of its EMA weights, and `evaluate.py`'s)."""

    def __init__(
        self,
        data_dir,
        split: str,
        step_config: StepConfig,
        mesh,
        tokenizer,
        t5_params,
        batch_size: int,
        frames: int,
        text_lengths: tuple[int, ...] = (128,),
        text_embeddings: bool = False,
    ):
        total = shards.dataset_info(data_dir)["splits"].get(split, {}).get("examples", 0)
        if total < jax.process_count():
            raise TrainingError(
                f"the {split} split of {data_dir} has {total} examples, fewer than the "
                f"{jax.process_count()} processes (prepare with --valid-fraction)"
            )
        local = batch_size // jax.process_count()
        self.pipeline = PipelineConfig(
            local,
            frames,
            text_lengths=text_lengths,
            text_embeddings=text_embeddings,
            chroma_frames=_chroma_frames(step_config),
        )
        self.examples = load_host_examples(data_dir, split)
        per_process = -(-total // jax.process_count())  # ceil divisions
        self.num_batches = -(-per_process // local)
        self.evaluate = compile_eval(step_config, mesh)
        self.mesh, self.rules, self.tokenizer, self.t5_params = mesh, step_config.rules, tokenizer, t5_params

    def __call__(self, params, progress: bool = False) -> dict:
        from tqdm.auto import tqdm

        total = count = 0.0
        batches = eval_batches(self.examples, self.pipeline, self.tokenizer, self.num_batches)
        for local in tqdm(
            batches,
            total=self.num_batches,
            desc="evaluating",
            unit="batch",
            disable=not progress or jax.process_index() != 0,
        ):
            local.pop("valid")
            sums, counts = jax.device_get(
                self.evaluate(params, global_batch(local, self.mesh, self.rules), self.t5_params)
            )
            total, count = total + sums, count + counts
        ce = total / np.maximum(count, 1.0)
        return {"eval_loss": float(ce.mean()), **{f"eval_ppl_{k}": float(np.exp(v)) for k, v in enumerate(ce)}}


def _chroma_frames(step_config: StepConfig) -> int:
    """The chroma frames the batches carry: the melody LM's, 0 for text models."""
    return step_config.lm.chroma_frames if step_config.lm.melody else 0


def _binding(config: ml_collections.ConfigDict) -> dict:
    return {k: v for k, v in json.loads(config.to_json()).items() if k not in _BINDING_EXCLUDED}


def _record(line: str) -> dict | None:
    """A metrics line, or None for the torn last line of a killed run."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class _Metrics:
    """`metrics.jsonl`, written by process 0 (`fileio.TextLog`): cut back to the lines up to `start` on
    resume, then one line per logged step."""

    def __init__(self, where: epath.Path, start: int):
        self.log = None
        if jax.process_index() == 0:
            lines = read_text(where).splitlines() if exists(where) else []
            kept = [line for line in lines if (record := _record(line)) is not None and record["step"] <= start]
            self.log = TextLog(where, kept)

    def write(self, record: dict) -> None:
        if self.log is not None:
            self.log.append(json.dumps(record))


class _Stop:
    """A preemption notice (SIGTERM), acted on at a step every process agrees on. Across processes, JAX's
    preemption sync (`multihost_utils.reached_preemption_sync_point`, whose service takes SIGTERM itself
    and tells every process) names the step after the highest any process has reached, so all save the
    same step; a single process sets a flag from its own SIGTERM handler."""

    def __init__(self):
        self.shared = jax.process_count() > 1
        self._flag = False
        self._previous = None if self.shared else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self._flag = True

    def requested(self, step: int) -> bool:
        """Whether to save `step` (done) and stop; called after every step, by every process."""
        if self.shared:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag

    def restore(self) -> None:
        if not self.shared:
            signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Run (or resume) the training of `config` in `workdir`; returns the last logged metrics."""
    from tqdm.auto import tqdm

    try:
        run = run_config(config)
    except (ValueError, TypeError) as e:
        raise TrainingError(str(e)) from e
    if run.batch_size % jax.process_count():
        raise TrainingError(f"config.batch_size {run.batch_size} does not divide over {jax.process_count()} processes")
    workdir = make_dirs(workdir)
    try:
        info = shards.dataset_info(run.data_dir)
    except (OSError, ValueError) as e:
        raise TrainingError(f"config.data_dir: {e}") from e
    text_encoder = T5TextEncoder.from_pretrained(run.text_encoder)
    try:
        lm = lm_config(config, info, text_encoder.config.d_model)
        step_config = experiment_step_config(config, lm, None if run.text_embeddings else text_encoder.config)
        mesh = make_mesh(**run.mesh)
    except (ValueError, TypeError) as e:
        raise TrainingError(f"bad config: {e}") from e
    manager = checkpoint_manager(workdir, run.keep_checkpoints)
    state_sharding = shardings(state_specs(step_config), mesh, step_config.rules)
    latest = manager.latest_step()
    if latest is None:
        params = _initial_params(run, step_config, info)
        state, parts = init_state(step_config, run.seed, mesh, params), run.data_parts or jax.process_count()
    else:
        state, meta = _restore(manager, latest, config, step_config, state_sharding)
        parts = meta["data"]["parts"]
    start = int(jax.device_get(state.step))
    batches = _TrainData(config, parts, start, text_encoder.tokenizer, _chroma_frames(step_config))
    step_fn = compile_step(step_config, mesh)
    t5_params = {} if run.text_embeddings else text_encoder.params
    evaluation = run.eval_every and Evaluation(
        run.data_dir,
        "valid",
        step_config,
        mesh,
        text_encoder.tokenizer,
        t5_params,
        run.batch_size,
        run.frames,
        (run.text_length,),
        run.text_embeddings,
    )
    try:
        ema_model = (run.generate_every or run.objective_every) and EMAModel.of_run(
            workdir,
            info,
            step_config.lm,
            text_encoder,
            step_config.scan_layers,
            mesh,
            step_config.lora_rank > 0,
            run.sample_dtype,
        )
        samples = run.generate_every and Samples(ema_model, run.sample_prompts, run.sample_seconds, run.sample_seed)
    except (OSError, ValueError) as e:
        raise TrainingError(f"generating during training (config.generate_every, objective_every): {e}") from e
    objective = run.objective_every and Objective(
        ema_model,
        run.data_dir,
        workdir,
        run.objective_samples,
        list(run.objective_metrics) or None,
        Sources(**run.objective_sources),
        run.sample_seed,
    )
    metrics_file = _Metrics(workdir / METRICS, start)
    stop = _Stop()
    bar = tqdm(
        total=run.total_steps,
        initial=start,
        unit="step",
        desc="training",
        disable=not progress or jax.process_index() != 0,
    )
    last = {}
    tick, tokens = time.perf_counter(), 0
    try:
        for step in range(start, run.total_steps):
            local = next(batches)
            tokens += int(local["mask"][:, 0].sum()) * jax.process_count()
            state, metrics = step_fn(state, global_batch(local, mesh, step_config.rules), t5_params)
            done = step + 1
            evaluate = evaluation and done % run.eval_every == 0
            score = objective and done % run.objective_every == 0
            if evaluate or score or done % run.log_every == 0 or done == run.total_steps:
                values = jax.device_get(metrics)
                now = time.perf_counter()
                last = {
                    "step": done,
                    "loss": float(values["loss"]),
                    **{f"ce_{k}": float(v) for k, v in enumerate(values["ce"])},
                    "lr": float(values["lr"]),
                    "grad_norm": float(values["grad_norm"]),
                    "tokens_per_s": tokens / (now - tick),
                }
                tick, tokens = now, 0
                _check_finite(done, values, manager.latest_step())
                if evaluate:
                    last.update(evaluation(ema_weights(state.params, state.ema)))
                if score:
                    last.update(objective(done, ema_weights(state.params, state.ema)))
                metrics_file.write(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if samples and done % run.generate_every == 0:
                samples(done, ema_weights(state.params, state.ema))
            bar.update()
            preempted = stop.requested(done)
            if done % run.checkpoint_every == 0 or done == run.total_steps or preempted:
                _check_finite(done, metrics, manager.latest_step())
                _save(manager, done, state, config, batches)
            if preempted:
                break
        manager.wait_until_finished()
    finally:
        stop.restore()
        bar.close()
        manager.close()
    return last


def _check_finite(step: int, metrics: dict, saved: int | None) -> None:
    """TrainingError if the step's loss or gradient norm is not finite (the weights are then lost: a NaN
    or inf stays in them), checked before the step is logged or saved, so no checkpoint holds them."""
    loss, norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not (math.isfinite(loss) and math.isfinite(norm)):
        kept = f"the latest checkpoint, step {saved}, is intact" if saved is not None else "no checkpoint was saved"
        raise TrainingError(
            f"step {step}: the loss is {loss} and the gradient norm {norm} (not finite); nothing of "
            f"this state is saved ({kept}): lower optim.lr or use compute_dtype=float32, then run "
            "again (it resumes from the latest checkpoint)"
        )


def check_dataset(components, info: dict, source: str, data_dir) -> None:
    """TrainingError unless the dataset (`info`: its dataset.json) holds tokens of the codec of `components`
    (the model of `source`), mono or stereo: the same codebooks per channel, cardinality, sample and frame
    rates."""
    codec, model = info["codec"], components.codec
    per_channel = model.num_codebooks // (2 if model.stereo else 1)  # the codebooks it codes with (a DAC's first n)
    theirs = (per_channel, model.config.codebook_size, model.sample_rate, model.frame_rate)
    ours = (
        info["num_codebooks"] // (2 if codec.get("stereo") else 1),
        info["card"],
        codec["sample_rate"],
        codec["frame_rate"],
    )
    if theirs != ours:
        raise TrainingError(
            f"{source} has a codec of {theirs[0]} codebooks x {theirs[1]} per channel at "
            f"{theirs[2]} Hz, {theirs[3]} frames per second; the dataset {data_dir} holds "
            f"{ours[0]} x {ours[1]} at {ours[2]} Hz, {ours[3]} per second: prepare it with this "
            f"model's codec"
        )


def _initial_params(run: RunConfig, step_config: StepConfig, info: dict):
    """None (a fresh run starts from random weights), or with `config.init_from` that checkpoint's LM
    weights (any source `MusicGen.get_pretrained` takes: converted, PyTorch, another run), after checking,
    before anything compiles, that its LM has the run's architecture and its codec the dataset's rates."""
    if not run.init_from:
        return None
    source = run.init_from
    try:
        components = load_components(source)
    except (OSError, ValueError) as e:
        raise TrainingError(f"config.init_from {source!r} cannot be loaded: {e}") from e
    check_dataset(components, info, source, run.data_dir)
    lm, params = components.lm_config, components.lm_params
    if lm.delays == interleaved_delays(lm.num_codebooks) and step_config.lm.delays == interleaved_delays(
        2 * lm.num_codebooks, 2
    ):  # a stereo run from mono
        lm, params = dataclasses.replace(lm, delays=step_config.lm.delays), stereo_from_mono(params)
    theirs, ours = dataclasses.asdict(lm), dataclasses.asdict(step_config.lm)
    changed = [f"{name} {ours[name]!r} (checkpoint: {theirs[name]!r})" for name in ours if ours[name] != theirs[name]]
    if changed:
        raise TrainingError(
            f"config.init_from {source!r} is another architecture than this run's: "
            f"{', '.join(changed)}; set config.model (and config.text_encoder, config.melody) to "
            f"the checkpoint's, and use a dataset coded with its codec"
        )
    return stack_layers(params) if step_config.scan_layers else params


def _meta(config: ml_collections.ConfigDict, batches: _TrainData) -> dict:
    return {"config": json.loads(config.to_json()), "data": batches.state()}


def _save(manager, step: int, state: dict, config, batches: _TrainData) -> None:
    import orbax.checkpoint as ocp

    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(_meta(config, batches))),
        force=True,
    )


def _restore(manager, step: int, config, step_config: StepConfig, state_sharding) -> tuple[dict, dict]:
    """The state and the `meta` item of checkpoint `step`, after checking both belong to this run."""
    import orbax.checkpoint as ocp

    directory = manager.directory / str(step)
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is one clear error
        raise TrainingError(
            f"checkpoint {directory} is unreadable ({type(e).__name__}: {e}); remove it to resume from an earlier one"
        ) from e
    # a key the run's version did not have yet holds its default (one added later: logical_axis_rules)
    saved = {**_binding(default_config()), **{k: v for k, v in meta["config"].items() if k not in _BINDING_EXCLUDED}}
    current = _binding(config)
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        raise TrainingError(
            f"{manager.directory} holds a run with other settings ({', '.join(changed)}); use "
            f"the same config, or another --workdir"
        )
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes(step_config), state_sharding
    )
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # noqa: BLE001
        raise TrainingError(
            f"checkpoint {directory} is unreadable ({type(e).__name__}: {e}); remove it to resume from an earlier one"
        ) from e
    state = restored["state"]
    if int(jax.device_get(state.step)) != step:
        raise TrainingError(f"checkpoint {directory} holds step {int(jax.device_get(state.step))}, not {step}")
    return state, meta


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` when launched as several processes: explicitly through
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or as detected by JAX on TPU pod workers
    (TPU_WORKER_HOSTNAMES with several hosts) and SLURM jobs of several tasks."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes only; GPUs / TPUs unaffected
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", "") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def metrics_lines(workdir: str | os.PathLike) -> list[dict]:
    """The records of `WORKDIR/metrics.jsonl`."""
    where = path(workdir) / METRICS
    return [json.loads(line) for line in read_text(where).splitlines() if line] if exists(where) else []
