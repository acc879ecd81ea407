"""The decode step's levers on a GPU (issue 31), run by `benchmarks/gpu.sh`: musicgen_jax's `generate_tokens` for
one model size, dtype and batch (default medium, bfloat16, batch 1 with guidance) in variants that each change
one thing, their step rates against the weight-streaming bound, and a profile of the baseline's decode steps.

Variants (`VARIANTS`): the baseline; `top_k`, the threshold from `lax.top_k` instead of the 32-pass bisection
(`SamplingParams.top_k_method`); `scanned`, the layers as one `lax.scan` (the training layout) rather than
unrolled; `command_buffers`, XLA's command buffers (CUDA graphs) extended to the loop's
`while` and `conditional` (`--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL`; XLA reads its flags once, so
such a variant runs in a process of its own). The profile (`jax.profiler.trace`, its Perfetto JSON) counts the
device's kernels per decode step, their time against the step's wall time (the gap is launch and loop latency),
the host-device copies (the loop predicate's synchronisations) and the kernels that take the most time.

    python -m benchmarks.decode_gpu --models medium --out out/gpu_decode.md
    python -m benchmarks.decode_gpu --models tiny --frames 8 --profile-frames 4     # a quick check, also on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from flax import linen as nn

from benchmarks.common import (
    command_line,
    load_average,
    machine_lines,
    median_min,
    memory_bandwidth,
    parser,
    publish,
    section,
    table,
)
from benchmarks.sampling import SAMPLING, SIZES, hf_config, lm_weight_bytes
from benchmarks.sampling_gpu import warm_frames
from musicgen_jax.fileio import atomic_file
from musicgen_jax.lm.model import cast_params, init_params, stack_layers
from musicgen_jax.lm.weights import lm_config_from_hf
from musicgen_jax.sampling import generate_tokens, lower_generate, row_keys

TITLE = "## Decode levers on a GPU (one model size, batch 1 with guidance, random weights)"
TEXT_TOKENS = 16  # T5 positions of the random text states (one length bucket)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One change to the baseline decode: sampling settings, XLA flags, or the layers scanned."""

    what: str
    sampling: dict = dataclasses.field(default_factory=dict)
    xla_flags: str = ""
    scanned: bool = False


VARIANTS = {
    "baseline": Variant("bisection top-k, XLA's default command buffers"),
    "top_k": Variant("`lax.top_k` threshold", sampling={"top_k_method": "top_k"}),
    "scanned": Variant("layers scanned (`stack_layers`), as trained", scanned=True),
    "command_buffers": Variant(
        "command buffers over the loop", xla_flags="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
    ),
}


def build(size: str, dtype: str, batch: int):
    """(LM config, parameters in `dtype` on the device, text states `[B, TEXT_TOKENS, text_dim]`, mask `[B, N]`):
    `init_params` weights (random), cast with `cast_params`; random text states."""
    config = lm_config_from_hf(hf_config(size).to_dict())
    params = cast_params(jax.jit(lambda k: nn.unbox(init_params(config, k)))(jax.random.key(0)), dtype)
    text = np.random.default_rng(0).normal(size=(batch, TEXT_TOKENS, config.text_dim)).astype(np.float32)
    return config, params, text, np.ones((batch, TEXT_TOKENS), np.int32)


