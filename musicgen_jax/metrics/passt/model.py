"""PaSST in Flax, with its log-mel front end, as hear21passt's `base20sec.get_basic_model(mode="logits")` runs it.

Front end (`log_mel`): hear21passt's `AugmentMelSTFT` in eval mode: preemphasis (`x[n + 1] - 0.97 x[n]`, one
sample shorter), a centered reflect-padded STFT (n_fft 1024, a symmetric 800-sample Hann window, hop 320), the
power spectrum, 128 kaldi mel bands (torchaudio's `kaldi.get_mel_banks`, 0-15000 Hz, the Nyquist bin's weight 0),
`log(mel + 1e-5)`, then `(x + 4.5) / 5`. No masking: that is training-only augmentation.

Network (`PasstNet`): hear21passt's `PaSST` without patchout (inference): 16x16 conv patches at stride 10 over the
`[128, frames]` mel image, separate frequency and time positional embeddings (the time one cut to the clip's patch
count), cls and distillation tokens, 12 pre-norm transformer blocks, a final LayerNorm, and the head (LayerNorm +
Linear) over the mean of the two tokens: `[B, T]` 32 kHz audio -> `[B, 527]` AudioSet logits.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from musicgen_jax.metrics.networks import batched

# the file hear21passt's `base20sec` downloads (its `default_cfgs["passt-s-f128-20sec-p16-s10-ap474-swa"]`)
PASST_20SEC_URL = "https://github.com/kkoutini/PaSST/releases/download/v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt"

HIGHEST = jax.lax.Precision.HIGHEST  # float32 matmuls on every backend (no TF32 / bf16 passes)


@dataclasses.dataclass(frozen=True)
class PasstConfig:
    """The front end's and the network's settings; the defaults are hear21passt's `base20sec` model.

    `fmax` is what `AugmentMelSTFT` sets for `fmax=None`: `sr // 2 - fmax_aug_range // 2` (aug range 2000).
    `time_patches` is the length of the time positional embedding (2000 mel frames // stride 10): clips up to
    `max_seconds` fit it. `min_seconds` is audiocraft's `PasstKLDivergenceMetric` floor for a segment."""

    sample_rate: int = 32_000
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    fmin: float = 0.0
    fmax: float = 15_000.0
    preemphasis: float = 0.97
    patch_size: int = 16
    patch_stride: int = 10
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    freq_patches: int = 12
    time_patches: int = 200
    num_classes: int = 527
    max_seconds: float = 20.0
    min_seconds: float = 0.15

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PasstConfig:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    @property
    def max_samples(self) -> int:
        """The segment length audiocraft's `PasstKLDivergenceMetric` splits clips into (`max_input_frames`)."""
        return int(self.max_seconds * self.sample_rate)

    @property
    def min_samples(self) -> int:
        """Segments of at most this many samples are dropped (`min_input_frames`)."""
        return int(self.min_seconds * self.sample_rate)


# ----------------------------------------------------------------------------------------------- front end


def _mel_scale(hz):
    return 1127.0 * np.log(1.0 + hz / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """`[n_mels, n_fft // 2 + 1]` float32: torchaudio's `kaldi.get_mel_banks` (no VTLN warp) in float32 as it
    computes them (triangles on the 1127 ln(1 + f / 700) mel scale, equally spaced over [fmin, fmax], sampled
    at the first n_fft / 2 bin frequencies), with the zero column `AugmentMelSTFT` appends for the Nyquist bin."""
    mel_low, mel_high = _mel_scale(float(fmin)), _mel_scale(float(fmax))
    delta = (mel_high - mel_low) / (n_mels + 1)
    index = np.arange(n_mels, dtype=np.float32)[:, None]
    left = np.float32(mel_low) + index * np.float32(delta)
    center = np.float32(mel_low) + (index + np.float32(1)) * np.float32(delta)
    right = np.float32(mel_low) + (index + np.float32(2)) * np.float32(delta)
    bin_hz = np.float32(sample_rate / n_fft) * np.arange(n_fft // 2, dtype=np.float32)
    mel = (np.float32(1127.0) * np.log(np.float32(1.0) + bin_hz / np.float32(700.0)))[None, :]
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    banks = np.maximum(np.float32(0.0), np.minimum(rising, falling)).astype(np.float32)
    return np.pad(banks, ((0, 0), (0, 1)))


def num_frames(samples: int, config: PasstConfig) -> int:
    """Mel frames of a clip of `samples` (preemphasis drops one sample; the centered STFT adds one frame)."""
    return 1 + (samples - 1) // config.hop_length


def log_mel(wav: jax.Array, config: PasstConfig) -> jax.Array:
    """`[B, T]` float32 audio at 32 kHz -> `[B, n_mels, num_frames(T)]` normalized log-mel, as hear21passt's
    `AugmentMelSTFT.forward` in eval mode. T must exceed n_fft / 2 (the reflect padding)."""
    c = config
    x = wav[:, 1:] - c.preemphasis * wav[:, :-1]
    x = jnp.pad(x, ((0, 0), (c.n_fft // 2, c.n_fft // 2)), mode="reflect")
    frames = 1 + (x.shape[-1] - c.n_fft) // c.hop_length
    n = np.arange(c.win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (c.win_length - 1))  # torch.hann_window(periodic=False)
    offset = (c.n_fft - c.win_length) // 2
    window = np.zeros(c.n_fft, np.float32)
    window[offset : offset + c.win_length] = hann
    index = np.arange(frames)[:, None] * c.hop_length + np.arange(c.n_fft)
    spectrum = jnp.fft.rfft(x[:, index] * window, c.n_fft)  # [B, frames, n_fft // 2 + 1]
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    banks = mel_banks(c.n_mels, c.n_fft, c.sample_rate, c.fmin, c.fmax)
    mel = jnp.einsum("mf,btf->bmt", banks, power, precision=HIGHEST)
    return (jnp.log(mel + 1e-5) + 4.5) / 5.0


# ----------------------------------------------------------------------------------------------- network


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, precision=HIGHEST, name=name)


def _norm(name: str, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (hear21passt's `Attention`): `[B, N, D] -> [B, N, D]`."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        qkv = _dense(3 * d, "qkv")(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, Dh]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=HIGHEST) * (d // self.num_heads) ** -0.5
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v, precision=HIGHEST)
        return _dense(d, "proj")(out.reshape(b, n, d))


class Block(nn.Module):
    """A pre-norm transformer block (hear21passt's `Block`: LayerNorm eps 1e-6, exact GELU MLP)."""

    config: PasstConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = x + Attention(c.num_heads, name="attn")(_norm("norm1")(x))
        h = jax.nn.gelu(_dense(c.mlp_dim, "fc1")(_norm("norm2")(x)), approximate=False)
        return x + _dense(c.embed_dim, "fc2")(h)


class PasstNet(nn.Module):
    """hear21passt's `PaSST.forward` in eval mode: `[B, n_mels, frames]` log-mel -> `[B, num_classes]` logits.

    The patch projection and the positional embeddings keep the checkpoint's layouts (conv kernel `[D, 1, P, P]`,
    `freq_new_pos_embed [1, D, F, 1]`, `time_new_pos_embed [1, D, 1, T]`), so the patch grid stays `[B, D, F, T]`
    and flattens frequency-major as torch's `flatten(2)` does."""

    config: PasstConfig

    @nn.compact
    def __call__(self, mel: jax.Array) -> jax.Array:
        c = self.config
        d, p = c.embed_dim, c.patch_size
        init = nn.initializers.normal(0.02)
        kernel = self.param("patch_kernel", init, (d, 1, p, p))
        bias = self.param("patch_bias", nn.initializers.zeros, (d,))
        cls_token = self.param("cls_token", init, (1, 1, d))
        dist_token = self.param("dist_token", init, (1, 1, d))
        token_pos = self.param("new_pos_embed", init, (1, 2, d))
        freq_pos = self.param("freq_new_pos_embed", init, (1, d, c.freq_patches, 1))
        time_pos = self.param("time_new_pos_embed", init, (1, d, 1, c.time_patches))

        x = jax.lax.conv_general_dilated(
            mel[:, None], kernel, (c.patch_stride, c.patch_stride), "VALID", precision=HIGHEST
        )  # NCHW / OIHW: [B, D, F, T']
        x = x + bias[:, None, None]
        if x.shape[-1] > c.time_patches:
            raise ValueError(
                f"{x.shape[-1]} time patches exceed the model's {c.time_patches} (clips of at most {c.max_seconds} s)"
            )
        x = x + time_pos[..., : x.shape[-1]] + freq_pos
        x = x.reshape(x.shape[0], d, -1).transpose(0, 2, 1)  # [B, F * T', D]
        batch = (x.shape[0], 1, d)
        tokens = [
            jnp.broadcast_to(cls_token + token_pos[:, :1], batch),
            jnp.broadcast_to(dist_token + token_pos[:, 1:], batch),
        ]
        x = jnp.concatenate([*tokens, x], axis=1)
        for i in range(c.depth):
            x = Block(c, name=f"blocks_{i}")(x)
        x = _norm("norm")(x)
        features = (x[:, 0] + x[:, 1]) / 2
        return _dense(c.num_classes, "head")(_norm("head_norm", eps=1e-5)(features))


# ----------------------------------------------------------------------------------------------- entry points


@functools.partial(jax.jit, static_argnums=0)
def _logits(config: PasstConfig, params, wav: jax.Array) -> jax.Array:
    return PasstNet(config).apply(params, log_mel(wav, config))


@functools.partial(jax.jit, static_argnums=0)
def _mel(config: PasstConfig, wav: jax.Array) -> jax.Array:
    return log_mel(wav, config)


class PaSST:
    """The PaSST AudioSet classifier with its parameters: `logits` / `probabilities` of `[B, T]` 32 kHz clips, each
    batch run through one jit-compiled function per clip length, in chunks of `batch_size` (`networks.batched`)."""

    def __init__(self, params: dict, config: PasstConfig | None = None, batch_size: int = 4, mesh: Mesh | None = None):
        self.params = jax.tree.map(jnp.asarray, params)
        self.config = config or PasstConfig()
        self.batch_size = batch_size
        self.mesh = mesh  # split each batch over its data axes (`networks.local_mesh`)

    def _check(self, wav) -> np.ndarray:
        wav = np.asarray(wav, np.float32)
        if wav.ndim != 2:
            raise ValueError(f"expected [B, T] mono clips, got shape {wav.shape}")
        if wav.shape[-1] <= self.config.n_fft // 2 + 1:
            raise ValueError(f"clips of {wav.shape[-1]} samples are too short for the {self.config.n_fft}-point STFT")
        return wav

    def mel(self, wav) -> np.ndarray:
        """`[B, T]` float32 32 kHz -> `[B, n_mels, frames]` float32, the network's input (`AugmentMelSTFT`)."""
        return np.asarray(_mel(self.config, jnp.asarray(self._check(wav))))

    def logits(self, wav) -> np.ndarray:
        """`[B, T]` float32 32 kHz (T at most `max_samples`) -> `[B, num_classes]` float32 AudioSet logits."""
        wav = self._check(wav)
        if len(wav) == 0:
            return np.zeros((0, self.config.num_classes), np.float32)
        return batched(functools.partial(_logits, self.config, self.params), [wav], self.batch_size, self.mesh)

    def probabilities(self, wav) -> np.ndarray:
        """`[B, T]` -> `[B, num_classes]` label probabilities: the softmax of the logits over the labels (what
        audiocraft's `PasstKLDivergenceMetric._get_model_preds` returns)."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.logits(wav)), axis=-1))
