"""The MusicGen LM (audiocraft's `LMModel.forward`): summed codebook embeddings, sinusoidal positions, decoder layers
with cross-attention to the projected text states (melody models: none, the projected chroma and text are
prepended to the audio tokens instead: audiocraft's `ConditionFuser`, prepend), final norm, one head per codebook.

One module for sampling (`condition`, then `decode` steps over a KV cache) and training (`__call__`,
teacher-forced), in the converted checkpoints' layout or with its layers scanned (`init_params`).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.transformer import (
    CACHE_BLOCK,
    NEG_INF,
    DecoderLayer,
    Linear,
    cache_blocks,
    initializer,
    layer_norm,
    products,
    sinusoidal_embedding,
)
from musicgen_jax.sharding import HEADS, LOGITS, TOKENS, logical_specs

_LAYER = re.compile(r"layers_(\d+)$")
# What the backward pass keeps of each layer's forward (`jax.checkpoint` policies); the rest is recomputed.
REMAT_POLICIES = {
    "none": None,  # no rematerialization: every intermediate is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # only the layer inputs
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # also the projections' outputs
}
_SCAN = dict(variable_axes={"params": 0}, split_rngs={"params": True}, metadata_params={nn.PARTITION_NAME: "layers"})


class LMModel(nn.Module):
    """`scan_layers`: the layers as one `lax.scan` over stacked parameters (less to compile; `init_params`).
    Training options of the same model: `remat`: a `REMAT_POLICIES` name, what the backward pass of each layer
    keeps (the rest is recomputed; in either layout). `dtype`: the compute dtype (float32, or bfloat16 for
    mixed precision over float32 parameters; logits float32).
    `lora_rank` > 0: low-rank adapters on the layers' attention and feed-forward kernels (`Linear`)."""

    config: LMConfig
    scan_layers: bool = False
    remat: str = "none"
    dtype: Any = jnp.float32
    lora_rank: int = 0

    def setup(self):
        c = self.config
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {self.remat!r}; one of {', '.join(REMAT_POLICIES)}")
        self.embeddings = [
            nn.Embed(c.card + 1, c.dim, embedding_init=initializer(None, "embed"), dtype=self.dtype)
            for _ in range(c.num_codebooks)
        ]  # card + 1: odd
        self.text_projection = Linear(c.dim, c.text_dim, ("embed", "text_embed"), use_bias=True)
        if c.melody:
            self.chroma_projection = Linear(c.dim, c.chroma_bins, ("embed", "chroma"), use_bias=True)
        if self.scan_layers:
            self.layers = DecoderLayer(c, self.dtype, self.lora_rank)
        else:
            self.layers = [DecoderLayer(c, self.dtype, self.lora_rank) for _ in range(c.num_layers)]
        self.out_norm = layer_norm(c, self.dtype)
        self.heads = [Linear(c.card, c.dim, ("vocab", "embed")) for _ in range(c.num_codebooks)]

    def _scan(self, body, carry, *xs, in_axes):
        return nn.scan(body, in_axes=in_axes, length=self.config.num_layers, **_SCAN)(self.layers, carry, *xs)

    def condition(
        self, text: jax.Array, text_mask: jax.Array, chroma: jax.Array | None = None, text_length=None
    ) -> dict:
        """The conditioning `context` of `decode`, from `text [B, N, text_dim]`, `text_mask [B, N]`.

        The projected text is zeroed where the mask is 0 (both references), so an all-zero mask (the null
        condition of classifier-free guidance) carries no text. Text models: {"cross_kv": per-layer (k, v)
        [B, H, N, Dh], "cross_bias": [B, 1, 1, N]} (padded text masked in cross-attention, as transformers).
        Melody models, with `chroma [B, chroma_frames, chroma_bins]` (one-hot, `null_chroma` for none):
        {"prefix": [B, chroma_frames + N, D], "gap": int32 []}, the projected chroma then the projected
        text, attended to causally like audio tokens (zeroed text positions are not masked, as in both
        references). `text_length` (may be traced): only the first `text_length` text positions belong to
        the batch, the rest is bucket padding, which is moved to the front of the prefix and masked from
        every query (`gap` slots, not counted in the positions); None: all N."""
        mask = text_mask.astype(self.dtype)
        projected = self.text_projection(text.astype(self.dtype)) * mask[..., None]
        if self.config.melody:
            prefix = jnp.concatenate([self.chroma_projection(chroma.astype(self.dtype)), projected], axis=1)
            gap = jnp.int32(0) if text_length is None else text.shape[1] - jnp.asarray(text_length, jnp.int32)
            return {"prefix": nn.with_logical_constraint(jnp.roll(prefix, gap, axis=1), TOKENS), "gap": gap}
        bias = ((1.0 - text_mask.astype(jnp.float32)) * NEG_INF)[:, None, None, :]
        if self.scan_layers:
            _, kv = self._scan(lambda layer, c, _: (c, layer.cross_kv(c)), projected, None, in_axes=(0,))
        else:
            kv = [layer.cross_kv(projected) for layer in self.layers]
        return {"cross_kv": kv, "cross_bias": bias}

    def decode(self, sequence: jax.Array, context: dict, start=0, cache=None, prefix: bool = False):
        """`sequence [B, K, T]` (delay-pattern tokens, values in [0, card]) at pattern steps start..start+T-1
        -> (logits [B, K, T, card] float32, updated cache). `context`: from `condition`.

        Melody models keep the prefix in the first P = `context["prefix"].shape[1]` cache slots, step s in
        slot P + s; `prefix=True` (static, with start 0) runs the prefix in the same call, before the steps.
        Without a cache, attention is causal within the call; with one (`init_cache` of P + steps slots),
        over every cached slot up to the query's. Positions count from the first unmasked slot."""
        t = sequence.shape[-1]
        x = sum(embed(sequence[:, k]) for k, embed in enumerate(self.embeddings))
        offset, gap = (context["prefix"].shape[1], context["gap"]) if self.config.melody else (0, 0)
        first = start if prefix else offset + start  # this call's first cache slot
        if prefix:
            x = jnp.concatenate([context["prefix"], x], axis=1)
        slots = first + jnp.arange(x.shape[1])
        x = x + sinusoidal_embedding(slots - gap, self.config.dim, self.config.max_period)[None].astype(x.dtype)
        x = nn.with_logical_constraint(x, TOKENS)
        keys = slots if cache is None else jnp.arange(cache_length(cache, self.scan_layers))
        visible = (keys[None, :] <= slots[:, None]) & (keys[None, :] >= gap)
        self_bias = jnp.where(visible, 0.0, NEG_INF)[None, None]
        cross_kv, cross_bias = context.get("cross_kv"), context.get("cross_bias")

        def body(layer, x, kv, layer_cache):
            return layer(x, self_bias, kv, cross_bias, first, layer_cache)

        if self.remat != "none":
            body = nn.remat(body, prevent_cse=not self.scan_layers, policy=REMAT_POLICIES[self.remat])
        if self.scan_layers:
            x, cache = self._scan(body, x, cross_kv, cache, in_axes=(0, 0))
        else:
            layer_caches = [None] * len(self.layers) if cache is None else cache
            layer_kv = [None] * len(self.layers) if cross_kv is None else cross_kv
            new_cache = []
            for layer, kv, layer_cache in zip(self.layers, layer_kv, layer_caches, strict=True):
                x, layer_cache = body(layer, x, kv, layer_cache)
                new_cache.append(layer_cache)
            cache = None if cache is None else new_cache
        x = self.out_norm(x[:, x.shape[1] - t :])
        logits = jnp.stack(products(self.heads, x), axis=1).astype(jnp.float32)
        return nn.with_logical_constraint(logits, LOGITS), cache

    def __call__(
        self,
        sequence: jax.Array,
        text: jax.Array,
        text_mask: jax.Array,
        chroma: jax.Array | None = None,
        text_length=None,
    ) -> jax.Array:
        """Teacher-forced logits `[B, K, S, card]` of a whole delay-pattern sequence `[B, K, S]`
        (melody models: `chroma [B, chroma_frames, chroma_bins]`; `text_length` as in `condition`)."""
        context = self.condition(text, text_mask, chroma, text_length)
        return self.decode(sequence, context, prefix=self.config.melody)[0]


