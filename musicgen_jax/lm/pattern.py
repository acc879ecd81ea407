"""The delay interleaving pattern (audiocraft's `DelayedPatternProvider`) as index arithmetic, usable inside jit.

Sequence position s of codebook k holds frame t = s - 1 - delays[k] when 0 <= t < T, else the
special token: step 0 is all special tokens, and codebook k starts `delays[k]` steps late.
S = T + max(delays) + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def num_steps(frames: int, delays: Sequence[int]) -> int:
    """Pattern length S for `frames` frames."""
    return frames + max(delays) + 1


def num_frames(steps: int, delays: Sequence[int]) -> int:
    """Frames T held by a pattern of `steps` steps."""
    return steps - max(delays) - 1


def frame_index(steps: int, delays: Sequence[int]) -> np.ndarray:
    """`[K, S]` int32: the frame each position holds (may be < 0 or >= T: then a special token)."""
    return np.arange(steps)[None, :] - 1 - np.asarray(delays)[:, None]


def build(codes: jnp.ndarray, delays: Sequence[int], special: int) -> jnp.ndarray:
    """`codes [B, K, T] -> sequence [B, K, S]` with special tokens where no frame sits."""
    frames = codes.shape[-1]
    index = frame_index(num_steps(frames, delays), delays)
    valid = (index >= 0) & (index < frames)
    gathered = jnp.take_along_axis(codes, jnp.asarray(np.clip(index, 0, frames - 1))[None], axis=-1)
    return jnp.where(valid[None], gathered, special)


def revert(sequence: jnp.ndarray, delays: Sequence[int]) -> jnp.ndarray:
    """`sequence [B, K, S] -> codes [B, K, T]`: codebook k's frame t sits at position t + 1 + delays[k]."""
    frames = num_frames(sequence.shape[-1], delays)
    index = np.arange(frames)[None, :] + 1 + np.asarray(delays)[:, None]
    return jnp.take_along_axis(sequence, jnp.asarray(index)[None], axis=-1)


def valid_mask(steps: int, frames: int, delays: Sequence[int]) -> np.ndarray:
    """`[K, steps]` bool: positions that hold one of `frames` frames (not a special token)."""
    index = frame_index(steps, delays)
    return (index >= 0) & (index < frames)
