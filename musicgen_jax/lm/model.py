"""The MusicGen LM (SPEC 2.2): summed codebook embeddings, sinusoidal positions, decoder layers with
cross-attention to the projected text states, final norm, one head per codebook.

Parameters: embeddings_{k}/embedding [card + 1, D]; text_projection/{kernel [text_dim, D], bias};
layers_{i}/...; out_norm/{scale, bias}; heads_{k}/kernel [D, card].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.transformer import NEG_INF, DecoderLayer, layer_norm, sinusoidal_embedding

_init = nn.initializers.normal(0.02)


class LMModel(nn.Module):
    config: LMConfig

    def setup(self):
        c = self.config
        self.embeddings = [nn.Embed(c.card + 1, c.dim, embedding_init=_init) for _ in range(c.num_codebooks)]
        self.text_projection = nn.Dense(c.dim, kernel_init=_init)
        self.layers = [DecoderLayer(c) for _ in range(c.num_layers)]
        self.out_norm = layer_norm(c)
        self.heads = [nn.Dense(c.card, use_bias=False, kernel_init=_init) for _ in range(c.num_codebooks)]

    def condition(self, text: jax.Array, text_mask: jax.Array):
        """`text [B, N, text_dim], text_mask [B, N]` -> per-layer cross-attention (k, v) and `cross_bias [B, 1, 1, N]`.

        Projected states are zeroed where the mask is 0, so an all-zero mask (the null condition of
        classifier-free guidance) yields a zero cross-attention output."""
        mask = text_mask.astype(jnp.float32)
        cross = self.text_projection(text) * mask[..., None]
        bias = ((1.0 - mask) * NEG_INF)[:, None, None, :]
        return [layer.cross_kv(cross) for layer in self.layers], bias

    def decode(self, sequence: jax.Array, cross_kv, cross_bias: jax.Array, start=0, cache=None):
        """`sequence [B, K, T]` (delay-pattern tokens, values in [0, card]) at positions start..start+T-1
        -> (logits [B, K, T, card] float32, updated cache). Without a cache, attention is causal within
        the call; with one (`init_cache`), over every cached position up to the query's."""
        b, _, t = sequence.shape
        x = sum(embed(sequence[:, k]) for k, embed in enumerate(self.embeddings))
        positions = start + jnp.arange(t)
        x = x + sinusoidal_embedding(positions, self.config.dim, self.config.max_period)[None]
        keys = positions if cache is None else jnp.arange(cache[0]["k"].shape[2])
        self_bias = jnp.where(keys[None, :] <= positions[:, None], 0.0, NEG_INF)[None, None]
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, self_bias, cross_kv[i], cross_bias, start, None if cache is None else cache[i])
            new_cache.append(layer_cache)
        x = self.out_norm(x)
        logits = jnp.stack([head(x) for head in self.heads], axis=1)
        return logits, (None if cache is None else new_cache)

    def __call__(self, sequence: jax.Array, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        """Teacher-forced logits `[B, K, S, card]` of a whole delay-pattern sequence `[B, K, S]`."""
        cross_kv, cross_bias = self.condition(text, text_mask)
        return self.decode(sequence, cross_kv, cross_bias)[0]


def init_cache(config: LMConfig, batch: int, length: int, dtype=jnp.float32) -> list[dict]:
    """Zeroed self-attention KV cache for `length` positions: per layer {"k", "v": [B, H, L, Dh]}."""
    shape = (batch, config.num_heads, length, config.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)]
