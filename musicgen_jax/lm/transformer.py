"""Pre-norm transformer decoder layers of the MusicGen LM (audiocraft's `create_sin_embedding` and
`StreamingTransformerLayer`), with a preallocated KV cache.

Parameters and activations carry logical axis names (`musicgen_jax.sharding`). Parameters stay float32;
the layers compute in the dtype of their input (float32, or bfloat16 for mixed precision), with float32
normalization statistics and attention softmax.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from musicgen_jax.config import LMConfig
from musicgen_jax.sharding import HEADS, HIDDEN, TOKENS

NEG_INF = float(np.finfo(np.float32).min)
CACHE_BLOCK = 64  # positions in the KV cache's first block (`cache_blocks`)
ROWS_AS_MATRIX = 128  # `Linear`: from this many rows, a 2-D `x W^T` product


_NORMAL = nn.initializers.normal(0.02)


def initializer(*axes: str | None, init=_NORMAL):
    """`init` with the logical axis names of the parameter it creates."""
    return nn.with_logical_partitioning(init, axes)


class Linear(nn.Module):
    """`x [..., in_features] -> x W^T (+ b) [..., features]` with `kernel` W stored `[features, in_features]`
    (PyTorch's layout). Below `ROWS_AS_MATRIX` rows (the small-batch products of decoding) computed as
    `(W x^T)^T` on `x [B, T, in]`: XLA:CPU streams the kernel faster as the left operand. From it (training,
    prompts) as `x W^T` on the rows flattened to a matrix `[B * T, in]`, whose backward pass is faster than
    either 3-D form's (benchmarks/RESULTS.md, "Design choices"). `axes` names (out, in)
    logically. `products` computes several of one input as one product.

    `lora_rank` r > 0 adds a low-rank adapter: `lora_a [r, in]` (normal 0.02) and `lora_b [features, r]`
    (zeros, so the adapted layer starts as the plain one), `y += (x A^T) B^T`; `merge_lora` folds
    `B A` into the kernel."""

    features: int
    in_features: int
    axes: tuple[str, str]
    use_bias: bool = False
    lora_rank: int = 0

    def setup(self):
        self.kernel = self.param("kernel", initializer(*self.axes), (self.features, self.in_features))
        if self.lora_rank:
            self.lora_a = self.param("lora_a", initializer(None, self.axes[1]), (self.lora_rank, self.in_features))
            self.lora_b = self.param(
                "lora_b", initializer(self.axes[0], None, init=nn.initializers.zeros), (self.features, self.lora_rank)
            )
        if self.use_bias:
            self.bias = self.param("bias", initializer(self.axes[0], init=nn.initializers.zeros), (self.features,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.finish(x, _product(self.kernel.astype(x.dtype), x))

    def finish(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """`y = x W^T [..., features]` plus the adapter's product and the bias."""
        if self.lora_rank:
            y = y + _product(self.lora_b.astype(x.dtype), _product(self.lora_a.astype(x.dtype), x))
        if self.use_bias:
            y = y + self.bias.astype(y.dtype)
        return y


def products(layers: list[Linear], x: jax.Array) -> list[jax.Array]:
    """`[layer(x) for layer in layers]` for Linears of the same shape (attention's q / k / v, the codebook
    heads). From `ROWS_AS_MATRIX` rows as one product of the rows `[B * T, in]` with the kernels stacked
    `[n, out, in]` (stacked, not concatenated, so that a sharded `out` axis stays sharded): one larger
    matrix product in the forward and each backward product, faster on XLA:CPU than n separate ones at the
    training shapes (benchmarks/RESULTS.md, "Design choices")."""
    rows = math.prod(x.shape[:-1])
    if rows < ROWS_AS_MATRIX:
        return [layer(x) for layer in layers]
    kernels = jnp.stack([layer.kernel.astype(x.dtype) for layer in layers])
    y = lax.dot_general(x.reshape(rows, -1), kernels, (((1,), (2,)), ((), ())))
    return [layer.finish(x, y[:, i].reshape(*x.shape[:-1], -1)) for i, layer in enumerate(layers)]


def _product(kernel: jax.Array, x: jax.Array) -> jax.Array:
    """`x [..., in]` times `kernel [out, in]` transposed (see `Linear`) -> `[..., out]`."""
    rows = math.prod(x.shape[:-1])
    if rows >= ROWS_AS_MATRIX:
        return lax.dot_general(x.reshape(rows, -1), kernel, (((1,), (1,)), ((), ()))).reshape(*x.shape[:-1], -1)
    return jnp.moveaxis(lax.dot_general(kernel, x, (((1,), (x.ndim - 1,)), ((), ()))), 0, -1)


def sinusoidal_embedding(positions: jax.Array, dim: int, max_period: float) -> jax.Array:
    """`positions [T] -> [T, dim]` float32: `cat(cos(p * f), sin(p * f))`, f = max_period ** (-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = np.exp(np.arange(half, dtype=np.float32) * np.float32(-math.log(max_period) / (half - 1)))
    phase = positions.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


def layer_norm(config: LMConfig, dtype=jnp.float32, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over `embed` with float32 parameters and statistics, its output in `dtype`."""
    return nn.LayerNorm(
        epsilon=config.norm_eps,
        use_fast_variance=False,
        name=name,
        dtype=dtype,
        scale_init=initializer("embed", init=nn.initializers.ones),
        bias_init=initializer("embed", init=nn.initializers.zeros),
    )


class Attention(nn.Module):
    """Multi-head attention, no biases, scores scaled by head_dim ** -0.5."""

    config: LMConfig
    lora_rank: int = 0

    def setup(self):
        d, r = self.config.dim, self.lora_rank
        self.q, self.k, self.v = (Linear(d, d, ("heads", "embed"), lora_rank=r) for _ in range(3))
        self.out = Linear(d, d, ("embed", "heads"), lora_rank=r)

    def _heads(self, x: jax.Array) -> jax.Array:
        """`[B, T, D] -> [B, H, T, Dh]`."""
        b, t, _ = x.shape
        x = x.reshape(b, t, self.config.num_heads, self.config.head_dim).transpose(0, 2, 1, 3)
        return nn.with_logical_constraint(x, HEADS)

    def _query(self, q: jax.Array) -> jax.Array:
        return self._heads(q) * self.config.head_dim**-0.5

    def query(self, x: jax.Array) -> jax.Array:
        """`x [B, T, D] ->` scaled queries `[B, H, T, Dh]`."""
        return self._query(self.q(x))

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`x [B, L, D] -> (k, v) [B, H, L, Dh]`."""
        k, v = products([self.k, self.v], x)
        return self._heads(k), self._heads(v)

    def project_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`x [B, T, D] ->` (scaled queries, keys, values) `[B, H, T, Dh]`."""
        q, k, v = products([self.q, self.k, self.v], x)
        return self._query(q), self._heads(k), self._heads(v)

    def __call__(self, q: jax.Array, k: list[jax.Array], v: list[jax.Array], bias: jax.Array, last=None) -> jax.Array:
        """Scaled queries `q [B, H, T, Dh]` attend to keys / values in blocks `[B, H, n_i, Dh]` (see `attend`)
        -> `[B, T, D]`."""
        out = attend(q, k, v, bias, last).transpose(0, 2, 1, 3)
        return self.out(out.reshape(out.shape[:2] + (self.config.dim,)))


def cache_blocks(length: int, block: int = CACHE_BLOCK) -> list[int]:
    """Block lengths of a `length`-position KV cache: `block`, then each block as long as all before it
    (64, 64, 128, 256, ...; the last one cut to fit). A layer's cache is {"k", "v": lists of blocks
    `[B, H, n_i, Dh]`} over consecutive positions, and a decode step reads only the blocks that hold a position
    up to its own (`attend`), so early steps of a long generation do not stream the whole cache: a step reads
    at most about twice the positions it attends to, with a number of blocks (each a `lax.cond` per layer,
    compiled) logarithmic in `length`."""
    sizes, total = [], 0
    while total < length:
        sizes.append(min(max(block, total), length - total))
        total += sizes[-1]
    return sizes


def _block_starts(blocks: list[jax.Array]) -> np.ndarray:
    return np.cumsum([0] + [b.shape[-2] for b in blocks])[:-1]


def attend(q: jax.Array, k: list[jax.Array], v: list[jax.Array], bias: jax.Array, last=None) -> jax.Array:
    """`q [B, H, T, Dh]` over keys and values given as consecutive blocks `[B, H, n_i, Dh]` of one
    length L = sum n_i, with the additive `bias [.., T, L]` -> `[B, H, T, Dh]`.

    `last`: the last query position (an int, or traced inside the decode loop), or None. Blocks that
    start after it are skipped (statically, or by `lax.cond`): the causal bias masks all their scores,
    so the result is softmax attention over the whole length, without reading those blocks."""

    def reached(start, fn, shape):
        if last is None or start == 0:
            return fn()
        if isinstance(last, (int, np.integer)):
            return fn() if start <= last else jnp.zeros(shape, q.dtype)
        return lax.cond(start <= last, fn, lambda: jnp.zeros(shape, q.dtype))

    starts = _block_starts(k)
    scores = [
        reached(s, lambda kb=kb: jnp.einsum("bhtd,bhld->bhtl", q, kb), q.shape[:-1] + kb.shape[-2:-1])
        for s, kb in zip(starts, k, strict=True)
    ]
    # float32 softmax (bfloat16 scores too): `bias`' finfo(float32).min would round to -inf in bfloat16 and
    # turn a row with no visible key (a melody prefix's padding slots) into NaN
    scores = jnp.concatenate(scores, axis=-1).astype(jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return sum(
        reached(s, lambda s=s, vb=vb: jnp.einsum("bhtl,bhld->bhtd", probs[..., s : s + vb.shape[-2]], vb), q.shape)
        for s, vb in zip(starts, v, strict=True)
    )


def write_cache(blocks: list[jax.Array], new: jax.Array, start) -> list[jax.Array]:
    """Cache blocks `[B, H, n_i, Dh]` with `new [B, H, T, Dh]` written at positions start..start+T-1
    (`start` may be traced): a scatter per block, positions outside it dropped; in place when the
    cache is a donated loop carry."""
    positions = start + jnp.arange(new.shape[-2])
    out = []
    for s, block in zip(_block_starts(blocks), blocks, strict=True):
        n = block.shape[-2]
        index = jnp.where((positions >= s) & (positions < s + n), positions - s, n)  # n: out of range
        out.append(block.at[:, :, index].set(new.astype(block.dtype), mode="drop"))
    return out


class DecoderLayer(nn.Module):
    """x + SA(LN(x)); x + CA(LN(x), text) (not in melody models); x + W2(gelu(W1(LN(x)))).

    Computes in the dtype of `x` (kernels are cast to it; `dtype`: the norms' output, the same)."""

    config: LMConfig
    dtype: Any = jnp.float32
    lora_rank: int = 0  # adapters on the attention projections and the feed-forward kernels

    def setup(self):
        c, r = self.config, self.lora_rank
        self.self_attn = Attention(c, r)
        self.norm_self, self.norm_ffn = layer_norm(c, self.dtype), layer_norm(c, self.dtype)
        if not c.melody:
            self.cross_attn, self.norm_cross = Attention(c, r), layer_norm(c, self.dtype)
        self.fc1 = Linear(c.ffn_dim, c.dim, ("mlp", "embed"), lora_rank=r)
        self.fc2 = Linear(c.dim, c.ffn_dim, ("embed", "mlp"), lora_rank=r)

    def cross_kv(self, cross: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values `[B, H, N, Dh]` of the (projected) text states `[B, N, D]`, computed once per generation."""
        return self.cross_attn.project_kv(cross)

    def __call__(self, x, self_bias, cross_kv, cross_bias, start, cache=None):
        """`x [B, T, D]` at cache slots start..start+T-1. `cache`: {"k", "v": blocks [B, H, n_i, Dh]} or
        None (then keys are this call's own). `cross_kv` None: no cross-attention (melody models).
        Returns (x, updated cache or None).

        Attention biases are additive (0 or `finfo.min`), as transformers does: `self_bias [1, 1, T, L]`
        (causal over absolute positions), `cross_bias [B, 1, 1, N]` (padded text positions masked)."""
        h = self.norm_self(x)
        q, k, v = self.self_attn.project_qkv(h)
        if cache is None:
            x = x + self.self_attn(q, [k], [v], self_bias)
        else:
            cache = {"k": write_cache(cache["k"], k, start), "v": write_cache(cache["v"], v, start)}
            x = x + self.self_attn(q, cache["k"], cache["v"], self_bias, last=start + x.shape[1] - 1)
        if cross_kv is not None:
            cross_k, cross_v = cross_kv
            x = x + self.cross_attn(self.cross_attn.query(self.norm_cross(x)), [cross_k], [cross_v], cross_bias)
        hidden = nn.with_logical_constraint(self.fc1(self.norm_ffn(x)), HIDDEN)
        x = x + self.fc2(jax.nn.gelu(hidden, approximate=False))
        return nn.with_logical_constraint(x, TOKENS), cache
