"""The melody conditioner's chroma features (audiocraft's `ChromaStemConditioner`), exact to audiocraft's
`ChromaExtractor` and transformers' `MusicgenMelodyFeatureExtractor`.

A mono waveform `[B, T]` at `config.sample_rate` becomes one-hot chroma `[B, frames, bins]` (`extract_chroma`):
the pitch class of each frame, what melody models condition on, in training (`prepare --chroma`) as in
sampling. Resampling and downmixing are the caller's (see `musicgen_jax.audio`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from musicgen_jax.config import ChromaConfig

__all__ = [
    "chroma_filter_bank",
    "extract_chroma",
    "hann_window",
    "match_frames",
    "normalized_chroma",
    "num_frames",
    "one_hot_chroma",
]


@functools.cache
def chroma_filter_bank(config: ChromaConfig) -> np.ndarray:
    """`[bins, n_fft // 2 + 1]` float32: `librosa.filters.chroma(sr, n_fft, tuning=0, n_chroma=bins)`, as audiocraft
    (transformers' `chroma_filter_bank` re-implementation agrees to 3e-8). Read-only: it is cached per config."""
    bank = librosa.filters.chroma(sr=config.sample_rate, n_fft=config.n_fft, tuning=0.0, n_chroma=config.bins)
    bank = np.ascontiguousarray(bank, dtype=np.float32)
    bank.flags.writeable = False
    return bank


def hann_window(n: int) -> np.ndarray:
    """`[n]` float64: the periodic Hann window (`torch.hann_window(n)`)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _normalized_window(n_fft: int) -> np.ndarray:
    """`[n_fft]` float32: `hann_window` divided by sqrt(sum(w**2)), which scales the complex STFT as
    torchaudio's `normalized=True` does."""
    window = hann_window(n_fft)
    return (window / np.sqrt(np.sum(window**2))).astype(np.float32)


@functools.partial(jax.jit, static_argnames="config")
def normalized_chroma(wav: jax.Array, config: ChromaConfig) -> jax.Array:
    """Inf-normalized chroma `[B, frames, bins]` float32 of mono waveforms `wav [B, T]` (T >= 1), before the
    argmax; frames = 1 + max(T, n_fft) // hop. Compiled once per input shape and config.

    1. inputs shorter than `n_fft` are zero-padded to `n_fft`, left pad // 2, right pad // 2 + pad % 2;
    2. the power spectrogram of `torchaudio.transforms.Spectrogram(n_fft, win_length=n_fft, hop_length,
       power=2, center=True, normalized=True)`: reflect padding of n_fft // 2 on both sides, periodic Hann
       window, onesided float32 FFT, divided by the window's energy sum(w**2) ("window" normalization);
    3. raw chroma = librosa's chroma filter bank (tuning 0) @ power, divided by max(max over bins, eps) (p=inf).
    """
    wav = jnp.asarray(wav, jnp.float32)
    n_fft, hop = config.n_fft, config.hop_length
    short = n_fft - wav.shape[-1]
    if short > 0:
        wav = jnp.pad(wav, ((0, 0), (short // 2, short - short // 2)))
    wav = jnp.pad(wav, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = 1 + (wav.shape[-1] - n_fft) // hop
    index = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
    spectrum = jnp.fft.rfft(wav[:, index] * _normalized_window(n_fft), axis=-1)  # [B, frames, n_fft // 2 + 1]
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    raw = jnp.einsum("btf,cf->btc", power, chroma_filter_bank(config), precision=jax.lax.Precision.HIGHEST)
    return raw / jnp.maximum(jnp.max(jnp.abs(raw), axis=-1, keepdims=True), config.norm_eps)


@functools.partial(jax.jit, static_argnames="config")
def one_hot_chroma(wav: jax.Array, config: ChromaConfig) -> jax.Array:
    """One-hot chroma `[B, frames, bins]` float32 of mono waveforms `wav [B, T]`: 1 at the argmax of
    `normalized_chroma` (the first bin on ties: bin 0 for silence)."""
    return jax.nn.one_hot(jnp.argmax(normalized_chroma(wav, config), axis=-1), config.bins, dtype=jnp.float32)


def num_frames(samples: int, config: ChromaConfig) -> int:
    """The number of chroma frames of a waveform of `samples` samples: 1 + max(samples, n_fft) // hop (235 for
    30 s at 32 kHz)."""
    return 1 + max(samples, config.n_fft) // config.hop_length


def match_frames(chroma: jax.Array, frames: int) -> jax.Array:
    """`[B, F, bins] -> [B, frames, bins]`, to the fixed number of frames the LM takes: the first `frames` frames
    if F >= frames, else the F frames repeated ceil(frames / F) times in order and truncated (audiocraft's
    `match_len_on_eval`)."""
    repeats = math.ceil(frames / chroma.shape[1])
    return jnp.tile(chroma, (1, repeats, 1))[:, :frames]


def extract_chroma(wavs, config: ChromaConfig = ChromaConfig(), frames: int | None = None) -> np.ndarray:
    """One-hot chroma `[B, frames, bins]` float32 numpy of a batch of mono waveforms `wavs [B, T]` at
    `config.sample_rate`; tiled or truncated to `frames` (the LM's `chroma_frames`, 235) unless None.

    Raises ValueError for a batch that is not 2-D, is empty, has no samples or has non-finite values."""
    wavs = np.asarray(wavs, dtype=np.float32)
    if wavs.ndim != 2:
        raise ValueError(f"chroma input must be mono waveforms [B, T], got shape {wavs.shape}")
    if wavs.size == 0:
        raise ValueError(f"chroma input is empty: shape {wavs.shape}")
    if not np.isfinite(wavs).all():
        rows = np.flatnonzero(~np.isfinite(wavs).all(axis=1)).tolist()
        raise ValueError(f"chroma input has non-finite values (NaN or inf) in rows {rows}")
    if frames is not None and frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    chroma = one_hot_chroma(wavs, config)
    return np.asarray(chroma if frames is None else match_frames(chroma, frames))
