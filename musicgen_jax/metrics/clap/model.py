"""`CLAP`: LAION-CLAP's audio and text embeddings (laion_clap's `CLAP_Module(enable_fusion=False,
amodel="HTSAT-base")`, transformers' `ClapModel`), L2-normalized, batched and jit-compiled.

Audio at 48 kHz mono [B, T] -> [B, 512]; texts -> [B, 512]; their dot product is the cosine that
audiocraft's `CLAPTextConsistencyMetric` averages.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from musicgen_jax.metrics.clap.audio import AudioConfig, AudioTower, fit_length, log_mel
from musicgen_jax.metrics.clap.text import RobertaTokenizer, TextConfig, TextTower
from musicgen_jax.metrics.networks import batched

# what audiocraft's `CLAPTextConsistencyMetric` loads: laion_clap's music checkpoint (HTSAT-base, no fusion)
DEFAULT_SOURCE = "lukewys/laion_clap/music_audioset_epoch_15_esc_90.14.pt"
DEFAULT_TOKENIZER = "roberta-base"


@dataclasses.dataclass(frozen=True)
class CLAPConfig:
    """Both towers; `projection_dim` of each is the joint embedding size (512)."""

    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()

    def to_dict(self) -> dict:
        return {"audio": self.audio.to_dict(), "text": self.text.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> CLAPConfig:
        return cls(AudioConfig.from_dict(d["audio"]), TextConfig.from_dict(d["text"]))


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
    """Rows scaled to unit L2 norm (torch's `F.normalize`, eps 1e-12)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=8)
def _audio_fn(config: AudioConfig):
    """jit of [B, T] wavs, [B] crop offsets -> [B, D] unit audio embeddings (one compilation per config)."""
    tower = AudioTower(config)

    @jax.jit
    def embed(params, wavs, offsets):
        return _normalize(
            tower.apply({"params": params}, log_mel(fit_length(wavs, config.clip_samples, offsets), config))
        )

    return embed


@functools.lru_cache(maxsize=8)
def _text_fn(config: TextConfig):
    """jit of ids, mask [B, N] -> [B, D] unit text embeddings."""
    tower = TextTower(config)

    @jax.jit
    def embed(params, ids, mask):
        return _normalize(tower.apply({"params": params}, ids, mask))

    return embed


class CLAP:
    """Converted CLAP weights, config and RoBERTa tokenizer. `params`: `{"audio": tree, "text": tree}`."""

    def __init__(
        self,
        params: dict,
        config: CLAPConfig,
        tokenizer: RobertaTokenizer | None,
        batch_size: int = 8,
        mesh: Mesh | None = None,
    ):
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.mesh = mesh  # split each batch over its data axes (`networks.local_mesh`)

    def crop_offsets(self, batch: int, length: int, seed: int = 0) -> np.ndarray:
        """[batch] start samples of the 10 s crops of clips of `length` samples: laion_clap's
        `np.random.randint(0, length - clip_samples + 1)` per clip, from `np.random.RandomState(seed)`
        (zeros for clips of 10 s or less)."""
        overflow = length - self.config.audio.clip_samples
        if overflow <= 0:
            return np.zeros(batch, np.int32)
        rng = np.random.RandomState(seed)
        return np.array([rng.randint(0, overflow + 1) for _ in range(batch)], np.int32)

    def audio_embeddings(self, wavs, offsets=None, seed: int = 0) -> np.ndarray:
        """[B, T] mono audio at 48 kHz -> [B, 512] unit vectors. Clips under 10 s are repeated and padded
        to 10 s, longer ones cropped at `offsets` [B] (default: `crop_offsets(B, T, seed)`, random as in
        laion_clap). Runs `batch_size` clips at a time."""
        wavs = np.asarray(wavs, np.float32)
        if wavs.ndim != 2:
            raise ValueError(f"expected mono audio [B, T], got shape {wavs.shape}")
        offsets = self.crop_offsets(*wavs.shape, seed) if offsets is None else np.asarray(offsets, np.int32)
        return self._batched(_audio_fn(self.config.audio), self.params["audio"], wavs, offsets)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """[B] descriptions -> [B, 512] unit vectors (RoBERTa tokens, 77 at most)."""
        if self.tokenizer is None:
            raise ValueError("this CLAP has no tokenizer: pass tokenizer= to from_pretrained")
        ids, mask = self.tokenizer(texts)
        return self._batched(_text_fn(self.config.text), self.params["text"], ids, mask)

    def _batched(self, fn, params, *arrays) -> np.ndarray:
        return batched(functools.partial(fn, params), arrays, self.batch_size, self.mesh)
