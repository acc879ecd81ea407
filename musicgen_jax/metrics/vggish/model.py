"""VGGish in Flax, with its log-mel front end, as the Frechet Audio Distance runs it.

The network is AudioSet's VGGish (TensorFlow's `vggish_slim`, ported as torchvggish's `VGG`): four conv
blocks over a `[96, 64]` log-mel patch, three dense layers, a 128-d embedding. FAD takes the last dense
layer's output as it is: before torchvggish's final ReLU and before the PCA / 8-bit postprocessing (Google's
`frechet_audio_distance` reads TF's `vggish/embedding`, the linear fc2 output; fadtk drops both for that
reason). `pca_postprocess` is the PCA whitening and quantization of the AudioSet release, for users who want
those embeddings.

The front end is `mel_features.log_mel_spectrogram` (25 ms periodic-Hann frames every 10 ms, |rfft 512|,
64 HTK mel bands 125-7500 Hz, log(mel + 0.01)) as Google's `AudioSetModel.
extract_features` applies it for FAD: the clip divided by max(0.1, its maximum), 1 s windows every 0.5 s
(`model_step_size` 8000), each window's first 96 frames one example. The windows' frames are frames of the
whole clip (0.5 s is 50 hops), so the clip's STFT is computed once.
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

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512  # the next power of two above WINDOW
MEL_BANDS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
FAD_WINDOW = SAMPLE_RATE  # Google's FAD: 1 s windows ...
FAD_STEP = 8_000  # ... every 0.5 s (create_embeddings_main's model_step_size)
MIN_RATIO = 0.1  # audioset_model.py: the peak divides the clip, but never by less than this (20 dB gain)
EMBEDDING = 128


@dataclasses.dataclass(frozen=True)
class VGGishConfig:
    """The network's widths (AudioSet's VGGish: `[64, M, 128, M, 256, 256, M, 512, 512, M]`, fc 4096)."""

    blocks: tuple = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
    hidden: int = 4096
    embedding: int = EMBEDDING

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "hidden": self.hidden, "embedding": self.embedding}

    @classmethod
    def from_dict(cls, d: dict) -> VGGishConfig:
        return cls(tuple(d["blocks"]), d["hidden"], d["embedding"])


class VGG(nn.Module):
    """`[N, 96, 64]` log-mel examples -> `[N, 128]` float32 embeddings (fc2's linear output)."""

    config: VGGishConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[..., None]  # NHWC, one channel
        conv = 0
        for block in self.config.blocks:
            if block == "M":
                x = nn.max_pool(x, (2, 2), (2, 2))
            else:
                x = nn.relu(nn.Conv(block, (3, 3), padding=1, name=f"conv_{conv}")(x))
                conv += 1
        x = x.reshape(x.shape[0], -1)  # [N, 6, 4, 512] flattened in TF's NHWC order, as torchvggish transposes to
        x = nn.relu(nn.Dense(self.config.hidden, name="fc1_1")(x))
        x = nn.relu(nn.Dense(self.config.hidden, name="fc1_2")(x))
        return nn.Dense(self.config.embedding, name="fc2")(x)


def pca_postprocess(embeddings: jax.Array, pca_matrix: jax.Array, pca_means: jax.Array) -> jax.Array:
    """AudioSet's released form of `[N, 128]` embeddings: PCA-whitened (`[128, 128]` eigenvectors, `[128]`
    means), clipped to [-2, 2] and quantized to 0..255 (as floats), as torchvggish's `Postprocessor`."""
    pca = (embeddings - pca_means) @ pca_matrix.T
    return jnp.round((jnp.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)  # HTK's mel scale, as mel_features


@functools.lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """`[257, 64]` float32: mel_features' `spectrogram_to_mel_matrix` (triangles on the HTK mel scale between
    125 and 7500 Hz; the DC bin, which it zeroes, is below the lowest band anyway)."""
    bins = FFT // 2 + 1
    spectrum_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins))
    edges = np.linspace(_hz_to_mel(np.float64(MEL_MIN_HZ)), _hz_to_mel(np.float64(MEL_MAX_HZ)), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (spectrum_mel[:, None] - lower) / (center - lower)
    falling = (upper - spectrum_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights.astype(np.float32)


def num_examples(samples: int) -> int:
    """How many FAD examples a 16 kHz clip of `samples` gives (1 s windows every 0.5 s; 0 under 1 s)."""
    return 0 if samples < FAD_WINDOW else (samples - FAD_WINDOW) // FAD_STEP + 1


@jax.jit
def fad_examples(wav: jax.Array) -> jax.Array:
    """`[B, T]` float32 16 kHz clips (T >= 16000) -> `[B, E, 96, 64]` log-mel examples, `E = num_examples(T)`,
    as Google's FAD extracts them (each clip divided by max(0.1, its maximum) first)."""
    wav = wav / jnp.maximum(MIN_RATIO, wav.max(axis=-1, keepdims=True))
    frames = (wav.shape[-1] - WINDOW) // HOP + 1
    index = jnp.arange(frames)[:, None] * HOP + jnp.arange(WINDOW)
    window = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(WINDOW) / WINDOW)  # periodic Hann
    spectrum = jnp.abs(jnp.fft.rfft(wav[:, index] * window, FFT))
    log_mel = jnp.log(jnp.matmul(spectrum, mel_matrix(), precision=jax.lax.Precision.HIGHEST) + LOG_OFFSET)
    starts = jnp.arange(num_examples(wav.shape[-1])) * (FAD_STEP // HOP)
    return log_mel[:, starts[:, None] + jnp.arange(EXAMPLE_FRAMES)]


BATCH = 64  # examples per network call


@dataclasses.dataclass(frozen=True)
class VGGish:
    """VGGish with its weights (`weights.load_vggish` builds one): 16 kHz clips -> FAD embeddings.
    `pca`: (`[128, 128]` eigenvectors, `[128]` means) of AudioSet's postprocessing, or None."""

    config: VGGishConfig
    params: dict
    pca: tuple[np.ndarray, np.ndarray] | None = None
    source: str = ""
    mesh: Mesh | None = None  # split the examples over its data axes (`networks.local_mesh`)

    def network(self, examples) -> np.ndarray:
        """`[N, 96, 64]` -> `[N, 128]` embeddings, `BATCH` examples a call (`networks.batched`)."""
        if len(examples) == 0:
            return np.zeros((0, self.config.embedding), np.float32)
        return batched(functools.partial(_apply, self.config, self.params), [examples], BATCH, self.mesh)

    def embed(self, wav, postprocess: bool = False) -> np.ndarray:
        """`[B, T]` float32 16 kHz clips -> `[B, E, 128]` float32, one embedding per 1 s window every 0.5 s
        (`num_examples(T)`); `postprocess`: AudioSet's PCA-quantized form (needs `pca`)."""
        wav = jnp.asarray(wav, jnp.float32)
        batch, count = wav.shape[0], num_examples(wav.shape[-1])
        if count == 0:
            return np.zeros((batch, 0, self.config.embedding), np.float32)
        examples = fad_examples(wav).reshape(batch * count, EXAMPLE_FRAMES, MEL_BANDS)
        out = self.network(examples)
        if postprocess:
            if self.pca is None:
                raise ValueError(f"VGGish from {self.source} was loaded without its PCA parameters")
            out = pca_postprocess(jnp.asarray(out), *map(jnp.asarray, self.pca))
        return np.asarray(out).reshape(batch, count, -1)


@functools.partial(jax.jit, static_argnums=0)
def _apply(config: VGGishConfig, params: dict, examples: jax.Array) -> jax.Array:
    return VGG(config).apply(params, examples)
