"""The training step on one GPU (issue 31), run by `benchmarks/gpu.sh`: musicgen_jax's train step of the musicgen
small and medium architectures (bfloat16 compute over float32 master weights, scanned layers, each remat policy) at
the largest batch of 30 s crops that fits, against transformers' training step (bfloat16 autocast, AdamW) on the same
random weights, batch and device: step time, tokens/s, peak memory and model FLOPs utilization (MFU). `tiny` is the
tests' model, for a CPU.

JAX keeps the device memory it has used, so the work runs in two phases. Phase 1, per model size: transformers' model
is built on the device (`torch.manual_seed(0)`), the largest JAX batch of each remat policy is found by compiling the
step from shapes only (`largest_batch`: XLA's memory analysis against JAX's memory limit, without autotuning, nothing
allocated), and transformers' step is timed at those batches; then its memory is given back. Phase 2, per size, the
last of `--models` first (the largest, the issue's target): the JAX steps are compiled at those batches and timed, from
the same weights. The table (rows in the order asked for) is rewritten after every row (`--out`), so a run stopped from
outside keeps what it measured; out of memory steps the batch down on either side.

Time budget (`--budget-seconds`, from the start, imports not counted; `sampling_gpu.Budget`): phase 1 prepares a size
while the time used plus the last size's preparation stays within half of it; phase 2 compiles a size's steps, and
times a row, while the time used plus the last of its kind stays within all of it (the sizes coming from the largest
down, the last one's time overestimates the next). What is skipped says so, PyTorch's measurements kept.

    python -m benchmarks.train_gpu --models small,medium --remat dots,full,none --frames 1500 \\
        --budget-seconds 150 --out out/gpu_train.md
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import torch
import transformers
from transformers import MusicgenForConditionalGeneration

from benchmarks.common import (
    GIB,
    command_line,
    load_average,
    machine_lines,
    median_min,
    memory_analysis,
    package_state,
    parser,
    peak_bytes,
    publish,
    section,
    sig,
    table,
    usable_cores,
    with_min,
)
from benchmarks.sampling import SIZES, hf_config
from benchmarks.sampling_gpu import ATTENTION, OOM, SKIPPED, Budget, comma_list, out_of_memory
from benchmarks.train import TorchTrainer, step_shapes
from musicgen_jax.config import LMConfig
from musicgen_jax.fileio import atomic_file
from musicgen_jax.lm.model import REMAT_POLICIES, stack_layers
from musicgen_jax.lm.weights import lm_config_from_hf, lm_params_from_hf_state_dict
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import OptimConfig, StepConfig, compile_step, global_batch, init_state, state_shapes

TITLE = "## Training on a GPU (musicgen small and medium architectures, random weights)"
FRAME_RATE = 50  # EnCodec 32 kHz frames per second
NO_DROPOUT = dict.fromkeys(("dropout", "attention_dropout", "activation_dropout"), 0.0)
SEARCH_OPTIONS = {"xla_gpu_autotune_level": 0}  # the batch search's compiles: memory only, no kernel timing
MARGIN = 0.9  # of JAX's memory limit the step may use: room for fragmentation and the autotuned kernels' workspaces
PREPARE_SHARE = 0.5  # of the budget phase 1 may use
CHECKPOINTED = ("full",)  # remat policies whose PyTorch peer recomputes every decoder layer (gradient checkpointing)


# --- what is counted -----------------------------------------------------------------------------------


def matmul_params(lm: LMConfig) -> tuple[int, int]:
    """(P_audio, P_text) of a text-conditioned LM: the weights of its matrix products applied at every audio
    position (per layer self-attention q / k / v / out, cross-attention q / out, fc1, fc2; the codebook heads) and at
    every text position (per layer cross-attention k / v; the text projection). Embedding lookups, norms and biases
    make no matrix product."""
    d, layers = lm.dim, lm.num_layers
    audio = layers * (6 * d * d + 2 * d * lm.ffn_dim) + lm.num_codebooks * lm.card * d
    return audio, layers * 2 * d * d + lm.text_dim * d


def step_flops(lm: LMConfig, batch: int, frames: int, text: int) -> dict[str, float]:
    """Model FLOPs of one train step on `batch` crops of `frames` frames (S = frames + max delay positions) with
    `text` text positions: a multiply-add is 2 FLOPs, the backward pass twice the forward (so 3x the forward in all),
    rematerialized recomputation not counted. {"dense": 6 B (S P_audio + text P_text) (`matmul_params`),
    "attention": 6 L B S^2 D (causal self-attention: QK^T and AV, 2 S^2 D each, half of them under the mask)
    + 12 L B S text D (cross-attention), "total": their sum}."""
    audio, text_params = matmul_params(lm)
    s, d, layers = frames + max(lm.delays), lm.dim, lm.num_layers
    dense = 6 * batch * (s * audio + text * text_params)
    attention = 6 * layers * batch * s * s * d + 12 * layers * batch * s * text * d
    return {"dense": float(dense), "attention": float(attention), "total": float(dense + attention)}


def largest_batch(peaks: Callable[[list[int]], list[float]], limit: float, cap: int) -> tuple[int, dict[int, float]]:
    """The largest batch in 1..`cap` whose peak memory is within `limit` (0: not even 1), for a peak that does not
    shrink as the batch grows, and every peak measured. `peaks(batches)` measures a round of batches at once (the
    caller compiles them in parallel): 1 and `cap`; then, rounds taking turns, the batch a straight line through the
    bracket's ends predicts, or the bracket's middle, each with the batch after it. An affine peak takes two rounds."""
    seen: dict[int, float] = {}

    def measure(batches: list[int]) -> None:
        new = sorted({b for b in batches if b not in seen})
        seen.update(zip(new, peaks(new)))

    measure([1, cap])
    if seen[1] > limit:
        return 0, seen
    if seen[cap] <= limit:
        return cap, seen
    lo, hi, interpolate = 1, cap, True  # lo fits, hi does not
    while hi - lo > 1:
        if interpolate and math.isfinite(seen[hi]):
            guess = lo + int((limit - seen[lo]) * (hi - lo) / (seen[hi] - seen[lo]))
        else:
            guess = (lo + hi) // 2
        guess = min(max(guess, lo + 1), hi - 1)
        measure([guess, guess + 1] if guess + 1 < hi else [guess])
        for b in (guess, guess + 1):
            if lo < b < hi:
                lo, hi = (b, hi) if seen[b] <= limit else (lo, b)
        interpolate = not interpolate
    return lo, seen


# --- the two steps -------------------------------------------------------------------------------------


def step_config(lm: LMConfig, remat: str) -> StepConfig:
    """The JAX step timed: bfloat16 compute over float32 master weights, scanned layers, `remat`; the recipe's AdamW,
    clipping and EMA; precomputed text states (T5 outside the step, as in PyTorch's); no guidance dropout (PyTorch's
    step has none; it changes no work)."""
    return StepConfig(lm, None, OptimConfig(), cfg_dropout=0.0, scan_layers=True, remat=remat, compute_dtype="bfloat16")


def synthetic_batch(lm: LMConfig, batch: int, frames: int, text: int) -> dict[str, np.ndarray]:
    """Both sides' batch: random codes [B, K, frames] (mask [B, K, frames] all true), random text states
    [B, text, text_dim] float32 with their mask [B, text] all ones; the same arrays for a batch size."""
    rng = np.random.default_rng(batch)
    return {
        "codes": rng.integers(0, lm.card, (batch, lm.num_codebooks, frames)).astype(np.int32),
        "mask": np.ones((batch, lm.num_codebooks, frames), bool),
        "text_embeddings": rng.standard_normal((batch, text, lm.text_dim), dtype=np.float32),
        "text_mask": np.ones((batch, text), np.int32),
    }


def compile_at(config: StepConfig, mesh, batch: int, frames: int, text: int, options: dict | None = None):
    """The JAX step compiled from shapes (`train.step_shapes`) for `batch` crops, with XLA `options`."""
    return compile_step(config, mesh).lower(*step_shapes(config, mesh, batch, frames, text), {}).compile(options)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call of `fn` (which waits for its result)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def release(model=None) -> None:
    """Give back what a failed or finished PyTorch step held: `model`'s gradients, then torch's cached memory."""
    if model is not None:
        model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_torch(size: str, device: str) -> tuple[MusicgenForConditionalGeneration, LMConfig, dict]:
    """transformers' model of `size` on `device` (`torch.manual_seed(0)`, dropout 0, sdpa attention), its LM config
    and a float32 host copy of its LM state (decoder and text projection: the JAX parameters' source)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration._from_config(
            hf_config(size, **NO_DROPOUT), attn_implementation=ATTENTION
        )
    lm_state = {
        k: v.detach().to("cpu", copy=True).numpy()
        for k, v in model.state_dict().items()
        if k.startswith(("decoder.", "enc_to_dec_proj."))
    }
    return model, lm_config_from_hf(model.config.to_dict()), lm_state


