"""The GPU sampling matrix, run by `benchmarks/gpu.sh`: musicgen_jax's `generate_tokens` against its PyTorch peers on
the same random weights, one row per model size (small, medium, large; tiny for the tests on a CPU), dtype and
batch: steps/s, real-time factor, compile time, peak device memory and the weight-streaming bound. The peers
(`--peers`): "generate", transformers' stock `generate` (sdpa attention); "compiled", the same `generate` with a
static KV cache and its `torch.compile` of the forward (mode "reduce-overhead": CUDA graphs; `CompiledGenerator`),
at `--compiled-batches` only, its compile being long; "audiocraft", audiocraft's `MusicGen.generate`, reported
as not measured with the reason (`audiocraft_status`).

Per size both models are built once, the JAX decode loops of all its configurations compiled at once (one thread
each), then per dtype and batch one warm call and `--runs` timed calls per side. To stay within
`--budget-seconds`, work runs in order of increasing cost and a unit (a size's build and compile phase, a
configuration, the compiled peer's part of one) runs only while the time used plus that of the last unit of its
kind fits; the rest are skipped and the table says so. The table is rewritten after every row (`--out`), so a run
stopped from outside keeps what it measured; out of device memory is reported on its side.

    python -m benchmarks.sampling_gpu --models small,medium,large --dtypes bfloat16,float32 \\
        --batches 1,8,64 --frames 250 --torch-frames 64 --budget-seconds 420 --out out/gpu_sampling.md
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
import torch
import transformers
from torch._dynamo.utils import counters
from transformers import CompileConfig, MusicgenForConditionalGeneration
from transformers import T5Tokenizer as HFT5Tokenizer
from transformers.cache_utils import EncoderDecoderCache, StaticCache

from benchmarks.common import (
    GIB,
    command_line,
    load_average,
    machine_lines,
    median_min,
    memory_analysis,
    memory_bandwidth,
    package_state,
    peak_bytes,
    section,
    sig,
    table,
    usable_cores,
)
from benchmarks.sampling import (
    CARD,
    CFG,
    SAMPLING,
    SIZES,
    TOP_K,
    WARMUP_FRAMES,
    TorchGenerator,
    hf_config,
    lm_weight_bytes,
    step_params,
)
from benchmarks.text import prompt_batch, write_spiece
from musicgen_jax.fileio import atomic_file
from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import cast_params
from musicgen_jax.lm.weights import lm_config_from_hf, lm_params_from_hf_state_dict
from musicgen_jax.sampling import FRAME_BUCKET, frame_bucket, generate_tokens, lower_generate, row_keys

TITLE = "## Sampling on a GPU (MusicGen small, medium and large architectures, random weights)"
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SKIPPED, OOM, NOT_RUN = "skipped: time budget", "out of memory", "not run"
PEERS = ("generate", "compiled", "audiocraft")
DELAYS = (0, 1, 2, 3)  # MusicGen's delay pattern, as `TorchGenerator` runs it
# per sub-model (a single "sdpa" would apply to all, and EnCodec, with no attention, refuses it)
ATTENTION = {"text_encoder": "sdpa", "decoder": "sdpa", "audio_encoder": "eager"}
CAST_PARTS = ("text_encoder", "enc_to_dec_proj", "decoder")  # transformers' parts run in the benchmark's dtype
NOTES = """\
- Models: transformers `MusicgenForConditionalGeneration` built from its config with `torch.manual_seed(0)` on the \
device, sdpa attention in the text encoder and decoder; JAX: the LM parameters from the same state dict in memory \
(`lm_params_from_hf_state_dict`), cast with `cast_params` (matrices in the dtype, norms and biases float32), and \
the T5 encoder's float32 states of the same prompts; transformers: text encoder, projection and decoder cast to the \
dtype (the codec float32). On a GPU, float32 matmuls in TF32 on both sides.
- Sampling: JAX {frames} frames ({steps} steps), transformers {torch_frames} ({torch_steps} steps), top-k {top_k}, \
guidance {cfg:g} (the batch runs doubled); prompts: `benchmarks.text.PROMPTS` repeated to the batch.
- Timing: per configuration one warm call per side ({warm} / {torch_warm} frames), then {runs} timed round(s) \
of JAX then each peer (median); the JAX compile column is each decode loop's wall time, compiled beside the others \
of its size. Generation seconds: JAX `generate_tokens`; transformers `generate` minus its codec decode, its T5 \
encoding included. Steps/s = (frames + 3) / generation seconds; ratio = JAX steps/s / the peer's steps/s.
- Memory: JAX decode loop = the compiled loop's `memory_analysis()` (weights, KV cache, state); JAX process = \
`memory_stats()['peak_bytes_in_use']` since start (n/a on the CPU); transformers and compiled = \
`torch.cuda.max_memory_allocated()` in each timed call after `reset_peak_memory_stats()`, the largest (n/a on the \
CPU)."""
COMPILED_NOTES = """\
- Peer "compiled" (`CompiledGenerator`), at batch {batches} only (`--compiled-batches`; "not run" elsewhere): the \
stock peer's model and call, `generate(**tokens, do_sample=True, top_k={top_k}, guidance_scale={cfg:g}, \
max_length=frames + 4)`, with `compile_config=CompileConfig({config})` and a static KV cache, \
`EncoderDecoderCache(StaticCache(config=model.decoder.config, max_cache_len={torch_frames} + 3), \
StaticCache(config=model.decoder.config, max_cache_len=prompt tokens))`, allocated once per configuration and \
reset per call (fixed shapes and addresses for CUDA graphs): with it `GenerationMixin._sample` runs each decode \
step through `torch.compile(model.__call__, **compile_config.to_dict())` (`get_compiled_call`; the prefill \
eager), the sampling (classifier-free guidance, top-k, `torch.multinomial`) eager around it. MusicGen's \
`generate` ignores `cache_implementation="static"` (it never calls `_prepare_cache_for_generation`), hence the cache \
passed in, with three shims on the instance for the call (transformers {transformers}): the cache is handed to \
`_sample`, not to `generate`, whose own `_prefill` before `_sample`'s would store the first frame twice; \
`decoder_input_ids` made contiguous in `prepare_inputs_for_generation`, as `GenerationMixin`'s own does (their \
stride changes each step: a recompile); positions without `MusicgenSinusoidalPositionalEmbedding`'s table-growth \
branch on the cache's length tensor (a graph break; its {table}-row table holds the steps). Its compile column: \
`torch._dynamo.reset()`, then the warm call ({torch_warm} frames, the timed calls' cache), i.e. tracing, compiling \
(inductor's on-disk cache may shorten repeats), CUDA graph recording and that generation, with the graphs it \
compiled (one: no graph break) and any compiled during the timed calls. On the tiny model its greedy tokens equal \
stock `generate`'s (tests/test_benchmarks.py)."""