def measure(built: tuple, frames: int, runs: int, variants: list[str]) -> dict:
    """The `variants`' decodes in this process on the `build` result: their loops compiled at once, one thread
    each (XLA compiles without the GIL; `generate_tokens` reuses the executables), then per variant one warm
    call and `runs` timed calls over `frames` frames. Per variant: compile seconds, generation seconds, the LM
    weight bytes a step reads, steps per call and the XLA flags of this process."""
    if not variants:
        return {}
    config, params, text, mask = built
    keys = row_keys(np.arange(len(text)))
    calls = {
        v: (
            stack_layers(params) if VARIANTS[v].scanned else params,
            dataclasses.replace(SAMPLING, **VARIANTS[v].sampling),
        )
        for v in variants
    }

    def compile_one(v: str) -> float:
        start = time.perf_counter()
        lower_generate(config, calls[v][0], text, mask, keys, frames, calls[v][1]).compile()
        return time.perf_counter() - start

    def call(v: str, n: int) -> float:
        start = time.perf_counter()
        jax.block_until_ready(generate_tokens(config, calls[v][0], text, mask, keys, n, calls[v][1]))
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        compiled = dict(zip(variants, pool.map(compile_one, variants), strict=True))
    res = {}
    for v in variants:
        call(v, warm_frames(frames))
        res[v] = {
            "compile": compiled[v],
            "seconds": [call(v, frames) for _ in range(runs)],
            "weight_bytes": lm_weight_bytes(params, config),
            "steps": frames + max(config.delays),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
    return res


def in_child(args: list[str], variant: str) -> dict:
    """`measure` of a variant with XLA flags, in a process started with them appended to `XLA_FLAGS`."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "variant.json"
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {VARIANTS[variant].xla_flags}".strip()}
        command = [sys.executable, "-m", "benchmarks.decode_gpu", *args, "--variants", variant, "--json", str(out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:300]}
        return json.loads(out.read_text())[variant]


def trace_events(directory: Path) -> list[dict]:
    """The complete ("X") events of the Perfetto trace `jax.profiler.trace(directory)` wrote, each with its
    process and thread names (`process`, `thread`)."""
    (path,) = directory.glob("plugins/profile/*/perfetto_trace.json.gz")
    events = json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    return [
        {**e, "process": processes.get(e["pid"], ""), "thread": threads.get((e["pid"], e.get("tid")), "")}
        for e in events
        if e.get("ph") == "X"
    ]


def summarize(events: list[dict], steps: int, wall: float, top: int = 8) -> dict:
    """Per decode step of a traced call of `steps` steps (its prefill included) taking `wall` seconds: the device's
    kernels (a GPU's "/device:" tracks; on a CPU the XLA client thread's operations, less the markers and the
    `while` / `conditional` operations that contain others), their busy time, host-device copies, and the `top`
    kernels by time (names without their numeric suffix)."""
    gpu = any(e["process"].startswith("/device:") for e in events)
    if gpu:
        device = [e for e in events if e["process"].startswith("/device:")]
    else:
        device = [
            e
            for e in events
            if e["thread"].startswith("tf_XLA")
            and not e["name"].startswith(("end: ", "Thunk", "Threadpool"))
            and re.sub(r"[._]\d+$", "", e["name"]) not in ("while", "conditional")
        ]
    copies = [e for e in device if re.search("memcpy", e["name"], re.IGNORECASE)]
    time_by_name: Counter = Counter()
    for e in device:
        time_by_name[re.sub(r"[._]\d+$", "", e["name"])] += e.get("dur", 0.0)
    busy = sum(e.get("dur", 0.0) for e in device) * 1e-6
    return {
        "device": "GPU tracks" if gpu else "XLA:CPU operations",
        "kernels_per_step": len(device) / steps,
        "busy_per_step_ms": 1e3 * busy / steps,
        "wall_per_step_ms": 1e3 * wall / steps,
        "copies_per_step": len(copies) / steps,
        "top": [(name, 1e3 * dur * 1e-6 / steps) for name, dur in time_by_name.most_common(top)],
    }


def profile(built: tuple, frames: int) -> dict:
    """The baseline's decode traced over `frames` frames (after an untraced call), `summarize`d."""
    config, params, text, mask = built
    keys = row_keys(np.arange(len(text)))

    def call() -> None:
        jax.block_until_ready(generate_tokens(config, params, text, mask, keys, frames, SAMPLING))

    call()
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            start = time.perf_counter()
            call()
            wall = time.perf_counter() - start
        return summarize(trace_events(Path(directory)), frames + max(config.delays), wall)


def report(res: dict, command: str) -> str:
    """The RESULTS.md section."""
    bandwidth = res["bandwidth"]
    base = res["variants"].get("baseline", {})
    base_rate = base["steps"] / median_min(base["seconds"])[0] if "seconds" in base else None
    rows = []
    for name, r in res["variants"].items():
        if "error" in r:
            rows.append((name, VARIANTS[name].what, VARIANTS[name].xla_flags or "-", r["error"], "-", "-", "-", "-"))
            continue
        rate = r["steps"] / median_min(r["seconds"])[0]
        bound = bandwidth * 1e9 / r["weight_bytes"]
        ratio = "-" if base_rate is None else f"{rate / base_rate:.3f}"
        flags = r["xla_flags"] or "-"  # as the process saw them
        rows.append((name, VARIANTS[name].what, flags, f"{rate:.1f}", f"{bound:.1f}", f"{100 * rate / bound:.1f}%"))
        rows[-1] += (ratio, f"{r['compile']:.1f}")
    columns = ["variant", "what", "XLA_FLAGS", "steps/s", "bound steps/s", "of bound", "vs baseline", "compile s"]
    facts = machine_lines(None, res["load"]) + [
        f"- Device: {res['device']}.",
        f"- Model: musicgen {res['size']} architecture, `init_params` random weights cast to {res['dtype']} "
        f"(`cast_params`), batch {res['batch']} with guidance ({2 * res['batch']} rows), random text states of "
        f"{TEXT_TOKENS} positions; top-k {SAMPLING.top_k}, guidance {SAMPLING.cfg_coef:g}.",
        f"- Timing: `generate_tokens` over {res['frames']} frames: the variants' loops compiled at once, one thread "
        f"each (`lower_generate`; the compile column is each one's wall time), then per variant one warm call and "
        f"the median of {res['runs']} call(s); steps/s = steps / seconds. Variants with XLA flags run first, each "
        "alone in a process of its own.",
        f"- Bound: {bandwidth:.1f} GB/s read bandwidth (`benchmarks.common.memory_bandwidth`) / the LM weight bytes a "
        "step reads (`benchmarks.sampling.lm_weight_bytes`).",
    ]
    blocks = [table(dict.fromkeys(columns, "{}"), rows)]
    if p := res.get("profile"):
        blocks.append(
            f"Profile of the baseline over {res['profile_frames']} frames ({p['device']}; `jax.profiler.trace`): per "
            f"decode step {p['kernels_per_step']:.1f} kernels, {p['busy_per_step_ms']:.3f} ms of kernel time in "
            f"{p['wall_per_step_ms']:.3f} ms of wall time, {p['copies_per_step']:.2f} host-device copies. Kernels "
            "by time per step:"
        )
        blocks.append(table({"kernel": "`{}`", "ms per step": "{:.4f}"}, p["top"]))
    return section(TITLE, command, facts, *blocks)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.decode_gpu", __doc__)
    p.add_argument("--models", choices=SIZES, default="medium", help="the model size")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--batch", type=int, default=1, help="prompts (rows with guidance: twice as many)")
    p.add_argument("--frames", type=int, default=250, help="frames per timed call (50 per second of audio)")
    p.add_argument("--runs", type=int, default=3, help="timed calls per variant")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--profile-frames", type=int, default=20, help="frames of the profiled call (0: no profile)")
    p.add_argument("--out", type=Path, default=None, help="write the section to this file")
    p.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        p.error(f"unknown variants {', '.join(unknown)}; of {', '.join(VARIANTS)}")
    shape = (args.models, args.dtype, args.batch)
    if args.json:  # a child of `in_child`: its flags are set; no report
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(measure(build(*shape), args.frames, args.runs, variants)))
        return
    load_before = load_average()
    shared = ["--models", args.models, "--dtype", args.dtype, "--batch", str(args.batch)]
    shared += ["--frames", str(args.frames), "--runs", str(args.runs)]
    res = {"size": args.models, "dtype": args.dtype, "batch": args.batch, "frames": args.frames, "runs": args.runs}
    res["device"] = f"JAX {jax.default_backend()} ({jax.devices()[0].device_kind})"
    res["bandwidth"] = memory_bandwidth(calls=10)["jax"]
    flagged = [v for v in variants if VARIANTS[v].xla_flags]
    found = {v: in_child(shared, v) for v in flagged}  # first, each alone on the device
    built = build(*shape)
    found.update(measure(built, args.frames, args.runs, [v for v in variants if v not in flagged]))
    res["variants"] = {v: found[v] for v in variants}
    print("\n".join(f"{v}: {r}" for v, r in res["variants"].items()), flush=True)
    if args.profile_frames:
        res["profile"], res["profile_frames"] = profile(built, args.profile_frames), args.profile_frames
    res["load"] = (load_before, load_average())
    text = report(res, command_line("benchmarks.decode_gpu", argv))
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(text)
    publish(text, args.write)


if __name__ == "__main__":
    main()
