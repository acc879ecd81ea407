"""The GPU sampling matrix, run by `benchmarks/gpu.sh`: musicgen_jax's `generate_tokens` against transformers'
`generate` (sdpa attention) on the same random weights, one row per model size (small, medium, large; tiny for
the tests on a CPU), dtype and batch: steps/s, real-time factor, JAX compile time, peak device memory and the
weight-streaming bound.

Per size both models are built once, the JAX decode loops of all its configurations compiled at once (one thread
each), then per dtype and batch one warm call and `--runs` timed calls per framework. To stay within
`--budget-seconds`, work runs in order of increasing cost and a unit (a size's build and compile phase, a
configuration) runs only while the time used plus that of the last unit of its kind fits; the rest are skipped
and the table says so. The table is rewritten after every row (`--out`), so a run stopped from outside keeps
what it measured; out of device memory is reported on its side.

    python -m benchmarks.sampling_gpu --models small,medium,large --dtypes bfloat16,float32 \\
        --batches 1,8,64 --frames 250 --torch-frames 64 --budget-seconds 420 --out out/gpu_sampling.md
"""

from __future__ import annotations

import argparse
import gc
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
from transformers import MusicgenForConditionalGeneration
from transformers import T5Tokenizer as HFT5Tokenizer

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
from musicgen_jax.lm.model import cast_params
from musicgen_jax.lm.weights import lm_config_from_hf, lm_params_from_hf_state_dict
from musicgen_jax.sampling import FRAME_BUCKET, frame_bucket, generate_tokens, lower_generate, row_keys

TITLE = "## Sampling on a GPU (MusicGen small, medium and large architectures, random weights)"
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SKIPPED, OOM = "skipped: time budget", "out of memory"
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
- Timing: per configuration one warm call per framework ({warm} / {torch_warm} frames), then {runs} timed round(s) \
of JAX then transformers (median); the compile column is each decode loop's wall time, compiled beside the others \
of its size. Generation seconds: JAX `generate_tokens`; transformers `generate` minus its codec decode, its T5 \
encoding included. Steps/s = (frames + 3) / generation seconds; ratio = JAX steps/s / transformers steps/s.
- Memory: JAX decode loop = the compiled loop's `memory_analysis()` (weights, KV cache, state); JAX process = \
`memory_stats()['peak_bytes_in_use']` since start (n/a on the CPU); transformers = `torch.cuda.max_memory_allocated()` \
over the timed calls (n/a on the CPU)."""


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
    "config": a configuration's calls) come in order of growing cost (sizes ascend, and batches within a dtype),
    so the last one of a kind estimates the next: a unit runs while the time used plus the last one's time stays
    within `seconds`; from the first unit that does not, every later unit is skipped."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.clock, self.start = seconds, clock, clock()
        self.last: dict[str, float] = {}
        self.stopped = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def allows(self, kind: str) -> bool:
        """Whether the next unit of `kind` runs."""
        self.stopped = self.stopped or self.elapsed() + self.last.get(kind, 0.0) > self.seconds
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