def lm_step_bytes(size: str, dtype: str) -> int:
    """Bytes of the LM weights a decode step of `size` reads in `dtype` (`benchmarks.sampling.step_params`)."""
    return jnp.dtype(dtype).itemsize * step_params(lm_config_from_hf(hf_config(size).to_dict()))


def out_of_memory(error: Exception) -> bool:
    """Whether `error` is torch's or XLA's out-of-memory error."""
    text = str(error)
    return (
        isinstance(error, torch.cuda.OutOfMemoryError)
        or "RESOURCE_EXHAUSTED" in text
        or "out of memory" in text.lower()
    )


def warm_frames(frames: int) -> int:
    """The warm-up length: `WARMUP_FRAMES` (at most `frames`) in `frames`' compilation bucket, so that JAX's warm
    call runs the programs the timed calls run."""
    return max(min(WARMUP_FRAMES, frames), frame_bucket(frames) - FRAME_BUCKET + 1)


class Budget:
    """The matrix's time budget. Units of work of a kind ("size": a model size's build and compile phase;
    "config": a configuration's calls; "compiled": the compiled peer's calls in a configuration, its compile
    included, which alone can take longer than a configuration) come in order of growing cost (sizes ascend, and
    batches within a dtype), so the last one of a kind estimates the next: a unit, made of one or more kinds, runs
    while the time used plus the last one of each of its kinds stays within `seconds`; from the first unit that
    does not, every later unit is skipped."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.clock, self.start = seconds, clock, clock()
        self.last: dict[str, float] = {}
        self.stopped = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def need(self, *kinds: str) -> float:
        """The estimated seconds of a unit made of `kinds`: the last unit of each."""
        return sum(self.last.get(kind, 0.0) for kind in kinds)

    def allows(self, *kinds: str) -> bool:
        """Whether the next unit, made of `kinds`, runs."""
        self.stopped = self.stopped or self.elapsed() + self.need(*kinds) > self.seconds
        return not self.stopped

    def spent(self, kind: str, seconds: float) -> None:
        """Record the time a unit of `kind` took."""
        self.last[kind] = seconds


def build_size(size: str, batches: list[int], tokenizer, device: str) -> dict:
    """What a size's configurations share: transformers' model in float32 (`torch.manual_seed(0)`, on `device`)
    with its generator, a float32 host copy of its `CAST_PARTS` state (`torch_in_dtype` casts from it), the T5
    states of each batch's prompts (JAX's input) and the JAX LM parameters from the same state dict, on the host."""
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration._from_config(hf_config(size), attn_implementation=ATTENTION).eval()
    if model.decoder.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers' decoder runs {model.decoder.config._attn_implementation!r} attention")
    texts = {}
    with torch.inference_mode():
        for b in batches:
            inputs = tokenizer(prompt_batch(b), padding=True, return_tensors="pt").to(device)
            hidden = model.text_encoder(**inputs).last_hidden_state
            texts[b] = (
                jnp.asarray(hidden.float().cpu().numpy()),
                jnp.asarray(inputs["attention_mask"].cpu().numpy(), jnp.int32),
            )
    lm_config = lm_config_from_hf(model.config.to_dict())
    prefixes = tuple(f"{name}." for name in CAST_PARTS)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k.startswith(prefixes)}
    lm_state = {k: v.numpy() for k, v in state.items() if not k.startswith("text_encoder.")}
    return {
        "generator": TorchGenerator(model, tokenizer, device),
        "model": model,
        "state": state,
        "texts": texts,
        "lm_config": lm_config,
        "host_params": lm_params_from_hf_state_dict(lm_state, lm_config, f"random {size}"),
    }


def jax_params(built: dict, size: str, dtype: str):
    """The JAX LM parameters in `dtype` (`cast_params`) on JAX's device, checked to read `lm_step_bytes`."""
    params = cast_params(jax.device_put(built["host_params"]), dtype)
    if lm_weight_bytes(params, built["lm_config"]) != lm_step_bytes(size, dtype):
        raise RuntimeError(f"the {size} LM in {dtype} does not read {lm_step_bytes(size, dtype)} bytes per step")
    return params


