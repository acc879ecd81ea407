"""T5 encoder (audiocraft's `T5Conditioner`), Flax linen, inference-exact to transformers' `T5EncoderModel` in float32.

MusicGen's text condition: the encoder's hidden states `[B, N, d_model]` of the tokenized prompts
(`T5Encoder`), which the LM projects and attends to. T5 stays frozen everywhere (sampling, the train step,
`prepare --text-encoder`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.config import T5Config
from musicgen_jax.sharding import IDS, TOKENS, logical_specs

_dense_init = nn.initializers.normal(0.05)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets of (key - query) for a `length x length` attention, `[N, N]` int32.

    Half the buckets per direction; within a direction, half exact offsets, the rest
    logarithmic up to `max_distance`. Static in the length, so computed with numpy at trace time.
    """
    position = np.arange(length)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    # float32 like the reference, so that offsets on bucket boundaries round the same way
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, variance in float32."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],))
        variance = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        return scale * (x * jax.lax.rsqrt(variance + self.eps)).astype(scale.dtype)


def _dense(name: str, features: int, axes: tuple[str, str]):
    return nn.Dense(features, use_bias=False, kernel_init=nn.with_logical_partitioning(_dense_init, axes), name=name)


class SelfAttention(nn.Module):
    """Unscaled dot-product attention with an additive `bias [B or 1, H, N, N]`."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        c = self.config
        b, n, _ = x.shape
        inner = c.num_heads * c.d_kv
        q, k, v = (_dense(name, inner, ("embed", "heads"))(x).reshape(b, n, c.num_heads, c.d_kv) for name in "qkv")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) + bias
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, inner)
        return _dense("o", c.d_model, ("heads", "embed"))(out)


class FeedForward(nn.Module):
    """ReLU MLP (`wi`, `wo`) or gated tanh-GELU MLP (`wi_0` gate, `wi_1` linear, `wo`)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, up = self.config, ("embed", "mlp")
        if c.gated:
            h = jax.nn.gelu(_dense("wi_0", c.d_ff, up)(x), approximate=True) * _dense("wi_1", c.d_ff, up)(x)
        else:
            h = jax.nn.relu(_dense("wi", c.d_ff, up)(x))
        return _dense("wo", c.d_model, ("mlp", "embed"))(h)


class T5Block(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        eps = self.config.layer_norm_epsilon
        x = x + SelfAttention(self.config, name="attention")(RMSNorm(eps, name="attention_norm")(x), bias)
        x = x + FeedForward(self.config, name="mlp")(RMSNorm(eps, name="mlp_norm")(x))
        return nn.with_logical_constraint(x, TOKENS)


class T5Encoder(nn.Module):
    """`ids [B, N] int, mask [B, N] {0,1} -> hidden [B, N, d_model] float32`.

    Masked keys get `finfo.min` added to their scores, as transformers does, so unmasked positions do
    not depend on how far a batch is padded; a row with no unmasked key attends uniformly.

    Parameters (`{"params": ...}`):
      shared/embedding               [vocab, d_model]   token embedding (shared with the T5 decoder)
      relative_attention_bias        [buckets, heads]   block 0's table, shared by every block
      block_{i}/attention/{q,k,v}    [d_model, heads * d_kv], attention/o [heads * d_kv, d_model]
      block_{i}/attention_norm/scale, block_{i}/mlp_norm/scale   [d_model]
      block_{i}/mlp/{wi | wi_0, wi_1} [d_model, d_ff], mlp/wo [d_ff, d_model]
      final_norm/scale               [d_model]

    Logical axes (`musicgen_jax.sharding`): kernels ("embed", "heads" | "mlp") and back, the embedding
    ("vocab", "embed"), norm scales ("embed",); activations `sharding.TOKENS`.
    """

    config: T5Config

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        c = self.config
        ids = nn.with_logical_constraint(ids, IDS)
        x = nn.Embed(
            c.vocab_size,
            c.d_model,
            name="shared",
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
        )(ids)
        x = nn.with_logical_constraint(x, TOKENS)
        table = self.param(
            "relative_attention_bias",
            nn.with_logical_partitioning(_dense_init, (None, None)),
            (c.relative_attention_num_buckets, c.num_heads),
        )
        buckets = relative_position_buckets(
            ids.shape[1], c.relative_attention_num_buckets, c.relative_attention_max_distance
        )
        position_bias = jnp.transpose(table[buckets], (2, 0, 1))[None]  # [1, H, N, N]
        mask_bias = (1.0 - mask[:, None, None, :].astype(jnp.float32)) * jnp.finfo(jnp.float32).min
        bias = position_bias + mask_bias
        for i in range(c.num_layers):
            x = T5Block(c, name=f"block_{i}")(x, bias)
        return nn.with_logical_constraint(RMSNorm(c.layer_norm_epsilon, name="final_norm")(x), TOKENS)


def param_specs(config: T5Config):
    """The logical `PartitionSpec` of every encoder parameter (for `musicgen_jax.sharding.place`)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return logical_specs(lambda: T5Encoder(config).init(jax.random.key(0), ids, ids))
