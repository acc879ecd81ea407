"""Melody chroma cosine similarity as audiocraft's `ChromaCosineSimilarityMetric` computes it (the
`chroma_cosine` metric of its MusicGen solver: 32 kHz, 12 bins, `radix2_exp` 14, argmax): both clips
converted to 32 kHz mono, their one-hot chroma (`musicgen_jax.chroma`, audiocraft's `ChromaExtractor`),
the cosine of each frame pair over the first ceil(T / hop) frames, summed over all clips' frames and
divided by their count (a frame-weighted mean)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from musicgen_jax.chroma import one_hot_chroma
from musicgen_jax.config import ChromaConfig

EPS = 1e-8  # the metric's cosine epsilon


def frame_cosines(generated: np.ndarray, melody: np.ndarray, config: ChromaConfig = ChromaConfig()) -> np.ndarray:
    """`[F]` float32: the cosine of each chroma frame pair of two mono 32 kHz clips `[T]` of equal length,
    F = ceil(T / hop) (the metric's `chroma_lens`)."""
    if generated.shape != melody.shape or generated.ndim != 1:
        raise ValueError(f"chroma cosine needs two mono clips of one length, got {generated.shape}, {melody.shape}")
    chroma = one_hot_chroma(jnp.stack([jnp.asarray(melody), jnp.asarray(generated)]), config)
    frames = math.ceil(generated.shape[0] / config.hop_length)
    a, b = chroma[0, :frames], chroma[1, :frames]
    norms = jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), EPS)
    return np.asarray(jnp.sum(a * b, axis=-1) / norms)