def torch_in_dtype(built: dict, dtype: str) -> None:
    """transformers' `CAST_PARTS` in `dtype`, cast from the float32 host state (reloaded once they have been cast)."""
    model = built["model"]
    if model.decoder.dtype != torch.float32:
        for name in CAST_PARTS:
            getattr(model, name).to(torch.float32)
        model.load_state_dict(built["state"], strict=False)
    for name in CAST_PARTS:
        getattr(model, name).to(TORCH_DTYPES[dtype])


def compile_setup(cuda: bool) -> CompileConfig:
    """The compiled peer's `CompileConfig`: on CUDA mode "reduce-overhead" (inductor with CUDA graphs); on a CPU
    (the tests) inductor's default mode, or the eager backend where no C++ compiler is found, with transformers'
    flag to compile off the GPU (`_valid_auto_compile_criteria` otherwise compiles on accelerators only)."""
    if cuda:
        return CompileConfig(mode="reduce-overhead")
    config = CompileConfig(mode="default") if shutil.which("g++") else CompileConfig(backend="eager", mode=None)
    config._compile_all_devices = True
    return config


def describe(config: CompileConfig) -> str:
    """`config`'s arguments as the table's text shows them."""
    cpu = ", _compile_all_devices=True" if config._compile_all_devices else ""
    return f"backend={config.backend!r}, mode={config.mode!r}{cpu}"