def torch_steps(model, lm: LMConfig, batch: int, frames: int, text: int, steps: int, checkpointing: bool) -> dict:
    """transformers' step (`train.TorchTrainer`: bfloat16 autocast, clipping, AdamW, fused on CUDA) at `batch`, with
    gradient checkpointing of every decoder layer or none: one warm step, then `steps` timed ones. Returns
    {"first", "times", "peak": bytes allocated at most over them (None on a CPU)}."""
    cuda = torch.cuda.is_available()
    with warnings.catch_warnings():  # transformers 5 renames it activation checkpointing; both names work
        warnings.simplefilter("ignore", FutureWarning)
        if checkpointing:
            model.decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.decoder.gradient_checkpointing_disable()
    arrays = synthetic_batch(lm, batch, frames, text)
    device = "cuda" if cuda else "cpu"
    trainer = TorchTrainer(model, arrays, lm.delays, lm.card, device, torch.bfloat16, fused=True if cuda else None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = timed(trainer.step)
    times = [timed(trainer.step) for _ in range(steps)]
    return {"first": first, "times": times, "peak": torch.cuda.max_memory_allocated() if cuda else None}


def torch_fitting(model, lm: LMConfig, batch: int, frames: int, text: int, steps: int, checkpointing: bool) -> dict:
    """`torch_steps` at `batch`, halved while out of memory: {"batch" (0: none fit), "oom": the batches that did
    not fit, "checkpointing", and `torch_steps`' fields}."""
    oom: list[int] = []
    while batch:
        try:
            res = torch_steps(model, lm, batch, frames, text, steps, checkpointing)
            release(model)
            return {"batch": batch, "oom": oom, "checkpointing": checkpointing, **res}
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"PyTorch batch {batch}: out of memory: {str(e)[:200]}", flush=True)
        oom.append(batch)
        release(model)
        batch //= 2
    return {"batch": 0, "oom": oom, "checkpointing": checkpointing}


