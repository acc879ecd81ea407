"""CLAP text consistency, as audiocraft's `CLAPTextConsistencyMetric` computes it: each clip converted to
48 kHz mono (`convert_audio(wav, sr, 48000, 1)`: julius' `resample_frac`, then the channel mean), embedded
by CLAP's audio tower, its description by the text tower, and the cosine of the two. audiocraft averages
the cosines over all clips; `text_consistency` returns them per clip ([N]) so a caller can average and
bootstrap.

Clips longer than 10 s are cropped at a random offset, as laion_clap does (here drawn per clip from
`seed`); audiocraft embeds each batch padded to its longest clip, this embeds each clip at its own length.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from musicgen_jax.metrics.clap.model import CLAP
from musicgen_jax.metrics.resample import convert_audio


def cosine(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """`[N, D]`, `[N, D]` -> `[N]`: torch's `cosine_similarity(a, b, dim=1, eps=1e-8)`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), eps)
    return ((a * b).sum(1) / norms).astype(np.float32)


def text_consistency(
    model: CLAP, clips: Sequence[np.ndarray], texts: Sequence[str], sample_rate: int, seed: int = 0
) -> np.ndarray:
    """`[N]` cosines between each clip (`[C, T]` or `[T]` at `sample_rate`) and its description. Clips of the
    same length after conversion are embedded in batches; a clip longer than 10 s at 48 kHz gets its crop
    offset from `model.crop_offsets` with `seed` plus its index."""
    if len(clips) != len(texts):
        raise ValueError(f"{len(clips)} clips but {len(texts)} descriptions")
    if not len(clips):
        raise ValueError("no clips to score")
    audio = [convert_audio(clip, sample_rate, model.config.audio.sample_rate) for clip in clips]
    groups = defaultdict(list)
    for i, wav in enumerate(audio):
        groups[len(wav)].append(i)
    audio_embeddings = np.zeros((len(clips), model.config.audio.projection_dim), np.float32)
    for length, index in groups.items():
        offsets = np.concatenate([model.crop_offsets(1, length, seed + i) for i in index])
        audio_embeddings[index] = model.audio_embeddings(np.stack([audio[i] for i in index]), offsets)
    return cosine(audio_embeddings, model.text_embeddings(list(texts)))