def shims(model, cache: EncoderDecoderCache, config: CompileConfig) -> list[tuple[object, dict]]:
    """The compiled peer's instance attributes, (object, {name: value}), made once so that dynamo's guards see the
    same functions at every call: `generate` with `compile_config`; `_sample` given `cache`, reset (MusicGen's
    `generate` runs a `_prefill` of its own, unused, before `_sample` runs its prefill: given to `generate`, the
    cache would hold the first frame twice); `prepare_inputs_for_generation` with contiguous `decoder_input_ids`
    (sliced from the growing sequence, their stride changes each step: a recompile); positions without
    `MusicgenSinusoidalPositionalEmbedding.forward`'s table-growth branch on the cache's length tensor (a graph
    break)."""
    sample, prepare = model._sample, model.prepare_inputs_for_generation
    embedding = model.decoder.model.decoder.embed_positions

    def sample_with_cache(*args, **kwargs):
        cache.reset()
        return sample(*args, **{**kwargs, "cache": cache})

    @functools.wraps(prepare)  # `generate` checks its keyword arguments against this signature
    def prepare_contiguous(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        inputs["decoder_input_ids"] = inputs["decoder_input_ids"].contiguous()
        return inputs

    def positions(input_ids: torch.Tensor, cache_length=0) -> torch.Tensor:
        steps = torch.arange(input_ids.shape[-1], device=input_ids.device) + cache_length
        return embedding.weights.index_select(0, steps).detach()

    return [
        (
            model,
            {
                "generate": functools.partial(model.generate, compile_config=config),
                "_sample": sample_with_cache,
                "prepare_inputs_for_generation": prepare_contiguous,
            },
        ),
        (embedding, {"forward": positions}),
    ]


@contextlib.contextmanager
def installed(attributes: list[tuple[object, dict]]):
    """`attributes` ((object, {name: value}), `shims`) set on their objects for the block, then removed, so that
    the classes' own methods show again (the stock peer runs them)."""
    for obj, values in attributes:
        for name, value in values.items():
            setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, values in attributes:
            for name in values:
                delattr(obj, name)


class CompiledGenerator:
    """The compiled peer: transformers' `generate` through `generator` (the stock peer's `TorchGenerator`: the same
    tokenizing, seeding, call, and codec decode timed apart) with `config` and a static KV cache for `prompts` and
    up to `frames` frames, allocated once and reset per call (fixed shapes and addresses, as CUDA graphs need),
    `shims` installed while a call runs."""

    def __init__(self, generator: TorchGenerator, prompts: list[str], frames: int, config: CompileConfig):
        model = generator.model
        rows = model.decoder.model.decoder.embed_positions.weights.shape[0]
        steps = pattern.num_steps(frames, DELAYS) - 1  # the decoder's inputs: max_length - 1, as transformers sizes it
        if steps > rows:
            raise ValueError(f"{steps} steps do not fit the decoder's {rows} positions")
        text = generator.tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"].shape[1]
        decoder = model.decoder.config
        self.cache = EncoderDecoderCache(
            StaticCache(config=decoder, max_cache_len=steps), StaticCache(config=decoder, max_cache_len=text)
        )
        self.generator, self.attributes = generator, shims(model, self.cache, config)

    def installed(self) -> contextlib.AbstractContextManager:
        """The peer's shims on the model for the block (a direct `model.generate` call runs as the peer)."""
        return installed(self.attributes)

    def __call__(self, prompts: list[str], frames: int, seed: int = 0) -> dict:
        with self.installed():
            return self.generator(prompts, frames, seed=seed)


def audiocraft_status() -> str:
    """Why the audiocraft peer has no figures, in a few words: audiocraft is not installed, does not import, or
    (it imports) these random weights are not mapped into its `MusicGen` (its T5 conditioner loads a pretrained
    T5 by name from the hub, and its LM takes audiocraft's layout): not written."""
    try:
        importlib.import_module("audiocraft.models")
    except ModuleNotFoundError as e:
        return "not installed" if e.name == "audiocraft" else f"does not import (no {e.name})"
    except Exception as e:
        return f"does not import ({type(e).__name__})"
    return "not measured (weights not mapped)"


def compile_loops(built: dict, plan: list[tuple[str, int]], frames: int) -> dict:
    """The JAX decode loops of every (dtype, batch) of `plan`, compiled at once, one thread each (XLA compiles
    without the GIL; `generate_tokens` reuses the executables): per configuration {"compile": its wall seconds,
    "loop_bytes": its `memory_analysis` peak or None}, or `OOM`."""
    shapes = {
        dtype: jax.eval_shape(lambda p, dtype=dtype: cast_params(p, dtype), built["host_params"])
        for dtype in dict.fromkeys(d for d, _ in plan)
    }

    def one(dtype: str, batch: int):
        text, mask = built["texts"][batch]
        start = time.perf_counter()
        try:
            compiled = lower_generate(
                built["lm_config"], shapes[dtype], text, mask, row_keys(np.arange(batch)), frames, SAMPLING
            ).compile()
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"batch {batch} {dtype}: jax ran out of memory compiling: {str(e)[:200]}", flush=True)
            return OOM
        m = memory_analysis(compiled)
        return {"compile": time.perf_counter() - start, "loop_bytes": None if m is None else peak_bytes(m)}

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        futures = {config: pool.submit(one, *config) for config in plan}
        return {config: future.result() for config, future in futures.items()}


def failure(error: Exception) -> str:
    """A peer's failure as a table cell: the exception's type and the start of its first line."""
    line = (str(error).splitlines() or [""])[0].replace("|", "/")[:80]
    return f"failed: {type(error).__name__}: {line}"


