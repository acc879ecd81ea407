"""The MusicGen LM (SPEC 2.2): summed codebook embeddings, sinusoidal positions, decoder layers with
cross-attention to the projected text states, final norm, one head per codebook.

Parameters: embeddings_{k}/embedding [card + 1, D]; text_projection/{kernel [D, text_dim], bias};
layers_{i}/...; out_norm/{scale, bias}; heads_{k}/kernel [card, D]. Linear kernels are [out, in]
(`transformer.Linear`). With `scan_layers=True` the layers are one `lax.scan` over stacked parameters
`layers/... [num_layers, ...]` (less to compile; `stack_layers` / `unstack_layers` convert):
converted checkpoints are stored unstacked.

Per-layer state follows the same layout: the cross-attention keys/values and the KV cache are lists
over layers, or (scanned) single trees stacked on a leading layer axis.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.transformer import (
    CACHE_BLOCK,
    HEADS_AXES,
    NEG_INF,
    TOKENS_AXES,
    DecoderLayer,
    cache_blocks,
    Linear,
    initializer,
    layer_norm,
    sinusoidal_embedding,
)

_LAYER = re.compile(r"layers_(\d+)$")
_SCAN = dict(variable_axes={"params": 0}, split_rngs={"params": True}, metadata_params={nn.PARTITION_NAME: "layers"})


class LMModel(nn.Module):
    config: LMConfig
    scan_layers: bool = False

    def setup(self):
        c = self.config
        self.embeddings = [nn.Embed(c.card + 1, c.dim, embedding_init=initializer(None, "embed"))  # card + 1: odd
                           for _ in range(c.num_codebooks)]
        self.text_projection = Linear(c.dim, ("embed", "text_embed"), use_bias=True)
        if self.scan_layers:
            self.layers = DecoderLayer(c)
        else:
            self.layers = [DecoderLayer(c) for _ in range(c.num_layers)]
        self.out_norm = layer_norm(c)
        self.heads = [Linear(c.card, ("vocab", "embed")) for _ in range(c.num_codebooks)]

    def _scan(self, body, carry, *xs, in_axes):
        return nn.scan(body, in_axes=in_axes, length=self.config.num_layers, **_SCAN)(self.layers, carry, *xs)

    def condition(self, text: jax.Array, text_mask: jax.Array):
        """`text [B, N, text_dim], text_mask [B, N]` -> per-layer cross-attention (k, v) and `cross_bias [B, 1, 1, N]`.

        Projected states are zeroed where the mask is 0, so an all-zero mask (the null condition of
        classifier-free guidance) yields a zero cross-attention output."""
        mask = text_mask.astype(jnp.float32)
        cross = self.text_projection(text) * mask[..., None]
        bias = ((1.0 - mask) * NEG_INF)[:, None, None, :]
        if self.scan_layers:
            _, kv = self._scan(lambda layer, c, _: (c, layer.cross_kv(c)), cross, None, in_axes=(0,))
            return kv, bias
        return [layer.cross_kv(cross) for layer in self.layers], bias

    def decode(self, sequence: jax.Array, cross_kv, cross_bias: jax.Array, start=0, cache=None):
        """`sequence [B, K, T]` (delay-pattern tokens, values in [0, card]) at positions start..start+T-1
        -> (logits [B, K, T, card] float32, updated cache). Without a cache, attention is causal within
        the call; with one (`init_cache`), over every cached position up to the query's."""
        t = sequence.shape[-1]
        x = sum(embed(sequence[:, k]) for k, embed in enumerate(self.embeddings))
        positions = start + jnp.arange(t)
        x = x + sinusoidal_embedding(positions, self.config.dim, self.config.max_period)[None]
        x = nn.with_logical_constraint(x, TOKENS_AXES)
        keys = positions if cache is None else jnp.arange(cache_length(cache, self.scan_layers))
        self_bias = jnp.where(keys[None, :] <= positions[:, None], 0.0, NEG_INF)[None, None]
        if self.scan_layers:
            def body(layer, x, kv, layer_cache):
                return layer(x, self_bias, kv, cross_bias, start, layer_cache)

            x, cache = self._scan(body, x, cross_kv, cache, in_axes=(0, 0))
        else:
            layer_caches = [None] * len(self.layers) if cache is None else cache
            new_cache = []
            for layer, kv, layer_cache in zip(self.layers, cross_kv, layer_caches, strict=True):
                x, layer_cache = layer(x, self_bias, kv, cross_bias, start, layer_cache)
                new_cache.append(layer_cache)
            cache = None if cache is None else new_cache
        x = self.out_norm(x)
        logits = jnp.stack([head(x) for head in self.heads], axis=1)
        return nn.with_logical_constraint(logits, ("batch", None, "length", "vocab")), cache

    def __call__(self, sequence: jax.Array, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        """Teacher-forced logits `[B, K, S, card]` of a whole delay-pattern sequence `[B, K, S]`."""
        cross_kv, cross_bias = self.condition(text, text_mask)
        return self.decode(sequence, cross_kv, cross_bias)[0]


def init_cache(config: LMConfig, batch: int, length: int, dtype=jnp.float32, scan_layers: bool = False,
               block: int = CACHE_BLOCK):
    """Zeroed self-attention KV cache for `length` positions in blocks (`cache_blocks(length, block)`):
    per layer {"k", "v": [[B, H, n_i, Dh], ...]}, or (scanned) one such tree with a leading layer axis
    on every block."""
    sizes = cache_blocks(length, block)
    lead = (config.num_layers,) if scan_layers else ()
    axes = ("layers",) * len(lead) + HEADS_AXES

    def block(n: int) -> jax.Array:
        return nn.with_logical_constraint(jnp.zeros((*lead, batch, config.num_heads, n, config.head_dim), dtype), axes)

    def layer() -> dict:
        return {name: [block(n) for n in sizes] for name in ("k", "v")}

    return layer() if scan_layers else [layer() for _ in range(config.num_layers)]


def cache_length(cache, scan_layers: bool = False) -> int:
    """The number of positions an `init_cache` cache holds."""
    return sum(block.shape[-2] for block in (cache if scan_layers else cache[0])["k"])


def init_params(config: LMConfig, key: jax.Array, scan_layers: bool = False):
    """Random parameters `{"params": ...}`, each boxed with its logical axis names (`nn.unbox` strips
    them; `jax.eval_shape(init_params, ...)` gives shapes and specs without computing)."""
    seq = jnp.zeros((1, config.num_codebooks, 1), jnp.int32)
    text, mask = jnp.zeros((1, 1, config.text_dim)), jnp.ones((1, 1), jnp.int32)
    return LMModel(config, scan_layers).init(key, seq, text, mask)


def param_specs(config: LMConfig, scan_layers: bool = False):
    """The logical `PartitionSpec` of every parameter (for `musicgen_jax.sharding.shard`)."""
    return nn.get_partition_spec(jax.eval_shape(lambda: init_params(config, jax.random.key(0), scan_layers)))


def stack_layers(params):
    """Unrolled parameters (`layers_{i}/...`) -> the scanned layout (`layers/... [num_layers, ...]`)."""
    inner = dict(params["params"])
    index = {int(m.group(1)): k for k in inner if (m := _LAYER.match(k))}
    if not index or sorted(index) != list(range(len(index))):
        raise ValueError(f"expected layers_0..layers_N-1, found {[index[i] for i in sorted(index)]}")
    layers = [inner.pop(index[i]) for i in range(len(index))]
    inner["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return {**params, "params": inner}


def unstack_layers(params):
    """The scanned layout -> unrolled parameters (inverse of `stack_layers`)."""
    inner = dict(params["params"])
    stacked = inner.pop("layers")
    count = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(count):
        inner[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return {**params, "params": inner}