def measure(built: dict, params, compiled, batch: int, frames: dict[str, int], runs: int, cuda: bool) -> dict:
    """One configuration, its decode loop compiled (`compile_loops`): one warm call per framework, then `runs`
    rounds of JAX, transformers over frames[side] frames. A side out of device memory is marked `OOM` and not
    called again. Returns each side's generation seconds, the compile seconds and the device bytes."""
    start = time.perf_counter()
    texts = prompt_batch(batch)
    res: dict = {"compile": None, "loop_bytes": None, "jax": [], "torch": [], "torch_peak": None}
    if compiled == OOM:
        res["jax"] = OOM
    else:
        res.update(compiled)

    def jax_call(n: int, seed: int) -> float:
        (text, mask), keys = built["texts"][batch], row_keys(seed + np.arange(batch))
        t = time.perf_counter()
        jax.block_until_ready(generate_tokens(built["lm_config"], params, text, mask, keys, n, SAMPLING))
        return time.perf_counter() - t

    def torch_call(n: int, seed: int) -> float:
        return built["generator"](texts, n, seed=seed)["generate"]

    def attempt(side: str, n: int, seed: int) -> float | None:
        if res[side] == OOM:
            return None
        try:
            return (jax_call if side == "jax" else torch_call)(n, seed)
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"batch {batch}: {side} ran out of memory: {str(e)[:200]}", flush=True)
            res[side] = OOM
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        return None

    for side in ("jax", "torch"):
        attempt(side, warm_frames(frames[side]), 0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # the peak of transformers' timed calls
    for r in range(runs):
        for side in ("jax", "torch"):
            seconds = attempt(side, frames[side], 1 + r)
            if seconds is not None:
                res[side].append(seconds)
    if cuda and res["torch"] != OOM:
        res["torch_peak"] = torch.cuda.max_memory_allocated()
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
) -> dict:
    """Every (size, dtype, batch) in that order within `budget_seconds` from the start (`Budget`); each size's
    models are freed before the next. After each row, measured or skipped, `on_row` gets a copy of the result
    so far (`report` calls it partial while rows are missing)."""
    budget = Budget(budget_seconds)
    cuda = torch.cuda.is_available()
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
    }

    def add(row: dict) -> None:
        res["rows"].append(row)
        res.update(elapsed=budget.elapsed(), load=(load_before, load_average()))
        if on_row is not None:
            on_row({**res, "rows": list(res["rows"])})

    def skip(size: str, dtype: str, batch: int, kind: str) -> None:
        need, left = budget.last.get(kind, 0.0), budget.seconds - budget.elapsed()
        print(f"{size} batch {batch} {dtype}: {SKIPPED} (about {need:.0f} s needed, {left:.0f} s left)", flush=True)
        add({"size": size, "batch": batch, "dtype": dtype, "skipped": (need, left)})

    for size in models:
        plan = [(d, b) for d in dtypes for b in batches]
        if not budget.allows("size"):
            for d, b in plan:
                skip(size, d, b, "size")
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
                if not budget.allows("config"):
                    skip(size, dtype, b, "config")
                    continue
                row = measure(built, params, compiled[dtype, b], b, res["frames"], runs, cuda)
                budget.spent("config", row["seconds"])
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


def row_cells(r: dict, frames: dict[str, int], frame_rate: float, bandwidth: float) -> tuple:
    """The cells of one configuration's row of `report`."""
    lead = (r["size"], f"{r['batch']} ({2 * r['batch']})", r["dtype"])
    bound = bandwidth / lm_step_bytes(r["size"], r["dtype"])
    if "skipped" in r:
        need, left = r["skipped"]
        return (*lead, f"{SKIPPED} (about {need:.0f} s needed, {max(left, 0.0):.0f} s left)", *["-"] * 7, bound)
    seconds = {side: None if r[side] == OOM else median_min(r[side])[0] for side in ("jax", "torch")}
    rate = {side: OOM if s is None else (frames[side] + 3) / s for side, s in seconds.items()}
    rtf = {side: OOM if s is None else frames[side] / frame_rate / s for side, s in seconds.items()}
    ratio = "-" if OOM in rate.values() else rate["jax"] / rate["torch"]
    memory = [None if b is None else b / GIB for b in (r["loop_bytes"], r["jax_peak"], r["torch_peak"])]
    compile_seconds = "-" if r["compile"] is None else r["compile"]
    cells = (rate["jax"], rate["torch"], ratio, rtf["jax"], rtf["torch"], compile_seconds, tuple(memory[:2]), memory[2])
    return (*lead, *cells, bound)


def gib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


COLUMNS = {
    "model": "{}",
    "batch (rows with CFG)": "{}",
    "dtype": "{}",
    "JAX steps/s": sig,
    "transformers steps/s": sig,
    "ratio JAX/transformers": "**{:.2f}**",
    "JAX real-time factor": sig,
    "transformers real-time factor": sig,
    "JAX compile s": sig,
    "JAX peak GiB (decode loop / process)": lambda m: f"{gib(m[0])} / {gib(m[1])}",
    "transformers peak GiB": gib,
    "bound steps/s": sig,
}


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
    if len(rows) < res["total"]:
        facts.append(f"- Partial: written after {len(rows)} of the {res['total']} configurations.")
    cells = [row_cells(r, frames, res["frame_rate"], bw["jax"] * 1e9) for r in rows]
    return section(TITLE, command, facts, table(COLUMNS, cells))


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
        args.models, args.batches, args.dtypes, args.frames, torch_frames, args.runs, args.budget_seconds, write
    )
    write(res)
    print("\n" + report(res, command))
    if args.out is not None:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