def measure(
    built: dict,
    params,
    compiled,
    batch: int,
    frames: dict[str, int],
    runs: int,
    cuda: bool,
    peers: list[str],
    compile_config: CompileConfig,
) -> dict:
    """One configuration, its decode loop compiled (`compile_loops`): one warm call per side (JAX, then the
    `peers` of "generate" and "compiled"), then `runs` rounds of each side in that order, JAX over frames["jax"]
    frames and the peers over frames["torch"]. A side out of device memory is marked `OOM`, a compiled peer that
    fails `failure(...)`, and not called again. Returns each side's generation seconds and peak device bytes
    (timed calls), the JAX compile seconds and loop bytes, the compiled peer's warm call and compiled graphs, the
    configuration's seconds and the compiled peer's part of them."""
    start = time.perf_counter()
    texts = prompt_batch(batch)
    res: dict = {"compile": None, "loop_bytes": None, "jax": [], "peak": {}, "compiled_seconds": 0.0}
    if compiled == OOM:
        res["jax"] = OOM
    else:
        res.update(compiled)

    def jax_call(n: int, seed: int) -> float:
        (text, mask), keys = built["texts"][batch], row_keys(seed + np.arange(batch))
        t = time.perf_counter()
        jax.block_until_ready(generate_tokens(built["lm_config"], params, text, mask, keys, n, SAMPLING))
        return time.perf_counter() - t

    calls: dict[str, Callable[[int, int], float]] = {"jax": jax_call}
    if "generate" in peers:
        calls["generate"] = lambda n, seed: built["generator"](texts, n, seed=seed)["generate"]
    if "compiled" in peers:
        peer = CompiledGenerator(built["generator"], texts, frames["torch"], compile_config)
        calls["compiled"] = lambda n, seed: peer(texts, n, seed=seed)["generate"]
    res.update({side: [] for side in calls if side != "jax"})

    def attempt(side: str, n: int, seed: int, timed: bool) -> float | None:
        if isinstance(res[side], str):
            return None
        began, peak = time.perf_counter(), cuda and timed and side != "jax"
        if peak:
            torch.cuda.reset_peak_memory_stats()  # the peak of this peer's call
        try:
            seconds = calls[side](n, seed)
        except Exception as e:
            if out_of_memory(e):
                print(f"batch {batch}: {side} ran out of memory: {str(e)[:200]}", flush=True)
                res[side] = OOM
            elif side == "compiled":
                print(f"batch {batch}: the compiled peer failed: {e!r}", flush=True)
                res[side] = failure(e)
            else:
                raise
            seconds = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        if peak and seconds is not None:
            res["peak"][side] = max(res["peak"].get(side, 0), torch.cuda.max_memory_allocated())
        if side == "compiled":
            res["compiled_seconds"] += time.perf_counter() - began
        return seconds

    def graphs() -> int:
        return counters["stats"]["unique_graphs"]

    for side in calls:
        before = graphs()
        seconds = attempt(side, warm_frames(frames["jax" if side == "jax" else "torch"]), 0, timed=False)
        if side == "compiled" and seconds is not None:
            res["compiled_warm"] = (seconds, graphs() - before)
    before = graphs()
    for r in range(runs):
        for side in calls:
            seconds = attempt(side, frames["jax" if side == "jax" else "torch"], 1 + r, timed=True)
            if seconds is not None:
                res[side].append(seconds)
    if "compiled_warm" in res:
        res["compiled_warm"] += (graphs() - before,)
    if "compiled" in calls:
        del calls["compiled"], peer  # its cache, then its graphs and CUDA graph memory: the next compiles afresh
        torch._dynamo.reset()
        if cuda:
            torch.cuda.empty_cache()
    res["jax_peak"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    res["seconds"] = time.perf_counter() - start
    return res


def run_matrix(
    models: list[str],
    batches: list[int],
    dtypes: list[str],
    frames: int,
    torch_frames: int,
    runs: int,
    budget_seconds: float,
    on_row: Callable[[dict], None] | None = None,
    peers: tuple[str, ...] = PEERS,
    compiled_batches: tuple[int, ...] = (1,),
) -> dict:
    """Every (size, dtype, batch) in that order within `budget_seconds` from the start (`Budget`), JAX against
    `peers` (the compiled one at `compiled_batches` only); each size's models are freed before the next. After
    each row, measured or skipped, `on_row` gets a copy of the result so far (`report` calls it partial while rows
    are missing)."""
    budget = Budget(budget_seconds)
    cuda = torch.cuda.is_available()
    compile_config = compile_setup(cuda)
    device, threads = ("cuda" if cuda else "cpu"), usable_cores()
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 float32 matmuls, as XLA's default precision on the GPU
    else:
        torch.set_num_threads(threads)
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print("memory bandwidth ...", flush=True)
    bandwidth = memory_bandwidth(device=device, calls=10 if cuda else 1)
    with tempfile.TemporaryDirectory() as tmp:
        write_spiece(Path(tmp))
        tokenizer = HFT5Tokenizer.from_pretrained(tmp)
    jax_device = jax.devices()[0]
    res = {
        "cuda": cuda,
        "frames": {"jax": frames, "torch": torch_frames},
        "runs": runs,
        "budget": budget_seconds,
        "bandwidth": bandwidth,
        "threads": threads,
        "frame_rate": hf_config(models[0]).audio_encoder.frame_rate,
        "jax_device": f"{jax_device.platform} ({jax_device.device_kind})",
        "torch_device": (
            f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB"
            if cuda
            else "CPU"
        ),
        "package": package_state(),
        "total": len(models) * len(dtypes) * len(batches),
        "rows": [],
        "phases": {},
        "peers": list(peers),
        "compiled": {"batches": [b for b in batches if b in compiled_batches], "config": describe(compile_config)},
        "audiocraft": audiocraft_status() if "audiocraft" in peers else None,
        "positions": hf_config(models[0]).decoder.max_position_embeddings,
    }

    def add(row: dict) -> None:
        res["rows"].append(row)
        res.update(elapsed=budget.elapsed(), load=(load_before, load_average()))
        if on_row is not None:
            on_row({**res, "rows": list(res["rows"])})

    def unit_kinds(batch: int) -> tuple[str, ...]:
        """The kinds of budget unit a configuration at `batch` is made of."""
        return ("config", "compiled") if batch in res["compiled"]["batches"] and "compiled" in peers else ("config",)

    def skip(size: str, dtype: str, batch: int, kinds: tuple[str, ...]) -> None:
        need, left = budget.need(*kinds), budget.seconds - budget.elapsed()
        print(f"{size} batch {batch} {dtype}: {SKIPPED} (about {need:.0f} s needed, {left:.0f} s left)", flush=True)
        add({"size": size, "batch": batch, "dtype": dtype, "skipped": (need, left)})

    for size in models:
        plan = [(d, b) for d in dtypes for b in batches]
        if not budget.allows("size"):
            for d, b in plan:
                skip(size, d, b, ("size",))
            continue
        print(f"{size}: building on {device}, compiling {len(plan)} JAX decode loops at once ...", flush=True)
        start = time.perf_counter()
        built = build_size(size, batches, tokenizer, device)
        build = time.perf_counter() - start
        compiled = compile_loops(built, plan, frames)
        res["phases"][size] = (build, time.perf_counter() - start - build, len(plan))
        budget.spent("size", time.perf_counter() - start)
        for dtype in dtypes:
            params = jax_params(built, size, dtype)
            torch_in_dtype(built, dtype)
            for b in batches:
                kinds = unit_kinds(b)
                if not budget.allows(*kinds):
                    skip(size, dtype, b, kinds)
                    continue
                sides = [p for p in peers if p == "generate" or p in kinds]
                row = measure(built, params, compiled[dtype, b], b, res["frames"], runs, cuda, sides, compile_config)
                budget.spent("config", row["seconds"] - row["compiled_seconds"])
                if "compiled" in kinds:
                    budget.spent("compiled", row["compiled_seconds"])
                print(f"{size} batch {b} {dtype}: {row['seconds']:.0f} s", flush=True)
                add({"size": size, "batch": b, "dtype": dtype, **row})
            del params
        del built, compiled
        gc.collect()
        jax.clear_caches()
        if cuda:
            torch.cuda.empty_cache()
    res.update(elapsed=budget.elapsed(), load=(load_before, load_average()))
    return res


def row_cells(r: dict, res: dict) -> dict:
    """The cells of one configuration's row of `report`, by column title (`COLUMNS`, every peer's)."""
    cells = {
        "model": r["size"],
        "batch (rows with CFG)": f"{r['batch']} ({2 * r['batch']})",
        "dtype": r["dtype"],
        "bound steps/s": res["bandwidth"]["jax"] * 1e9 / lm_step_bytes(r["size"], r["dtype"]),
    }
    if "skipped" in r:
        need, left = r["skipped"]
        skipped = f"{SKIPPED} (about {need:.0f} s needed, {max(left, 0.0):.0f} s left)"
        return {**dict.fromkeys(COLUMNS, "-"), **cells, "JAX steps/s": skipped}
    frames = {side: res["frames"]["jax" if side == "jax" else "torch"] for side in ("jax", "generate", "compiled")}
    seconds = {side: r.get(side, NOT_RUN) for side in frames}
    seconds = {side: s if isinstance(s, str) else median_min(s)[0] for side, s in seconds.items()}
    rate = {side: s if isinstance(s, str) else (frames[side] + 3) / s for side, s in seconds.items()}
    rtf = {side: s if isinstance(s, str) else frames[side] / res["frame_rate"] / s for side, s in seconds.items()}

    def ratio(side: str):
        return rate["jax"] / rate[side] if not isinstance(rate["jax"], str) and not isinstance(rate[side], str) else "-"

    def peak(side: str):
        if rate[side] == NOT_RUN:
            return NOT_RUN
        return r["peak"][side] / GIB if side in r["peak"] else None

    jax_memory = tuple(None if b is None else b / GIB for b in (r["loop_bytes"], r["jax_peak"]))
    return {
        **cells,
        "JAX steps/s": rate["jax"],
        "transformers steps/s": rate["generate"],
        "ratio JAX/transformers": ratio("generate"),
        "compiled steps/s": rate["compiled"],
        "ratio JAX/compiled": ratio("compiled"),
        "audiocraft steps/s": res["audiocraft"] or "-",
        "JAX real-time factor": rtf["jax"],
        "transformers real-time factor": rtf["generate"],
        "JAX compile s": "-" if r["compile"] is None else r["compile"],
        "compiled compile + warm-up s": r.get("compiled_warm", rate["compiled"]),
        "JAX peak GiB (decode loop / process)": jax_memory,
        "transformers peak GiB": peak("generate"),
        "compiled peak GiB": peak("compiled"),
    }


def gib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def warm_cell(warm: tuple[float, int, int]) -> str:
    """The compiled peer's warm call: its seconds, the graphs it compiled and those compiled while timed."""
    seconds, graphs, timed = warm
    return f"{sig(seconds)} ({graphs} graph{'s' * (graphs != 1)}" + (f"; {timed} more while timed)" if timed else ")")


COLUMNS = {
    "model": "{}",
    "batch (rows with CFG)": "{}",
    "dtype": "{}",
    "JAX steps/s": sig,
    "transformers steps/s": sig,
    "ratio JAX/transformers": "**{:.2f}**",
    "compiled steps/s": sig,
    "ratio JAX/compiled": "**{:.2f}**",
    "audiocraft steps/s": "{}",
    "JAX real-time factor": sig,
    "transformers real-time factor": sig,
    "JAX compile s": sig,
    "compiled compile + warm-up s": warm_cell,
    "JAX peak GiB (decode loop / process)": lambda m: f"{gib(m[0])} / {gib(m[1])}",
    "transformers peak GiB": gib,
    "compiled peak GiB": gib,
    "bound steps/s": sig,
}
PEER_COLUMNS = {
    "generate": (
        "transformers steps/s",
        "ratio JAX/transformers",
        "transformers real-time factor",
        "transformers peak GiB",
    ),
    "compiled": ("compiled steps/s", "ratio JAX/compiled", "compiled compile + warm-up s", "compiled peak GiB"),
    "audiocraft": ("audiocraft steps/s",),
}


def columns(peers: list[str]) -> dict:
    """`COLUMNS` but those of the peers not in `peers`."""
    left_out = {title for peer, titles in PEER_COLUMNS.items() if peer not in peers for title in titles}
    return {title: spec for title, spec in COLUMNS.items() if title not in left_out}


def report(res: dict, command: str) -> str:
    """The table of `run_matrix` with its provenance, as a RESULTS.md section."""
    frames, bw, rows = res["frames"], res["bandwidth"], res["rows"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    skipped = sum("skipped" in r for r in rows)
    phases = ", ".join(f"{s} {b:.0f} + {c:.0f} s ({n} loops)" for s, (b, c, n) in res["phases"].items()) or "none"
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            f", sentencepiece {sentencepiece.__version__}",
            torch_mode="`torch.inference_mode()`",
        ),
        f"- Device: JAX {res['jax_device']}; torch {res['torch_device']}. musicgen_jax: {res['package']}.",
        "- Decoders: "
        + "; ".join("{} {} layers, width {}, {} heads, ffn {}".format(s, *SIZES[s]) for s in sizes)
        + f"; 4 codebooks x {CARD}; T5 encoder t5-base size and EnCodec 32 kHz real size (tiny: smaller).",
        NOTES.format(
            frames=frames["jax"],
            steps=frames["jax"] + 3,
            torch_frames=frames["torch"],
            torch_steps=frames["torch"] + 3,
            top_k=TOP_K,
            cfg=CFG,
            warm=warm_frames(frames["jax"]),
            torch_warm=warm_frames(frames["torch"]),
            runs=res["runs"],
        ),
        f"- Bound: {bw['jax']:.1f} GB/s read bandwidth (jitted `jnp.sum` over 1 GiB, median of {bw['runs']} timings "
        f"of {bw['calls']} call(s); `torch.sum`: {bw['torch']:.1f} GB/s) / the LM weight bytes a step reads in the "
        "dtype (not the KV cache) = the highest step rate a weight-streaming decoder reaches, at any batch.",
        f"- Time budget: {res['budget']:g} s (imports not counted), {res['elapsed']:.0f} s used, {skipped} of "
        f"{len(rows)} configurations skipped; model builds + compile phases: {phases}.",
    ]
    if "compiled" in res["peers"]:
        facts.insert(-2, compiled_notes(res))
    if "audiocraft" in res["peers"]:
        facts.insert(
            -2,
            f'- Peer "audiocraft" (`audiocraft.models.MusicGen.generate`): {res["audiocraft"]} here (`import '
            "audiocraft.models`). Measuring it needs audiocraft's `MusicGen` holding these random weights: its T5 "
            "conditioner loads a pretrained T5 by name from the hub, its LM takes audiocraft's layout; not written.",
        )
    if len(rows) < res["total"]:
        facts.append(f"- Partial: written after {len(rows)} of the {res['total']} configurations.")
    shown = columns(res["peers"])
    cells = [row_cells(r, res) for r in rows]
    return section(TITLE, command, facts, table(shown, [[c[title] for title in shown] for c in cells]))


