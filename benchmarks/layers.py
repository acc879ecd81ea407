"""Benchmark the layouts of the LM (musicgen-small size, random weights, float32, JAX only): 24 unrolled layers
against one `lax.scan` over stacked layers (`LMModel(config, scan_layers=...)`), for the sampling loop's decode
step and a training step's loss and gradients (compile time and step time), and three forms of the linear
products (kernels [in, out] as `x W`; [out, in], PyTorch's layout, as `x W^T` or as `(W x^T)^T`, what
`lm.transformer.Linear` does). It picks the layouts the package uses.

    .venv/bin/python -m benchmarks.layers --write     # writes the layers section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.common import (
    command_line,
    load_average,
    machine_lines,
    median_min,
    parser,
    publish,
    repeat_seconds,
    section,
    table,
    with_min,
)
from musicgen_jax.config import MUSICGEN_SMALL_LM
from musicgen_jax.lm.model import LMModel, init_cache, init_params, stack_layers
from musicgen_jax.lm.transformer import Linear

SECTION_TITLE = "## LM layer layout: unrolled vs scanned (musicgen-small architecture)"
CACHE, TRAIN_STEPS, TEXT = 504, 64, 16


def _compile(fn, *args, **jit_kwargs):
    start = time.perf_counter()
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - start


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

    decode_times = repeat_seconds(lambda: jax.block_until_ready(decode_call()), runs * 4)

    tokens = jax.random.randint(jax.random.key(2), (2, config.num_codebooks, TRAIN_STEPS), 0, config.card)

    def loss(p):
        logits = model.apply(p, tokens, text, mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits[..., :-1, :], tokens[..., 1:]).mean()

    train, train_compile = _compile(jax.value_and_grad(loss), params)
    train_times = repeat_seconds(lambda: jax.block_until_ready(train(params)), runs)
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
            out[(rows, name)] = repeat_seconds(
                lambda fn=fn, x=x, u=u, d=d: jax.block_until_ready(fn(x, u, d)), runs * 2
            )
    return out


def report(results: dict, products: dict, command: str, load: tuple[str, str], runs: int) -> str:
    """The RESULTS.md section: one row per layout, then the linear products' rates."""
    config = MUSICGEN_SMALL_LM
    facts = [
        *machine_lines(None, load, f", flax {flax.__version__}"),
        f"- Model: `LMModel` with the musicgen-small LM config ({config.num_layers} layers, width {config.dim}, "
        f"ffn {config.ffn_dim}), random weights, float32; the same weights in both layouts (`stack_layers`)",
        f"- Decode step: batch 2, one position, KV cache of {CACHE} positions, median (min) of {runs * 4} calls",
        f"- Training step: `value_and_grad` of cross-entropy over [2, {config.num_codebooks}, {TRAIN_STEPS}] "
        f"tokens, {TEXT} text positions, median (min) of {runs} calls",
    ]
    rows = []
    for name, r in results.items():
        (dc, dt), (tc, tt) = r["decode"], r["train"]
        rows.append((name, dc, tuple(1000 * t for t in median_min(dt)), tc, median_min(tt)))
    layouts = table(
        {
            "layout": "{}",
            "decode compile s": "{:.1f}",
            "decode step ms": with_min(1),
            "training compile s": "{:.1f}",
            "training step s": with_min(2),
        },
        rows,
    )
    unrolled, scanned = results["unrolled"], results["scanned"]
    step_ratio = median_min(scanned["decode"][1])[0] / median_min(unrolled["decode"][1])[0]
    summary = (
        f"Scanned decode step / unrolled: {step_ratio:.2f}; unrolled training compile / scanned: "
        f"{unrolled['train'][0] / scanned['train'][0]:.2f}. Used: unrolled layers in the sampling loop "
        "(`musicgen_jax.sampling`), the scanned layout (`scan_layers=True`) where compile time dominates (training)."
    )
    gigabytes = 2 * config.num_layers * config.dim * config.ffn_dim * 4 / 1e9
    rates = table(
        {"rows": "{}"} | dict.fromkeys(PRODUCTS, "{:.1f}"),
        [(rows, *(gigabytes / median_min(products[rows, name])[0] for name in PRODUCTS)) for rows in PRODUCT_ROWS],
    )
    products_intro = (
        f"Linear products ({gigabytes:.2f} GB of feed-forward kernels per call), GB/s of kernel bytes, "
        f"median of {runs * 2} calls:"
    )
    return section(SECTION_TITLE, command, facts, layouts, summary, products_intro, rates)


def main(argv=None):
    p = parser("benchmarks.layers", __doc__)
    p.add_argument("--runs", type=int, default=5, help="timed training calls per layout (decode: 4x)")
    args = p.parse_args(argv)
    load_before = load_average()
    params = nn.unbox(jax.jit(init_params, static_argnums=0)(MUSICGEN_SMALL_LM, jax.random.key(0)))
    results = {"unrolled": measure(params, False, args.runs)}
    results["scanned"] = measure(jax.jit(stack_layers)(params), True, args.runs)
    products = linear_products(args.runs)
    command = command_line("benchmarks.layers", argv)
    publish(report(results, products, command, (load_before, load_average()), args.runs), args.write)


if __name__ == "__main__":
    main()