def jax_steps(compiled, state, data, steps: int) -> tuple[Any, dict]:
    """One warm step, then `steps` timed ones, of the compiled JAX step; each waits for its loss, as a training loop
    that logs it. Returns the state after them and {"first", "times"}."""

    def step() -> None:
        nonlocal state
        state, metrics = compiled(state, data, {})
        float(metrics["loss"])

    first = timed(step)
    times = [timed(step) for _ in range(steps)]
    return state, {"first": first, "times": times}


# --- phase 1: transformers and the batch search; phase 2: JAX ------------------------------------------


def search_batches(lm: LMConfig, remats: list[str], frames: int, text: int, cap: int, limit: float | None) -> dict:
    """Per remat policy {"batch", "peaks": {batch: bytes}, "seconds"}: `largest_batch` of `cap` and `limit` bytes,
    from steps compiled from shapes without autotuning (all policies' searches at once, each round's compiles in
    parallel); without a limit (a CPU), `cap`, nothing compiled."""
    if limit is None:
        return {remat: {"batch": cap, "peaks": {}, "seconds": 0.0} for remat in remats}
    mesh = make_mesh(devices=jax.devices()[:1])

    def probe(config: StepConfig, batch: int) -> float:
        try:
            return float(peak_bytes(memory_analysis(compile_at(config, mesh, batch, frames, text, SEARCH_OPTIONS))))
        except Exception as e:
            if not out_of_memory(e):
                raise
            return math.inf

    with ThreadPoolExecutor(2 * len(remats)) as compiles, ThreadPoolExecutor(len(remats)) as searches:

        def search(remat: str) -> dict:
            start, config = time.perf_counter(), step_config(lm, remat)
            batch, peaks = largest_batch(lambda bs: list(compiles.map(lambda b: probe(config, b), bs)), limit, cap)
            return {"batch": batch, "peaks": peaks, "seconds": time.perf_counter() - start}

        futures = {remat: searches.submit(search, remat) for remat in remats}
        return {remat: future.result() for remat, future in futures.items()}