def compiled_notes(res: dict) -> str:
    """The fact line that says what the compiled peer is."""
    return COMPILED_NOTES.format(
        batches=", ".join(map(str, res["compiled"]["batches"])) or "none",
        top_k=TOP_K,
        cfg=CFG,
        config=res["compiled"]["config"],
        torch_frames=res["frames"]["torch"],
        transformers=transformers.__version__,
        table=res["positions"],
        torch_warm=warm_frames(res["frames"]["torch"]),
    )


def comma_list(choices=None) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of names from `choices`, in order, or without `choices` of
    positive integers, sorted; no repeats."""

    def parse(text: str) -> list:
        items = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        if choices is None and all(t.isdigit() and int(t) > 0 for t in items):
            items = sorted(int(t) for t in items)
        elif choices is None or any(t not in choices for t in items):
            items = []
        if not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a comma-separated list of " + (", ".join(choices) if choices else "positive integers")
            )
        return items

    return parse


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sampling_gpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", type=comma_list(SIZES), default="small,medium,large", help=f"of {', '.join(SIZES)}")
    p.add_argument("--batches", type=comma_list(), default="1,8,64", help="comma-separated batch sizes")
    p.add_argument("--dtypes", type=comma_list(TORCH_DTYPES), default="bfloat16,float32", help="run in this order")
    p.add_argument("--frames", type=int, default=250, help="frames JAX generates (50 per second of audio)")
    p.add_argument("--torch-frames", type=int, default=None, help="frames transformers generates (default --frames)")
    p.add_argument("--runs", type=int, default=1, help="timed rounds per configuration and framework")
    p.add_argument("--budget-seconds", type=float, default=420.0, help="skip what would not finish within this")
    p.add_argument("--peers", type=comma_list(PEERS), default=",".join(PEERS), help=f"of {', '.join(PEERS)}")
    p.add_argument(
        "--compiled-batches",
        type=comma_list(),
        default="1",
        help="batch sizes the compiled peer runs at (its compile takes 30-90 s per shape on a GPU)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the table to this file, after every row")
    args = p.parse_args(argv)
    torch_frames = args.frames if args.torch_frames is None else min(args.torch_frames, args.frames)
    if args.runs < 1 or args.frames < 1 or torch_frames < 1 or args.budget_seconds <= 0:
        p.error("--runs, --frames and --torch-frames must be >= 1, --budget-seconds > 0")
    command = command_line("benchmarks.sampling_gpu", argv)

    def write(res: dict) -> None:
        if args.out is not None:
            with atomic_file(args.out) as tmp:
                tmp.write_text(report(res, command))

    res = run_matrix(
        args.models,
        args.batches,
        args.dtypes,
        args.frames,
        torch_frames,
        args.runs,
        args.budget_seconds,
        write,
        tuple(args.peers),
        tuple(args.compiled_batches),
    )
    write(res)
    print("\n" + report(res, command))
    if args.out is not None:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
