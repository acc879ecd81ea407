"""Resampling as audiocraft's `convert_audio` does it: julius' `resample_frac` (a windowed-sinc filter bank
of `new_sr / gcd` phases, 24 zero crossings, cutoff 0.945 of the lower Nyquist rate, replicate padding),
in JAX. The metrics resample every clip through it, as audiocraft's metric classes do before their
networks (16 kHz for VGGish, 32 kHz for PaSST, 48 kHz for CLAP)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

ZEROS = 24  # julius' defaults, which convert_audio keeps
ROLLOFF = 0.945


@functools.lru_cache(maxsize=16)
def _filters(old: int, new: int) -> tuple[np.ndarray, int]:
    """The `[new, 2 * width + old]` float32 filter bank of the reduced rates `old -> new`, and `width`."""
    cutoff = min(old, new) * ROLLOFF
    width = math.ceil(ZEROS * old / cutoff)
    taps = np.arange(-width, width + old, dtype=np.float32)
    phases = []
    for i in range(new):
        t = np.float32(-i / new) + taps / np.float32(old)
        t = np.clip(t * np.float32(cutoff), -ZEROS, ZEROS) * np.float32(math.pi)
        with np.errstate(invalid="ignore", divide="ignore"):
            sinc = np.where(t == 0, np.float32(1), np.sin(t) / t)
        kernel = (sinc * np.cos(t / ZEROS / 2) ** 2).astype(np.float32)
        phases.append(kernel / kernel.sum())
    return np.stack(phases), width


@functools.partial(jax.jit, static_argnums=(1, 2))
def _resample(wav: jax.Array, old: int, new: int) -> jax.Array:
    filters, width = _filters(old, new)
    rows = wav.reshape(-1, wav.shape[-1])
    padded = jnp.pad(rows, ((0, 0), (width, width + old)), mode="edge")[:, None, :]
    out = jax.lax.conv_general_dilated(
        padded, jnp.asarray(filters)[:, None, :], (old,), "VALID", precision=jax.lax.Precision.HIGHEST
    )  # [N, new, frames]: phase i of frame j is output sample j * new + i
    out = out.transpose(0, 2, 1).reshape(rows.shape[0], -1)
    return out[:, : new * wav.shape[-1] // old].reshape(*wav.shape[:-1], -1)


def resample_frac(wav, old_sr: int, new_sr: int) -> jax.Array:
    """`[..., T]` float32 at `old_sr` -> `[..., floor(T * new_sr / old_sr)]` at `new_sr`, as julius'
    `resample_frac(wav, old_sr, new_sr)` computes it (the input as float32 where the rates are equal)."""
    gcd = math.gcd(int(old_sr), int(new_sr))
    wav = jnp.asarray(wav, jnp.float32)
    if old_sr == new_sr:
        return wav
    return _resample(wav, int(old_sr) // gcd, int(new_sr) // gcd)


def convert_audio(wav, sample_rate: int, model_rate: int) -> np.ndarray:
    """`[C, T]` (or `[T]`) float32 -> `[T']` mono at `model_rate`: audiocraft's `convert_audio(wav, sample_rate,
    model_rate, to_channels=1)` (resampled first, then the channels averaged)."""
    wav = np.asarray(wav, np.float32)
    wav = np.asarray(resample_frac(wav[None] if wav.ndim == 1 else wav, int(sample_rate), int(model_rate)))
    return wav.mean(axis=0, dtype=np.float32) if wav.shape[0] > 1 else wav[0]