def null_chroma(config: LMConfig, batch: int) -> jax.Array:
    """The chroma of no melody `[batch, chroma_frames, chroma_bins]`: bin 0 in every frame, what both
    references condition on for silence (audiocraft's `ChromaStemConditioner`) and for the null condition of
    guidance."""
    return jax.nn.one_hot(jnp.zeros((batch, config.chroma_frames), jnp.int32), config.chroma_bins)


def init_cache(
    config: LMConfig, batch: int, length: int, dtype=jnp.float32, scan_layers: bool = False, block: int = CACHE_BLOCK
):
    """Zeroed self-attention KV cache for `length` positions in blocks (`cache_blocks(length, block)`):
    per layer {"k", "v": [[B, H, n_i, Dh], ...]}, or (scanned) one such tree with a leading layer axis
    on every block."""
    sizes = cache_blocks(length, block)
    lead = (config.num_layers,) if scan_layers else ()
    axes = ("layers",) * len(lead) + HEADS

    def block(n: int) -> jax.Array:
        return nn.with_logical_constraint(jnp.zeros((*lead, batch, config.num_heads, n, config.head_dim), dtype), axes)

    def layer() -> dict:
        return {name: [block(n) for n in sizes] for name in ("k", "v")}

    return layer() if scan_layers else [layer() for _ in range(config.num_layers)]


def cache_length(cache, scan_layers: bool = False) -> int:
    """The number of positions an `init_cache` cache holds."""
    return sum(block.shape[-2] for block in (cache if scan_layers else cache[0])["k"])


