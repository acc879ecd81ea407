"""The metrics' resampling against julius' `resample_frac` (what audiocraft's `convert_audio` calls), at the
rate pairs the metrics meet: 32 -> 16 kHz (VGGish), 32 -> 48 and 44.1 -> 48 kHz (CLAP), 44.1 -> 32 kHz (PaSST),
lengths that are not a multiple of the rates' ratio. Measured: within 5e-7 (float32 rounding)."""

from __future__ import annotations

import julius
import numpy as np
import pytest
import torch

from musicgen_jax.metrics.resample import resample_frac


@pytest.mark.parametrize(
    "old, new, length",
    [
        (32000, 16000, 32000 * 2 + 7),
        (32000, 48000, 32001),
        (44100, 48000, 44100 + 3),
        (44100, 32000, 44101),
        (16000, 16000, 100),
    ],
)
def test_equals_julius(old, new, length):
    wav = (np.random.default_rng(length).standard_normal((2, length)) * 0.3).astype(np.float32)
    ref = julius.resample_frac(torch.from_numpy(wav), old, new).numpy()
    ours = np.asarray(resample_frac(wav, old, new))
    assert ours.shape == ref.shape == (2, new * length // old)
    np.testing.assert_allclose(ours, ref, atol=2e-6, rtol=0)


def test_leading_dimensions_are_kept():
    wav = np.ones((3, 2, 1000), np.float32)
    assert resample_frac(wav, 32000, 16000).shape == (3, 2, 500)
