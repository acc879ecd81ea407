"""CLAP's audio tower: the log-mel front end and HTSAT, a Swin transformer over the mel "image".

laion_clap's `HTSAT_Swin_Transformer` (transformers' `ClapAudioModel`) without feature fusion, as
`CLAP_Module.get_audio_embedding_from_data` runs it: a clip is repeated then zero-padded to 10 s
("repeatpad") or cropped to 10 s ("rand_trunc"), its 64-bin log-mel (1024-sample Hann window, hop 480,
50 Hz to 14 kHz, slaney scale) is batch-normalized per bin, stretched from 1001 to 1024 frames
(bicubic), folded into a 256 x 256 image, cut into 4 x 4 patches and run through four Swin stages; the
mean of the last tokens ([B, 1024]) goes through the two-layer audio projection ([B, 512]).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST  # float32 matmuls on every backend: the reference runs in float32
Dense = functools.partial(nn.Dense, precision=HIGHEST)


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """HTSAT-base at 48 kHz (laion_clap's `HTSAT-base.json`; transformers' `ClapAudioConfig`)."""

    sample_rate: int = 48_000
    clip_samples: int = 480_000
    window_size: int = 1024
    hop_size: int = 480
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14_000.0
    spec_size: int = 256
    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 12, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 8
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    projection_dim: int = 512

    def __post_init__(self):
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))

    @property
    def freq_ratio(self) -> int:
        """How many time chunks of the mel are stacked along the image's rows (256 // 64 = 4)."""
        return self.spec_size // self.mel_bins

    @property
    def num_features(self) -> int:
        """Width of the last stage (1024 for HTSAT-base)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def frames(self) -> int:
        """Mel frames of a 10 s clip (centered STFT): 1001."""
        return self.clip_samples // self.hop_size + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AudioConfig:
        return cls(**d)


# ---------------------------------------------------------------------------------------------- front end


def fit_length(wavs: jnp.ndarray, length: int, offsets: jnp.ndarray) -> jnp.ndarray:
    """[B, T] -> [B, length]: laion_clap's `get_audio_features` without fusion. A shorter clip is tiled
    floor(length / T) times and zero-padded ("repeatpad"); a longer one is cut at `offsets` [B]
    ("rand_trunc": laion_clap draws each offset from `np.random.randint(0, T - length + 1)`)."""
    batch, t = wavs.shape
    if t > length:
        return jax.vmap(lambda w, o: jax.lax.dynamic_slice(w, (o,), (length,)))(wavs, offsets)
    wavs = jnp.tile(wavs, (1, length // t))
    return jnp.pad(wavs, ((0, 0), (0, length - wavs.shape[1])))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    linear = f * 3.0 / 200.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (math.log(6.4) / 27.0), linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((math.log(6.4) / 27.0) * (m - 15.0)), m * 200.0 / 3.0)


def mel_filters(config: AudioConfig) -> np.ndarray:
    """[n_fft // 2 + 1, mel_bins] triangular filters, slaney-normalized (librosa's `filters.mel`, which
    torchlibrosa's `LogmelFilterBank` and transformers' `mel_filters_slaney` reproduce)."""
    n_freqs = config.window_size // 2 + 1
    fft_freqs = np.linspace(0, config.sample_rate / 2, n_freqs)
    mel_points = np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.mel_bins + 2)
    hz = _mel_to_hz(mel_points)
    lower = (fft_freqs[None, :] - hz[:-2, None]) / np.diff(hz)[:-1, None]
    upper = (hz[2:, None] - fft_freqs[None, :]) / np.diff(hz)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


def log_mel(wavs: jnp.ndarray, config: AudioConfig) -> jnp.ndarray:
    """[B, T] -> [B, T // hop + 1, mel_bins]: power STFT (centered, reflect-padded, periodic Hann),
    mel filters, 10 * log10(max(power, 1e-10)) (laion_clap: torchlibrosa `Spectrogram` +
    `LogmelFilterBank(ref=1, amin=1e-10, top_db=None)`)."""
    n_fft, hop = config.window_size, config.hop_size
    padded = jnp.pad(wavs, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    n_frames = wavs.shape[1] // hop + 1
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = padded[:, index] * window.astype(np.float32)
    spectrum = jnp.fft.rfft(frames, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = jnp.einsum("btf,fm->btm", power, mel_filters(config), precision=HIGHEST)
    return 10.0 * jnp.log10(jnp.maximum(mel, 1e-10))


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] weights of torch's `interpolate(mode="bicubic", align_corners=True)` along one
    axis (cubic convolution, A = -0.75, edge samples repeated): how HTSAT stretches 1001 frames to 1024."""
    a = -0.75
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    src = np.arange(size_out, dtype=np.float64) * scale
    base = np.floor(src).astype(int)
    t = src - base
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    coeffs = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
    matrix = np.zeros((size_out, size_in))
    for k in range(4):
        np.add.at(matrix, (np.arange(size_out), np.clip(base - 1 + k, 0, size_in - 1)), coeffs[:, k])
    return matrix.astype(np.float32)


def mel_image(mel: jnp.ndarray, config: AudioConfig) -> jnp.ndarray:
    """[B, frames, mel_bins] (batch-normalized) -> [B, spec_size, spec_size]: the time axis stretched to
    spec_size * freq_ratio frames, cut into freq_ratio chunks stacked along the rows (row = chunk *
    mel_bins + bin, column = frame within the chunk): `reshape_wav2img` / `reshape_mel2img`."""
    target = config.spec_size * config.freq_ratio
    if mel.shape[1] > target:
        raise ValueError(f"{mel.shape[1]} mel frames: more than the {target} HTSAT takes")
    if mel.shape[1] < target:
        matrix = bicubic_matrix(mel.shape[1], target)
        mel = jnp.einsum("ot,btm->bom", matrix, mel, precision=HIGHEST)
    batch = mel.shape[0]
    chunks = mel.reshape(batch, config.freq_ratio, config.spec_size, config.mel_bins)
    return chunks.transpose(0, 1, 3, 2).reshape(batch, config.spec_size, config.spec_size)


# ---------------------------------------------------------------------------------------------- Swin layers


def relative_position_index(window: int) -> np.ndarray:
    """[window^2, window^2] index into the (2 * window - 1)^2-row bias table (Swin's relative positions)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """[windows, window^2, window^2] additive mask (0 or -100) of a shifted-window block: tokens that the
    cyclic shift brought together from different regions of the map do not attend to each other."""

    def regions(n):
        return (np.arange(n) >= n - window).astype(int) + (np.arange(n) >= n - shift).astype(int)

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    windows = label.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    return np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0).astype(np.float32)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias (laion_clap's
    `WindowAttention`, transformers' `ClapAudioSelfAttention`). [N, window^2, C] -> same."""

    dim: int
    heads: int
    window: int

    @nn.compact
    def __call__(self, x, mask):
        n, length, _ = x.shape
        head_dim = self.dim // self.heads
        split = lambda y: y.reshape(n, length, self.heads, head_dim)  # noqa: E731
        q = split(Dense(self.dim, name="query")(x)) * head_dim**-0.5
        k = split(Dense(self.dim, name="key")(x))
        v = split(Dense(self.dim, name="value")(x))
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, precision=HIGHEST)
        table = self.param(
            "relative_position_bias_table", nn.initializers.normal(0.02), ((2 * self.window - 1) ** 2, self.heads)
        )
        bias = table[relative_position_index(self.window).reshape(-1)].reshape(length, length, self.heads)
        scores = scores + bias.transpose(2, 0, 1)[None]
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.reshape(n // windows, windows, self.heads, length, length) + mask[None, :, None]
            scores = scores.reshape(n, self.heads, length, length)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("nhqk,nkhd->nqhd", probs, v, precision=HIGHEST).reshape(n, length, -1)
        return Dense(self.dim, name="proj")(out)


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention then MLP, both residual (laion_clap's `SwinTransformerBlock`,
    transformers' `ClapAudioLayer`). [B, H, W, C] -> same."""

    dim: int
    heads: int
    window: int
    shift: int
    mlp_ratio: float
    eps: float

    @nn.compact
    def __call__(self, x):
        batch, height, width, channels = x.shape
        ws, shift = self.window, self.shift
        y = nn.LayerNorm(epsilon=self.eps, name="norm1")(x)
        if shift:
            y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
        windows = y.reshape(batch, height // ws, ws, width // ws, ws, channels).transpose(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, ws * ws, channels)
        mask = jnp.asarray(shift_mask(height, width, ws, shift)) if shift else None
        out = WindowAttention(self.dim, self.heads, ws, name="attn")(windows, mask)
        out = out.reshape(batch, height // ws, width // ws, ws, ws, channels).transpose(0, 1, 3, 2, 4, 5)
        out = out.reshape(batch, height, width, channels)
        if shift:
            out = jnp.roll(out, (shift, shift), axis=(1, 2))
        x = x + out
        y = nn.LayerNorm(epsilon=self.eps, name="norm2")(x)
        y = Dense(int(self.dim * self.mlp_ratio), name="fc1")(y)
        y = Dense(self.dim, name="fc2")(nn.gelu(y, approximate=False))
        return x + y


class PatchMerging(nn.Module):
    """Each 2 x 2 neighbourhood concatenated ([x(0,0), x(1,0), x(0,1), x(1,1)]), normalized and projected
    to twice the width. [B, H, W, C] -> [B, H/2, W/2, 2C]."""

    dim: int
    eps: float

    @nn.compact
    def __call__(self, x):
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = nn.LayerNorm(epsilon=self.eps, name="norm")(x)
        return Dense(2 * self.dim, use_bias=False, name="reduction")(x)


class HTSAT(nn.Module):
    """Batch-normalized log-mel [B, frames, mel_bins] -> pooled features [B, num_features]: the mel image,
    4 x 4 patch embedding (+ LayerNorm), the Swin stages (patch merging between them), final LayerNorm
    and the mean over all tokens (the `embedding` of laion_clap's `forward_features`, the pooler output of
    transformers' `ClapAudioEncoder`)."""

    config: AudioConfig

    @nn.compact
    def __call__(self, mel):
        cfg = self.config
        bn = {name: self.param(name, nn.initializers.zeros, (cfg.mel_bins,)) for name in ("mean", "var", "bias")}
        scale = self.param("scale", nn.initializers.ones, (cfg.mel_bins,))
        mel = (mel - bn["mean"]) / jnp.sqrt(bn["var"] + cfg.batch_norm_eps) * scale + bn["bias"]
        image = mel_image(mel, cfg)
        p, batch = cfg.patch_size, image.shape[0]
        grid = cfg.spec_size // p
        patches = image.reshape(batch, grid, p, grid, p).transpose(0, 1, 3, 2, 4).reshape(batch, grid, grid, p * p)
        x = Dense(cfg.embed_dim, name="patch_embed")(patches)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="patch_norm")(x)
        for stage, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads, strict=True)):
            dim = cfg.embed_dim * 2**stage
            resolution = min(x.shape[1], x.shape[2])
            window = min(cfg.window, resolution)
            for i in range(depth):
                shift = 0 if i % 2 == 0 or resolution <= cfg.window else cfg.window // 2
                x = SwinBlock(
                    dim, heads, window, shift, cfg.mlp_ratio, cfg.layer_norm_eps, name=f"layers_{stage}_blocks_{i}"
                )(x)
            if stage < len(cfg.depths) - 1:
                x = PatchMerging(dim, cfg.layer_norm_eps, name=f"layers_{stage}_downsample")(x)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="norm")(x)
        return x.mean(axis=(1, 2))


class Projection(nn.Module):
    """CLAP's two-layer projection into the joint space, [B, D] -> [B, dim] (laion_clap's `*_projection`
    Sequential, transformers' `ClapProjectionLayer`: linear, ReLU, linear)."""

    dim: int

    @nn.compact
    def __call__(self, x):
        return Dense(self.dim, name="linear2")(jax.nn.relu(Dense(self.dim, name="linear1")(x)))


class AudioTower(nn.Module):
    """Log-mel [B, frames, mel_bins] -> unnormalized audio embedding [B, projection_dim]."""

    config: AudioConfig

    @nn.compact
    def __call__(self, mel):
        return Projection(self.config.projection_dim, name="projection")(HTSAT(self.config, name="htsat")(mel))