def prepare(size: str, remats: list[str], frames: int, text: int, steps: int, cap: int, limit: float | None) -> dict:
    """Phase 1 of a model size: transformers' model, the JAX batches (`search_batches`), transformers' steps at
    them (`torch_fitting`, once per batch and checkpointing), its memory given back. Returns {"lm", "lm_state",
    "search", "torch": per remat policy (None: no batch), "seconds": (build, search, PyTorch)}."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model, lm, lm_state = build_torch(size, device)
    built = time.perf_counter()
    print(f"{size}: searching the largest JAX batch of {', '.join(remats)} ...", flush=True)
    search = search_batches(lm, remats, frames, text, cap, limit)
    searched = time.perf_counter()
    measured: dict[tuple[int, bool], dict] = {}
    for remat in remats:
        batch, checkpointing = search[remat]["batch"], remat in CHECKPOINTED
        if batch and (batch, checkpointing) not in measured:
            print(f"{size}: PyTorch at batch {batch}{', checkpointed' if checkpointing else ''} ...", flush=True)
            measured[batch, checkpointing] = torch_fitting(model, lm, batch, frames, text, steps, checkpointing)
    del model
    release()
    torch_rows = {remat: measured.get((search[remat]["batch"], remat in CHECKPOINTED)) for remat in remats}
    seconds = (built - start, searched - built, time.perf_counter() - searched)
    return {"lm": lm, "lm_state": lm_state, "search": search, "torch": torch_rows, "seconds": seconds}


def jax_fitting(config: StepConfig, mesh, compiled, new_state, state, batch: int, frames: int, text: int, steps: int):
    """The JAX step (`compiled`, or compiled here) timed at `batch` (`jax_steps`), halved while out of memory (then
    recompiled, and the state made anew with `new_state()` if the failed call had taken it). Returns the state and
    {"batch" (0: none fit), "oom", "first", "times", "step_bytes", "process_peak"}."""
    oom: list[int] = []
    while batch:
        try:
            compiled = compiled or compile_at(config, mesh, batch, frames, text)
            data = global_batch(synthetic_batch(config.lm, batch, frames, text), mesh)
            state, res = jax_steps(compiled, state, data, steps)
            stats = jax.devices()[0].memory_stats() or {}
            return state, {
                "batch": batch,
                "oom": oom,
                **res,
                "step_bytes": peak_bytes(memory_analysis(compiled)),
                "process_peak": stats.get("peak_bytes_in_use"),
            }
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"JAX batch {batch}: out of memory: {str(e)[:200]}", flush=True)
        oom.append(batch)
        batch, compiled = batch // 2, None
        if any(x.is_deleted() for x in jax.tree.leaves(state)):
            state = new_state()
    return state, {"batch": 0, "oom": oom}


def compile_steps(configs: dict[str, StepConfig], mesh, batches: dict[str, int], frames: int, text: int) -> dict:
    """The JAX steps of `configs` compiled (with autotuning) at their batches, all at once, one thread each
    (XLA compiles without the GIL): {remat: (compiled or `OOM`, seconds)}."""

    def one(remat: str):
        start = time.perf_counter()
        try:
            compiled = compile_at(configs[remat], mesh, batches[remat], frames, text)
        except Exception as e:
            if not out_of_memory(e):
                raise
            compiled = OOM
        return compiled, time.perf_counter() - start

    with ThreadPoolExecutor(max(len(configs), 1)) as pool:
        futures = {remat: pool.submit(one, remat) for remat in configs}
        return {remat: future.result() for remat, future in futures.items()}


def jax_rows(size: str, p: dict, remats: list[str], mesh, frames: int, text: int, steps: int, budget: Budget):
    """Phase 2 of a prepared size (`prepare`'s `p`): a row per remat policy. First (a budget unit "compile") its steps
    compiled at once (`compile_steps`) and the state made from transformers' weights; then per policy with a batch
    (a unit "row") `jax_fitting`; what the budget does not allow is marked skipped, PyTorch's measurement kept."""
    rows = {
        remat: {"size": size, "remat": remat, "search": p["search"][remat], "torch": p["torch"][remat]}
        for remat in remats
    }
    configs = {remat: step_config(p["lm"], remat) for remat in remats if p["search"][remat]["batch"]}
    kind = "compile"
    if configs and budget.allows(kind):
        start = time.perf_counter()
        print(f"{size}: compiling the JAX steps ...", flush=True)
        compiled = compile_steps(configs, mesh, {r: p["search"][r]["batch"] for r in configs}, frames, text)
        params = jax.device_get(stack_layers(lm_params_from_hf_state_dict(p["lm_state"], p["lm"], f"random {size}")))

        def new_state():  # from the host parameters; the state does not depend on the remat policy
            return init_state(next(iter(configs.values())), 0, mesh, params=params)

        state, kind = new_state(), "row"
        budget.spent("compile", time.perf_counter() - start)
    for remat, row in rows.items():
        if remat not in configs:
            yield row
        elif not budget.allows(kind):
            yield {**row, "jax_skipped": (budget.last.get(kind, 0.0), budget.seconds - budget.elapsed())}
        else:
            start = time.perf_counter()
            executable, seconds = compiled.pop(remat)
            executable = None if executable == OOM else executable
            batch = row["search"]["batch"]
            state, row["jax"] = jax_fitting(
                configs[remat], mesh, executable, new_state, state, batch, frames, text, steps
            )
            row["jax"]["compile"] = seconds
            budget.spent("row", time.perf_counter() - start)
            print(f"{size} {remat}: {time.perf_counter() - start:.0f} s", flush=True)
            yield row


def run_matrix(
    models: list[str],
    remats: list[str],
    frames: int,
    text: int,
    steps: int,
    cap: int,
    memory_gib: float | None,
    budget_seconds: float,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Phase 1 for every size, then phase 2, within `budget_seconds` (the module docstring); after each row,
    measured or skipped, `on_row` gets a copy of the result so far (`report` calls it partial while rows are
    missing)."""
    prepare_budget, budget = Budget(budget_seconds * PREPARE_SHARE), Budget(budget_seconds)
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(usable_cores())
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    device = jax.devices()[0]
    device_limit = memory_gib * GIB if memory_gib else (device.memory_stats() or {}).get("bytes_limit")
    res = {
        "frames": frames,
        "text": text,
        "steps": steps,
        "cap": cap,
        "budget": budget_seconds,
        "limit": None if device_limit is None else MARGIN * device_limit,
        "device_limit": device_limit,
        "limit_source": "`--memory-gib`" if memory_gib else "JAX's `bytes_limit`",
        "fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "unset: 0.75"),
        "threads": usable_cores(),
        "jax_device": f"{device.platform} ({device.device_kind})",
        "torch_device": (
            f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB"
            if cuda
            else "CPU"
        ),
        "package": package_state(),
        "total": len(models) * len(remats),
        "order": (models, remats),
        "models": {},
        "rows": [],
    }

    def add(row: dict) -> None:
        res["rows"].append(row)
        res.update(elapsed=budget.elapsed(), load=(load_before, load_average()))
        if on_row is not None:
            on_row({**res, "rows": list(res["rows"])})

    prepared, skipped = {}, {}
    for size in models:
        if not prepare_budget.allows("size"):
            skipped[size] = (prepare_budget.last.get("size", 0.0), prepare_budget.seconds - prepare_budget.elapsed())
            continue
        start = time.perf_counter()
        prepared[size] = prepare(size, remats, frames, text, steps, cap, res["limit"])
        prepare_budget.spent("size", time.perf_counter() - start)
        lm = prepared[size]["lm"]
        shapes = state_shapes(step_config(lm, remats[0])).params
        res["models"][size] = {
            "lm": lm,
            "params": sum(x.size for x in jax.tree.leaves(shapes)),
            "phases": prepared[size]["seconds"],
        }
    mesh = make_mesh(devices=jax.devices()[:1])
    for size in reversed(models):
        rows = (
            ({"size": size, "remat": remat, "skipped": skipped[size]} for remat in remats)
            if size in skipped
            else jax_rows(size, prepared.pop(size), remats, mesh, frames, text, steps, budget)
        )
        for row in rows:
            add(row)
        gc.collect()
        jax.clear_caches()
    res.update(elapsed=budget.elapsed(), load=(load_before, load_average()))
    return res


# --- the report ----------------------------------------------------------------------------------------


def gib(x: float | None) -> str:
    """Bytes as a GiB cell; n/a where a device gives no statistics."""
    return "n/a" if x is None else f"{x / GIB:.3g}"


def batch_cell(m: dict) -> str:
    """The batch one side ran, after the batches that ran out of memory, if any."""
    oom = ", ".join(map(str, m["oom"]))
    if not m["batch"]:
        return f"{OOM} at {oom}"
    return f"{m['batch']} ({oom}: {OOM})" if oom else str(m["batch"])


def skipped_cell(need_left: tuple[float, float]) -> str:
    """What the budget left out, with the seconds it would have needed and those that were left."""
    need, left = need_left
    return f"{SKIPPED} (about {need:.0f} s needed, {max(left, 0.0):.0f} s left)"


def side_cells(m: dict | None, lm: LMConfig, frames: int, text: int, peak_flops: float) -> tuple[tuple, float | None]:
    """((step s, tokens/s, MFU %), tokens/s) of one side's measurement; "-" cells and None without one."""
    if not m or not m["batch"]:
        return ("-", "-", "-"), None
    step = median_min(m["times"])
    rate = m["batch"] * lm.num_codebooks * frames / step[0]
    return (step, rate, 100 * step_flops(lm, m["batch"], frames, text)["total"] / step[0] / peak_flops), rate


def row_cells(r: dict, res: dict, peak_flops: float) -> tuple:
    """The cells of one row of `report` (`columns`)."""
    lead, frames, text = (r["size"], r["remat"]), res["frames"], res["text"]
    if "skipped" in r:
        return (*lead, skipped_cell(r["skipped"]), *["-"] * 11)
    search = r["search"]
    if not search["batch"]:
        return (*lead, f"none fits: batch 1 needs {gib(search['peaks'][1])} GiB", *["-"] * 11)
    lm, t, j = res["models"][r["size"]]["lm"], r["torch"], r.get("jax")
    torch_cells, torch_rate = side_cells(t, lm, frames, text, peak_flops)
    jax_cells, jax_rate = side_cells(j, lm, frames, text, peak_flops)
    if "jax_skipped" in r:
        jax_cells = (skipped_cell(r["jax_skipped"]), "-", "-")
    measured = j is not None and j["batch"] > 0
    return (
        *lead,
        batch_cell(j) if j else str(search["batch"]),
        jax_cells[0],
        jax_cells[1],
        (j["step_bytes"], j["process_peak"]) if measured else "-",
        jax_cells[2],
        batch_cell(t) + (", checkpointed" if t["checkpointing"] else ""),
        *torch_cells[:2],
        gib(t["peak"]) if t["batch"] else "-",
        torch_cells[2],
        jax_rate / torch_rate if jax_rate and torch_rate else "-",
        f"{search['seconds']:.0f} / {j['compile']:.0f}" if j else f"{search['seconds']:.0f} / -",
    )


def columns(frames: int) -> dict:
    """The table's columns and their cells' formats (`common.table`)."""
    return {
        "model": "{}",
        "remat": "{}",
        f"JAX batch ({frames / FRAME_RATE:g} s crops)": "{}",
        "JAX step s": with_min(3),
        "JAX tokens/s": "{:,.0f}",
        "JAX peak GiB (step / process)": lambda m: f"{gib(m[0])} / {gib(m[1])}",
        "JAX MFU %": lambda x: f"**{sig(x)}**",
        "PyTorch batch": "{}",
        "PyTorch step s": with_min(3),
        "PyTorch tokens/s": "{:,.0f}",
        "PyTorch peak GiB": "{}",
        "PyTorch MFU %": sig,
        "ratio JAX/PyTorch tokens/s": "**{:.2f}**",
        "JAX compile s (search / step)": "{}",
    }


NOTES = """\
- Model FLOPs per step, the MFU's numerator (PaLM's and MaxText's convention, here exactly): B crops of F frames, \
S = F + 3 positions (the delay pattern), T = {text} text positions of width E (768), L layers of width D and \
feed-forward width H, K = 4 codebooks of 2048: **6 B (S P_audio + T P_text) + 6 L B S^2 D + 12 L B S T D**, where \
P_audio = L (6 D^2 + 2 D H) + 2048 K D are the weights of the products at every audio position (self-attention \
q / k / v / out, cross-attention q / out, fc1, fc2, the heads), P_text = 2 L D^2 + E D those at every text position \
(cross-attention k / v, the text projection), 6 L B S^2 D the causal self-attention (QK^T and AV, half of their \
S x S products under the mask) and 12 L B S T D the cross-attention; forward + backward = 3 x forward, a multiply-add \
2 FLOPs; embedding lookups, norms, the loss, the optimizer and rematerialized recomputation not counted. MFU = model \
FLOPs / step time / {peak:g} TFLOP/s (`--peak-tflops`; dense bfloat16 of an H100 / H200: 989). (XLA's cost \
analysis is no cross-check here: it counts the scanned layers' loop body once.)
- JAX step: `compile_step(StepConfig(lm, t5=None, scan_layers=True, remat=R, compute_dtype="bfloat16", \
cfg_dropout=0))` on a 1-device mesh: bfloat16 compute over float32 master weights, loss, gradients, \
`clip_by_global_norm(1.0)`, AdamW (the recipe's), EMA every 10 steps, state donated. Its parameters: the LM of \
transformers' model (`lm_params_from_hf_state_dict`, layers stacked).
- PyTorch step (`benchmarks.train.TorchTrainer`): transformers `MusicgenForConditionalGeneration` built from its \
config with `torch.manual_seed(0)` on the device (dropout 0; sdpa attention), forward with labels under \
`torch.autocast(dtype=torch.bfloat16)` over float32 weights, `loss.backward()`, `clip_grad_norm_(trainable, 1.0)`, \
`torch.optim.AdamW(fused=True)` (on CUDA); transformers' gradient checkpointing of every decoder layer on the \
{checkpointed} rows (the like of remat `full`), none on the others. T5 frozen and outside both steps: both take the \
same random text states [B, T, E] (all T positions real) and random codes [B, 4, F].
- Batch: the largest JAX batch up to {cap} whose step fits: `compiled.memory_analysis()` peak (arguments + \
temporaries + unaliased outputs) <= {margin:g} x {limit_source} ({limit}; `XLA_PYTHON_CLIENT_MEM_FRACTION` \
{fraction}), from steps compiled from shapes without autotuning (`largest_batch`: batch 1 and {cap}, then a straight \
line through the bracket or its middle). PyTorch runs the same batch; either side halves its batch while out of \
memory (the batches that did not fit follow it).
- Timing: one warm step, then the median (min) of {steps} timed steps, each waiting for its loss (a loop that logs \
it); tokens/s = batch x 4 codebooks x F / step s (audio frames/s: a quarter of it; seconds of audio per second: \
tokens/s / 200). Ratio = JAX tokens/s / PyTorch tokens/s.
- Memory: JAX step = the compiled step's `memory_analysis()` peak; JAX process = \
`memory_stats()['peak_bytes_in_use']` since the start (n/a on the CPU); PyTorch = `torch.cuda.max_memory_allocated()` \
over its steps (n/a on the CPU). PyTorch runs first and gives its memory back (JAX keeps what it has used)."""


def report(res: dict, command: str, peak_tflops: float) -> str:
    """The table of `run_matrix` with its provenance, as a RESULTS.md section: rows in the order asked for."""
    models, remats = res["order"]
    rows = sorted(res["rows"], key=lambda r: (models.index(r["size"]), remats.index(r["remat"])))
    frames = res["frames"]
    skipped = sum("skipped" in r or "jax_skipped" in r for r in rows)
    sizes = ", ".join(
        f"{size} ({'{} layers, width {}, {} heads, ffn {}'.format(*SIZES[size])}: {m['params']:,} trainable LM "
        f"parameters; {step_flops(m['lm'], 1, frames, res['text'])['total'] / 1e12:.3g} TFLOP per crop; phase 1: "
        f"{m['phases'][0]:.0f} s building, {m['phases'][1]:.0f} s batch search, {m['phases'][2]:.0f} s PyTorch)"
        for size, m in res["models"].items()
    )
    limit = "no limit: the cap" if res["limit"] is None else f"{res['device_limit'] / GIB:.1f} GiB"
    facts = [
        *machine_lines(res["threads"], res["load"], f", flax {flax.__version__}", torch_mode="autograd, training"),
        f"- Device: JAX {res['jax_device']}; torch {res['torch_device']}. musicgen_jax: {res['package']}.",
        f"- Models (random weights): {sizes or 'none measured'}.",
        NOTES.format(
            text=res["text"],
            peak=peak_tflops,
            checkpointed=", ".join(f"`{c}`" for c in CHECKPOINTED),
            cap=res["cap"],
            margin=MARGIN,
            limit_source=res["limit_source"],
            limit=limit,
            steps=res["steps"],
            fraction=res["fraction"],
        ),
        f"- Time budget: {res['budget']:g} s (imports not counted), {res['elapsed']:.0f} s used, {skipped} of "
        f"{len(rows)} rows skipped in part or whole.",
        "- Target (issue 31): medium at least 40% MFU and 1.5x PyTorch's tokens/s.",
    ]
    if len(rows) < res["total"]:
        facts.append(f"- Partial: written after {len(rows)} of the {res['total']} rows.")
    cells = [row_cells(r, res, peak_tflops * 1e12) for r in rows]
    return section(TITLE, command, facts, table(columns(frames), cells))


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.train_gpu", __doc__)
    p.add_argument("--models", type=comma_list(SIZES), default="small,medium", help=f"of {', '.join(SIZES)}")
    p.add_argument(
        "--remat", type=comma_list(REMAT_POLICIES), default="dots,full,none", help=f"of {', '.join(REMAT_POLICIES)}"
    )
    p.add_argument("--frames", type=int, default=1500, help="frames per crop (50 per second)")
    p.add_argument("--text-tokens", type=int, default=128, help="text positions per crop (the recipe pads to 128)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per framework and row, after a warm one")
    p.add_argument("--max-batch", type=int, default=64, help="the batch search's cap")
    p.add_argument(
        "--memory-gib",
        type=float,
        default=None,
        help="the memory the batch search fits the JAX step in (default: JAX's limit; none on a CPU: the cap)",
    )
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the MFU's peak: dense bfloat16 of an H100")
    p.add_argument("--budget-seconds", type=float, default=150.0, help="skip what would not finish within this")
    p.add_argument("--out", type=Path, default=None, help="write the table to this file, after every row")
    args = p.parse_args(argv)
    if min(args.frames, args.text_tokens, args.steps, args.max_batch) < 1 or args.budget_seconds <= 0:
        p.error("--frames, --text-tokens, --steps and --max-batch must be >= 1, --budget-seconds > 0")
    if args.peak_tflops <= 0 or (args.memory_gib is not None and args.memory_gib <= 0):
        p.error("--peak-tflops and --memory-gib must be > 0")
    command = command_line("benchmarks.train_gpu", argv)

    def write(res: dict) -> None:
        if args.out is not None:
            with atomic_file(args.out) as tmp:
                tmp.write_text(report(res, command, args.peak_tflops))

    res = run_matrix(
        args.models,
        args.remat,
        args.frames,
        args.text_tokens,
        args.steps,
        args.max_batch,
        args.memory_gib,
        args.budget_seconds,
        write,
    )
    write(res)
    publish(report(res, command, args.peak_tflops), args.write)
    if args.out is not None:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    # before JAX starts its GPU client (at its first use, in `run_matrix`): PyTorch measures first and gives its memory
    # back, so JAX must not take the device's memory at start, and may then use most of it (the user's settings win)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    main()
