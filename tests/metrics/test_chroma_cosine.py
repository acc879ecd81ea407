"""Chroma cosine similarity against audiocraft's `ChromaCosineSimilarityMetric` (its MusicGen solver's settings:
32 kHz, 12 bins, `radix2_exp` 14, argmax), with torchaudio's `Spectrogram` stood in by the torch STFT code of
tests/test_chroma.py (torchaudio has no build for this torch). Exact: one-hot frames agree, the mean is a
ratio of the same integers."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from musicgen_jax.metrics import chroma_cosine
from tests.audiocraft_api import _Absent, _Finder
from tests.test_chroma import _Spectrogram

RATE = 32_000


def _tones(freqs, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    notes = np.repeat(rng.choice(freqs, size=int(seconds * 2) + 1), RATE // 2)[: t.size]
    return (0.4 * np.sin(2 * np.pi * np.cumsum(notes) / RATE) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


class _Batched(_Spectrogram):
    """torchaudio's `Spectrogram(n_fft, win_length=n_fft, hop_length, ...)` over any leading dimensions."""

    def __init__(self, n_fft, win_length, hop_length, **settings):
        super().__init__(n_fft, hop_length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        out = super().forward(waveform.reshape(-1, waveform.shape[-1]))
        return out.reshape(*waveform.shape[:-1], *out.shape[-2:])


@pytest.fixture(scope="module")
def reference_metric():
    """audiocraft's metric class; absent packages it imports (flashy, ...) are stand-ins while importing."""
    finder, before = _Finder(), set(sys.modules)
    sys.meta_path.append(finder)
    try:
        from audiocraft.metrics import chroma_cosinesim
        from audiocraft.modules import chroma
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if isinstance(sys.modules[name], _Absent):
                del sys.modules[name]
    chroma.torchaudio = types.SimpleNamespace(transforms=types.SimpleNamespace(Spectrogram=_Batched))
    return lambda: chroma_cosinesim.ChromaCosineSimilarityMetric(RATE, 12, 14, True)


def test_equals_audiocraft_metric(reference_metric):
    scale = (261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88)
    melodies = [_tones(scale, 6.0, seed) for seed in range(3)]
    generated = [
        melodies[0],  # the melody itself: cosine 1
        np.concatenate([melodies[1][: 3 * RATE], _tones(scale, 3.0, 10)]),  # the melody, then another
        melodies[2] + _tones((110.0, 146.8), 6.0, 11),  # the melody over a bass line
    ]
    metric = reference_metric()
    lengths = torch.tensor([6 * RATE] * 3)
    metric.update(
        torch.from_numpy(np.stack(generated))[:, None],
        torch.from_numpy(np.stack(melodies))[:, None],
        lengths,
        torch.tensor([RATE] * 3),
    )
    cosines = [chroma_cosine.frame_cosines(g, m) for g, m in zip(generated, melodies)]
    assert all(c.shape == (47,) for c in cosines)  # ceil(192000 / 4096)
    assert cosines[0].min() == 1.0 and 0.0 < cosines[1].mean() < 1.0
    ours = sum(c.sum() for c in cosines) / sum(c.size for c in cosines)
    assert ours == pytest.approx(metric.compute(), abs=1e-6)


def test_clip_lengths_must_match():
    with pytest.raises(ValueError, match="one length"):
        chroma_cosine.frame_cosines(np.zeros(5000, np.float32), np.zeros(6000, np.float32))
