"""The weight-only int8 experiment of issue 16: does a decode step of musicgen-small's LM read its weights
faster on XLA:CPU when the kernels are stored as int8 with one float32 scale per output channel?

A decode step at batch 1 with guidance multiplies 2 rows by every kernel (per layer: self-attention q, k,
v, out, cross-attention q, out, fc1, fc2; and the 4 codebook heads): 1.41 G parameters' bytes a step in
float32, a quarter of them in int8. Timed here: all those products for one step, `(W x^T)^T` on `x [2, in]`
as the LM computes them (`lm.transformer.Linear`), with W in float32, in bfloat16 (`lm.model.cast_params`),
and in int8 dequantized inside the product, `(W_q x^T)^T * scale` with `W_q = round(W / scale)`, `scale =
max|W row| / 127`; against the bandwidth bound of each (the weight bytes over a jitted `jnp.sum`'s read rate).

    .venv/bin/python -m benchmarks.int8 --write     # writes the int8 section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import RESULTS, command_line, load_average, machine_lines, median_min, publish
from benchmarks.sampling import memory_bandwidth
from musicgen_jax.config import MUSICGEN_SMALL_LM

SECTION_TITLE = "## Weight-only int8 on the CPU (musicgen-small decode step, experiment)"
ROWS = 2  # batch 1 with guidance


def kernel_shapes(config=MUSICGEN_SMALL_LM) -> list[tuple[int, int]]:
    """`[out, in]` of every kernel a decode step reads, in the order the LM reads them."""
    d, f = config.dim, config.ffn_dim
    layer = [(d, d)] * 6 + [(f, d), (d, f)]
    return layer * config.num_layers + [(config.card, d)] * config.num_codebooks


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`w [out, in]` float32 -> (int8 `[out, in]`, float32 scales `[out]`), symmetric per output channel."""
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale.astype(np.float32)


def _float_step(kernels, x):
    return sum(jnp.sum(jnp.dot(w, x[:, : w.shape[1]].astype(w.dtype).T).astype(jnp.float32)) for w in kernels)


def _int8_step(kernels, x):
    return sum(jnp.sum(jnp.dot(q.astype(jnp.float32), x[:, : q.shape[1]].T) * s[:, None]) for q, s in kernels)


def measure(runs: int) -> dict:
    rng = np.random.default_rng(0)
    shapes = kernel_shapes()
    floats = [rng.normal(0, 0.02, s).astype(np.float32) for s in shapes]
    x = jnp.asarray(rng.normal(0, 1, (ROWS, max(s[1] for s in shapes))).astype(np.float32))  # x[:, :in] per kernel
    quantized = [quantize(w) for w in floats]
    error = max(float(np.abs(q * s[:, None] - w).max() / np.abs(w).max()) for w, (q, s) in zip(floats, quantized))
    variants = {
        "float32": (jax.jit(_float_step), [jnp.asarray(w) for w in floats]),
        "bfloat16": (jax.jit(_float_step), [jnp.asarray(w, jnp.bfloat16) for w in floats]),
        "int8": (jax.jit(_int8_step), [(jnp.asarray(q), jnp.asarray(s)) for q, s in quantized]),
    }
    del floats
    load = load_average()
    bandwidth = memory_bandwidth(runs)["jax"]
    out = {"bandwidth": bandwidth, "runs": runs, "error": error, "variants": {}}
    for name, (fn, kernels) in variants.items():
        fn(kernels, x).block_until_ready()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(kernels, x).block_until_ready()
            times.append(time.perf_counter() - start)
        weight_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(kernels))
        out["variants"][name] = {
            "seconds": median_min(times)[0],
            "bytes": weight_bytes,
            "bound": weight_bytes / (bandwidth * 1e9),
        }
    out["load"] = (load, load_average())
    return out


def report(res: dict, command: str) -> str:
    f32 = res["variants"]["float32"]["seconds"]
    rows = [
        f"| {name} | {v['bytes'] / 1e9:.3f} | {1e3 * v['seconds']:.1f} | {1e3 * v['bound']:.1f} | "
        f"{100 * v['bound'] / v['seconds']:.0f}% | {f32 / v['seconds']:.2f} |"
        for name, v in res["variants"].items()
    ]
    int8 = res["variants"]["int8"]
    verdict = (
        f"int8 {f32 / int8['seconds']:.2f}x float32's speed here; the compiled program (`.as_text()`) "
        "fuses the int8-to-float32 conversion with the product into one kernel (XLA:CPU's YNNPACK fusion "
        f"in jax {jax.__version__}), which reaches {100 * int8['bound'] / int8['seconds']:.0f}% of its bound"
    )
    if int8["seconds"] >= f32:
        verdict += ": slower, so `--dtype int8` is not offered"
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"Command: `{command}`",
            "",
            *machine_lines(None, res["load"]),
            f"- The products of one decode step of musicgen-small's LM at batch 1 with guidance ({ROWS} rows): 24 "
            "layers x (6 kernels [1024, 1024], fc1 [4096, 1024], fc2 [1024, 4096]) + 4 heads [2048, 1024], computed "
            f"`(W x^T)^T` as the LM does, median of {res['runs']}; bound = weight bytes / {res['bandwidth']:.2f} GB/s "
            "(jitted `jnp.sum` over 1 GiB). int8: per-output-channel scales, worst dequantization error "
            f"{res['error']:.2e} of the largest weight.",
            "",
            "| kernels | weight GB | ms per step | bound ms | of the bound | speed vs float32 |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Verdict: {verdict}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant")
    parser.add_argument("--write", action="store_true", help=f"write the int8 section of {RESULTS}")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    publish(report(measure(args.runs), command_line("benchmarks.int8", argv)), args.write)


if __name__ == "__main__":
    main()