def init_params(config: LMConfig, key: jax.Array, scan_layers: bool = False, lora_rank: int = 0):
    """Random parameters `{"params": ...}` (with `lora_rank` adapters), each boxed with its logical axis names
    (`nn.unbox` strips them; `jax.eval_shape(init_params, ...)` gives shapes and specs without computing).

    Parameters: embeddings_{k}/embedding [card + 1, D]; text_projection/{kernel [D, text_dim], bias};
    melody: chroma_projection/{kernel [D, chroma_bins], bias}; layers_{i}/...; out_norm/{scale, bias};
    heads_{k}/kernel [card, D]. Linear kernels are [out, in] (`transformer.Linear`). With `scan_layers=True`
    the layers are one `lax.scan` over stacked parameters `layers/... [num_layers, ...]` (`stack_layers` /
    `unstack_layers` convert): converted checkpoints are stored unstacked. Per-layer state follows the same
    layout: the cross-attention keys/values and the KV cache are lists over layers, or (scanned) single
    trees stacked on a leading layer axis.
    """
    seq = jnp.zeros((1, config.num_codebooks, 1), jnp.int32)
    text, mask = jnp.zeros((1, 1, config.text_dim)), jnp.ones((1, 1), jnp.int32)
    chroma = null_chroma(config, 1) if config.melody else None
    return LMModel(config, scan_layers, lora_rank=lora_rank).init(key, seq, text, mask, chroma)


INFERENCE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def cast_params(params, dtype):
    """Parameters for inference in `dtype` (a name of `INFERENCE_DTYPES` or a dtype): the matrices (kernels,
    embeddings) stored in it, the vectors (norm scales, biases) kept in float32; `compute_dtype` of the
    result is `dtype`, so `LMModel(config, dtype=compute_dtype(params))` multiplies in it."""
    if isinstance(dtype, str):
        if dtype not in INFERENCE_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(INFERENCE_DTYPES)}")
        dtype = INFERENCE_DTYPES[dtype]

    def cast(x):
        target = dtype if x.ndim >= 2 else jnp.float32
        return x if x.dtype == target else x.astype(target)

    return jax.tree.map(cast, params)


def compute_dtype(params):
    """The dtype the LM computes in with `params`: that of its embeddings (float32 as converted or trained,
    half precision after `cast_params`)."""
    return params["params"]["embeddings_0"]["embedding"].dtype


def param_specs(config: LMConfig, scan_layers: bool = False):
    """The logical `PartitionSpec` of every parameter (for `musicgen_jax.sharding.shard`)."""
    return logical_specs(lambda: init_params(config, jax.random.key(0), scan_layers))


def stack_layers(params):
    """Unrolled parameters (`layers_{i}/...`) -> the scanned layout (`layers/... [num_layers, ...]`)."""
    inner = dict(params["params"])
    index = {int(m.group(1)): k for k in inner if (m := _LAYER.match(k))}
    if not index or sorted(index) != list(range(len(index))):
        raise ValueError(f"expected layers_0..layers_N-1, found {[index[i] for i in sorted(index)]}")
    layers = [inner.pop(index[i]) for i in range(len(index))]
    inner["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    return {**params, "params": inner}


def scanned(params) -> bool:
    """Whether `params` are in the scanned layout (`stack_layers`)."""
    return "layers" in params["params"]


def unstack_layers(params):
    """The scanned layout -> unrolled parameters (inverse of `stack_layers`)."""
    inner = dict(params["params"])
    stacked = inner.pop("layers")
    count = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(count):
        inner[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return {**params, "params": inner}


def stereo_from_mono(params):
    """Parameters of a mono LM (codebooks 0..K-1) -> those of its stereo version, 2K interleaved codebooks
    [L0, R0, L1, R1, ...]: codebook k's embedding and head are mono codebook k // 2's (audiocraft's
    initialization of its stereo models); everything else is shared."""
    inner = dict(params["params"])
    for name in ("embeddings", "heads"):
        pattern = re.compile(rf"{name}_(\d+)$")
        old = [
            inner.pop(key)
            for key in sorted(
                (k for k in list(inner) if pattern.match(k)), key=lambda k: int(pattern.match(k).group(1))
            )
        ]
        inner.update({f"{name}_{k}": old[k // 2] for k in range(2 * len(old))})
    return {**params, "params": inner}


def is_lora(path: tuple) -> bool:
    """Whether a parameter path (`jax.tree_util` keys or names) is a low-rank adapter's."""
    return any(str(getattr(k, "key", k)).startswith("lora_") for k in path)


def merge_lora(params):
    """Parameters with adapters (`lora_rank` > 0, either layout) -> the plain model's: each adapted kernel
    becomes `kernel + B A`, the adapters dropped (what sampling and export load)."""

    def merge(tree):
        if not isinstance(tree, dict):
            return tree
        if "lora_a" in tree:
            a, b = tree["lora_a"], tree["lora_b"]
            rest = {k: v for k, v in tree.items() if k not in ("lora_a", "lora_b")}
            return {**rest, "kernel": tree["kernel"] + jnp.matmul(b, a, precision=jax.lax.Precision.HIGHEST)}
        return {k: merge(v) for k, v in tree.items()}

    return merge(params)
