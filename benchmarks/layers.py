"""Benchmark the layouts of the LM: 24 unrolled layers against one `lax.scan` over stacked layers
(`LMModel(config, scan_layers=...)`), and three forms of the linear products (`lm.transformer.Linear`'s
and two others); musicgen-small architecture, random weights, float32. JAX only: this picks the
layouts the package uses, it is not a comparison with PyTorch.

Measured for each layout:
- decode step: one KV-cache decode call (`LMModel.decode`, one delay-pattern position) at batch 2 (one
  prompt with classifier-free guidance) against a 504-position cache (10 s of audio), the call the
  sampling loop makes per step; compile time (`jit(...).lower(...).compile()`) and the median of the
  timed calls (cache donated, as in the loop).
- training step: loss and gradients of teacher-forced cross-entropy over a [2, 4, 64] token sequence
  with 16 text positions (compile time is the point: it grows with the number of unrolled layers;
  the run time is given for completeness).
- linear products: the weight-streaming rate (GB/s of kernel bytes) of 24 feed-forward blocks
  (width 1024 -> 4096 -> 1024) applied to [rows, 1, 1024] activations, as the decode step's [B, T, D],
  for 2, 16 and 128 rows (batch 1 and 8 with guidance, a short training batch), with kernels stored
  [in, out] and multiplied as `x W`, or stored [out, in] (PyTorch's layout, the one converted
  checkpoints keep) and multiplied as `x W^T` or as `(W x^T)^T` (`lm.transformer.Linear`: the kernel
  as the left operand).

    .venv/bin/python -m benchmarks.layers --write     # writes the layers section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.common import command_line, load_average, machine_lines, median_min, publish, time_interleaved
from musicgen_jax.config import MUSICGEN_SMALL_LM
from musicgen_jax.lm.model import LMModel, init_cache, init_params, stack_layers
from musicgen_jax.lm.transformer import Linear

SECTION_TITLE = "## LM layer layout: unrolled vs scanned (musicgen-small architecture)"
CACHE, TRAIN_STEPS, TEXT = 504, 64, 16


def _compile(fn, *args, **jit_kwargs):
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _timed(call, runs: int) -> list[float]:
    """Seconds of `runs` calls of `call` after one untimed call (`common.time_interleaved`)."""
    return time_interleaved({"call": lambda: jax.block_until_ready(call())}, runs)["call"][1]


def measure(params, scan: bool, runs: int) -> dict:
    config = MUSICGEN_SMALL_LM
    model = LMModel(config, scan)
    text = jax.random.normal(jax.random.key(1), (2, TEXT, config.text_dim))
    mask = jnp.ones((2, TEXT), jnp.int32)
    context = jax.jit(lambda p: model.apply(p, text, mask, method=LMModel.condition))(params)
    column = jnp.zeros((2, config.num_codebooks, 1), jnp.int32)

    def step(p, cache, s):
        return model.apply(p, column, context, s, cache, method=LMModel.decode)

    cache = init_cache(config, 2, CACHE, scan_layers=scan)
    decode, decode_compile = _compile(step, params, cache, jnp.int32(0), donate_argnums=1)
    state = {"cache": cache, "s": 0}

    def decode_call():
        logits, state["cache"] = decode(params, state["cache"], jnp.int32(state["s"]))
        state["s"] += 1
        return logits

    decode_times = _timed(decode_call, runs * 4)

    tokens = jax.random.randint(jax.random.key(2), (2, config.num_codebooks, TRAIN_STEPS), 0, config.card)

    def loss(p):
        logits = model.apply(p, tokens, text, mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits[..., :-1, :], tokens[..., 1:]).mean()

    train, train_compile = _compile(jax.value_and_grad(loss), params)
    train_times = _timed(lambda: train(params), runs)
    return {"decode": (decode_compile, decode_times), "train": (train_compile, train_times)}


PRODUCT_ROWS = (2, 16, 128)
PRODUCTS = {  # name -> (kernel [out, in] -> stored kernel, product of x [rows, in] and the stored kernel)
    "x W, W [in, out]": (lambda w: w.T.copy(), lambda x, w: x @ w),
    "x W^T, W [out, in]": (lambda w: w, lambda x, w: jnp.einsum("...i,oi->...o", x, w)),
    "(W x^T)^T, W [out, in] (used)": (
        lambda w: w,
        lambda x, w: Linear(*w.shape, (None, None)).apply({"params": {"kernel": w}}, x),
    ),
}


def linear_products(runs: int) -> dict:
    """{(rows, product name): [seconds per call]} for 24 feed-forward blocks of the small LM's size on
    `[rows, 1, D]` activations (with `[rows, D]` XLA rewrites `(W x^T)^T` into `x W^T`)."""
    config = MUSICGEN_SMALL_LM
    keys = jax.random.split(jax.random.key(3), 2 * config.num_layers)
    up = [jax.random.normal(k, (config.ffn_dim, config.dim)) * 0.02 for k in keys[::2]]  # [out, in]
    down = [jax.random.normal(k, (config.dim, config.ffn_dim)) * 0.02 for k in keys[1::2]]
    out = {}
    for name, (store, product) in PRODUCTS.items():

        def blocks(x, up, down, product=product):
            for a, b in zip(up, down, strict=True):
                x = x + product(jax.nn.gelu(product(x, a)), b)
            return x

        fn, u, d = jax.jit(blocks), [store(a) for a in up], [store(b) for b in down]
        for rows in PRODUCT_ROWS:
            x = jnp.ones((rows, 1, config.dim))
            out[(rows, name)] = _timed(lambda fn=fn, x=x, u=u, d=d: fn(x, u, d), runs * 2)
    return out


def report(results: dict, products: dict, argv, load: tuple[str, str], runs: int) -> str:
    config = MUSICGEN_SMALL_LM
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command_line('benchmarks.layers', argv)}`",
        "",
        *machine_lines(None, load, f", flax {flax.__version__}"),
        f"- Model: `LMModel` with the musicgen-small LM config ({config.num_layers} layers, width {config.dim}, "
        f"ffn {config.ffn_dim}), random weights, float32; the same weights in both layouts (`stack_layers`)",
        f"- Decode step: batch 2, one position, KV cache of {CACHE} positions, median (min) of {runs * 4} calls",
        f"- Training step: `value_and_grad` of cross-entropy over [2, {config.num_codebooks}, {TRAIN_STEPS}] "
        f"tokens, {TEXT} text positions, median (min) of {runs} calls",
        "",
        "| layout | decode compile s | decode step ms | training compile s | training step s |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        dc, dt = r["decode"]
        tc, tt = r["train"]
        d_med, d_min = median_min(dt)
        t_med, t_min = median_min(tt)
        lines.append(
            f"| {name} | {dc:.1f} | {1000 * d_med:.1f} (min {1000 * d_min:.1f}) | {tc:.1f} | "
            f"{t_med:.2f} (min {t_min:.2f}) |"
        )
    unrolled, scanned = results["unrolled"], results["scanned"]
    step_ratio = median_min(scanned["decode"][1])[0] / median_min(unrolled["decode"][1])[0]
    compile_ratio = unrolled["train"][0] / scanned["train"][0]
    lines += [
        "",
        f"Scanned decode step / unrolled: {step_ratio:.2f}; unrolled training compile / scanned: "
        f"{compile_ratio:.2f}. Used: unrolled layers in the sampling loop (`musicgen_jax.sampling`), the "
        "scanned layout (`scan_layers=True`) where compile time dominates (training).",
    ]
    gigabytes = 2 * config.num_layers * config.dim * config.ffn_dim * 4 / 1e9
    lines += [
        "",
        f"Linear products ({gigabytes:.2f} GB of feed-forward kernels per call), GB/s of kernel bytes, "
        f"median of {runs * 2} calls:",
        "",
        "| rows | " + " | ".join(PRODUCTS) + " |",
        "|---|" + "---|" * len(PRODUCTS),
    ]
    for rows in PRODUCT_ROWS:
        rates = (gigabytes / median_min(products[(rows, name)])[0] for name in PRODUCTS)
        lines.append(f"| {rows} | " + " | ".join(f"{r:.1f}" for r in rates) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed training calls per layout (decode: 4x)")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    load_before = load_average()
    params = nn.unbox(jax.jit(init_params, static_argnums=0)(MUSICGEN_SMALL_LM, jax.random.key(0)))
    results = {"unrolled": measure(params, False, args.runs)}
    results["scanned"] = measure(jax.jit(stack_layers)(params), True, args.runs)
    products = linear_products(args.runs)
    publish(report(results, products, argv, (load_before, load_average()), args.runs), args.write)


if __name__ == "__main__":
    main()
