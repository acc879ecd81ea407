"""The LM training loss (audiocraft's `MusicGenSolver._compute_cross_entropy`): per-codebook cross-entropy over the
delay-interleaved sequence, masked to the positions that hold a real frame of the crop, averaged over codebooks.

A crop `codes [B, K, T]` with its validity `mask [B, K, T]` becomes the pattern sequence `[B, K, S]`
(S = T + max(delays) + 1; step 0 and the delayed gaps hold the special token `card`, as do the padded
frames, like audiocraft's `padding_with_special_token`). The model reads steps 0..S-2 and predicts
steps 1..S-1; a target counts when it is a real, unpadded frame. Codebook k's cross-entropy is the mean
over its counted targets in the whole batch, and the loss is the mean over codebooks: the quantity of
audiocraft's solver and of transformers' `MusicgenForCausalLM` loss (labels at the pad id ignored).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from musicgen_jax.lm import pattern


def training_sequences(
    codes: jax.Array, mask: jax.Array, delays: Sequence[int], special: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`codes, mask [B, K, T]` -> `(inputs, targets [B, K, S - 1] int32, valid [B, K, S - 1] bool)`."""
    codes = jnp.where(mask, codes, special).astype(jnp.int32)
    sequence = pattern.build(codes, delays, special)
    valid = pattern.build(mask.astype(jnp.int32), delays, 0).astype(bool)
    return sequence[..., :-1], sequence[..., 1:], valid[..., 1:]


def nll_sums(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`logits [B, K, L, card]`, `targets, valid [B, K, L]` -> `(sum [K], count [K])` float32: per codebook,
    the summed negative log-likelihood of the valid targets and their number."""
    safe = jnp.where(valid, targets, 0)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    weight = valid.astype(jnp.float32)
    return jnp.sum(nll * weight, axis=(0, 2)), jnp.sum(weight, axis=(0, 2))


def cross_entropy(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(loss [], ce [K])` float32: ce_k the mean negative log-likelihood over codebook k's valid targets
    (0 when it has none), the loss their mean."""
    return mean_cross_entropy(*nll_sums(logits, targets, valid))


def mean_cross_entropy(total: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`nll_sums`' `(sum [K], count [K])` -> `cross_entropy`'s `(loss [], ce [K])`."""
    ce = total / jnp.maximum(count, 1.0)
    return jnp.mean(ce), ce
