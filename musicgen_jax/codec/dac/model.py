"""DAC: mono waveform <-> discrete codes (descript's `DAC`, transformers' `DacModel`, audiocraft's `DAC` wrapper).

`DacModel` is the pure linen module (`model.apply(params, wav, n, method="encode")`); `DacCodec` bundles it
with its parameters and jit-compiled entry points, checks its inputs on the host, and keeps the number of
codebooks in use (audiocraft's `set_num_codebooks`). It has the interface of EnCodec's `Codec`: sample_rate,
frame_rate, channels, num_codebooks, encode, decode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from musicgen_jax.codec.dac.autoencoder import Decoder, Encoder
from musicgen_jax.codec.dac.quantizer import ResidualVectorQuantize
from musicgen_jax.codec.model import checked_audio, checked_codes
from musicgen_jax.config import DacConfig
from musicgen_jax.sharding import SIGNAL, jit_on_mesh, logical_specs, pad_batch, place

Params = Any


class DacModel(nn.Module):
    """Encoder, residual quantizer and decoder: audio `[B, 1, T]` <-> codes `[B, K, T']` (channels-last inside)."""

    config: DacConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.quantizer = ResidualVectorQuantize(self.config)
        self.decoder = Decoder(self.config)

    def __call__(self, wav: jax.Array) -> jax.Array:
        """Round trip with every codebook, used for `init`."""
        return self.decode(self.encode(wav, self.config.n_codebooks))

    def encode(self, wav: jax.Array, num_codebooks: int) -> jax.Array:
        """`wav [B, 1, T] -> codes [B, num_codebooks, ceil(T / hop)] int32`: the audio zero-padded on the right
        to whole frames first (descript's `DAC.preprocess`, transformers' `DacFeatureExtractor`)."""
        hop = self.config.hop_length
        wav = jnp.pad(wav, ((0, 0), (0, 0), (0, -wav.shape[-1] % hop)))
        return self.quantizer.encode(self.encoder(jnp.swapaxes(wav, 1, 2)), num_codebooks)

    def decode(self, codes: jax.Array) -> jax.Array:
        """`codes [B, K, T'] -> wav [B, 1, T]` from the first K codebooks, T as `Decoder` says (T' * hop at
        44.1 kHz), not cropped to an encoded length (as audiocraft's `DAC.decode`)."""
        return jnp.swapaxes(self.decoder(self.quantizer.decode(codes)), 1, 2)


def param_specs(config: DacConfig) -> Any:
    """The logical `PartitionSpec` of every parameter (for `musicgen_jax.sharding.place`)."""
    wav = jnp.zeros((1, 1, config.hop_length), jnp.float32)
    return logical_specs(lambda: DacModel(config).init(jax.random.key(0), wav))


def _split(x: jax.Array) -> jax.Array:
    """`[B, C or K, T]` split over the batch axes of the mesh in use."""
    return nn.with_logical_constraint(x, SIGNAL)


def _encode_fn(config: DacConfig, params: Params, wav: jax.Array, num_codebooks: int) -> jax.Array:
    return _split(DacModel(config).apply(params, _split(wav), num_codebooks, method=DacModel.encode))


def _decode_fn(config: DacConfig, params: Params, codes: jax.Array) -> jax.Array:
    return _split(DacModel(config).apply(params, _split(codes), method=DacModel.decode))


_encode = jit_on_mesh(_encode_fn, ("config", "num_codebooks"))
_decode = jit_on_mesh(_decode_fn, ("config",))


@dataclasses.dataclass
class DacCodec:
    """A DAC model with its parameters: `encode([B, 1, T]) -> [B, K, ceil(T / hop)]`, `decode([B, K, T'])
    -> [B, 1, T]`, K = `num_codebooks` (all of `config.n_codebooks` until `set_num_codebooks`). Compiled once
    per input shape and K. `source`: the checkpoint its weights were read from, if any.
    """

    config: DacConfig
    params: Params
    source: str | None = None
    mesh: Mesh | None = None
    num_codebooks: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.num_codebooks = self.config.n_codebooks
        self.params = place(self.params, lambda: param_specs(self.config), self.mesh)

    def set_num_codebooks(self, n: int) -> None:
        """Encode to, and decode from, the first `n` codebooks (audiocraft's `DAC.set_num_codebooks`)."""
        if not 1 <= n <= self.total_codebooks:
            raise ValueError(f"the number of codebooks must lie in [1, {self.total_codebooks}], got {n}")
        self.num_codebooks = n

    @property
    def total_codebooks(self) -> int:
        return self.config.n_codebooks

    @property
    def channels(self) -> int:
        return 1

    @property
    def stereo(self) -> bool:
        """Always False: DAC codes mono audio (`Codec.stereo`'s interleaving is EnCodec's)."""
        return False

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    def encode(self, wav) -> jax.Array:
        """`wav [B, 1, T] float -> codes [B, num_codebooks, ceil(T / hop)] int32`."""
        wav = checked_audio(wav, self.channels)
        batch = pad_batch(wav, self.mesh)
        return _encode(self.config, self.params, batch, self.num_codebooks, mesh=self.mesh)[: len(wav)]

    def decode(self, codes) -> jax.Array:
        """`codes [B, num_codebooks, T'] int -> wav [B, 1, T] float32` (T: `DacModel.decode`)."""
        codes = checked_codes(codes, self.num_codebooks, self.config.codebook_size)
        return _decode(self.config, self.params, pad_batch(codes, self.mesh), mesh=self.mesh)[: len(codes)]
