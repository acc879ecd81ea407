"""EnCodec model: waveform <-> discrete codes, mono or interleaved stereo (audiocraft's
`InterleaveStereoCompressionModel`).

`EncodecModel` is the pure linen module (`model.apply(params, wav, method="encode")`);
`Codec` bundles it with its parameters and jit-compiled entry points, checks its inputs on
the host, and implements the stereo layout of MusicGen's stereo models.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from musicgen_jax.codec.quantizer import ResidualVectorQuantizer
from musicgen_jax.codec.seanet import SEANetDecoder, SEANetEncoder
from musicgen_jax.config import CodecConfig
from musicgen_jax.sharding import SIGNAL, jit_on_mesh, logical_specs, pad_batch, place

Params = Any


class EncodecModel(nn.Module):
    config: CodecConfig

    def setup(self):
        c = self.config
        self.encoder = SEANetEncoder(c)
        self.decoder = SEANetDecoder(c)
        self.quantizer = ResidualVectorQuantizer(c.num_codebooks, c.codebook_size, c.dimension)

    def __call__(self, wav: jax.Array) -> jax.Array:
        """Round trip used for `init`: `[B, C, T] -> [B, C, ceil(T / hop) * hop]`."""
        return self.decode(self.encode(wav))

    def encode(self, wav: jax.Array) -> jax.Array:
        """`wav [B, C, T] float32 -> codes [B, K, ceil(T / hop)] int32`."""
        return self.quantizer.encode(self.encoder(jnp.swapaxes(wav, 1, 2)))

    def decode(self, codes: jax.Array) -> jax.Array:
        """`codes [B, K, T'] int -> wav [B, C, T' * hop] float32` (not cropped to the encoded length)."""
        return jnp.swapaxes(self.decoder(self.quantizer.decode(codes)), 1, 2)


def _init(config: CodecConfig, key: jax.Array) -> Params:
    """Parameters boxed with their logical axis names."""
    return EncodecModel(config).init(key, jnp.zeros((1, config.channels, config.hop_length), jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: CodecConfig, key: jax.Array) -> Params:
    """Randomly initialized codec parameters (for training from scratch, tests and benchmarks)."""
    return nn.unbox(_init(config, key))


def param_specs(config: CodecConfig) -> Any:
    """The logical `PartitionSpec` of every codec parameter (for `musicgen_jax.sharding.place`)."""
    return logical_specs(lambda: _init(config, jax.random.key(0)))


def interleave_stereo(codes: jax.Array) -> jax.Array:
    """`[B, 2, K, T] (channel-major) -> [B, 2K, T]` in the order [L0, R0, L1, R1, ...]."""
    b, c, k, t = codes.shape
    return jnp.swapaxes(codes, 1, 2).reshape(b, k * c, t)


def deinterleave_stereo(codes: jax.Array) -> jax.Array:
    """`[B, 2K, T]` in the order [L0, R0, L1, R1, ...] `-> [B, 2, K, T]`."""
    b, kc, t = codes.shape
    return jnp.swapaxes(codes.reshape(b, kc // 2, 2, t), 1, 2)


def _split(x: jax.Array) -> jax.Array:
    """`[B, C or K, T]` split over the batch axes of the mesh in use (`sharding.activation_sharding`)."""
    return nn.with_logical_constraint(x, SIGNAL)


def _encode_fn(config: CodecConfig, params: Params, wav: jax.Array, stereo: bool) -> jax.Array:
    model = EncodecModel(config)
    wav = _split(wav)
    if not stereo:
        return _split(model.apply(params, wav, method=EncodecModel.encode))
    b, c, t = wav.shape
    codes = model.apply(params, wav.reshape(b * c, 1, t), method=EncodecModel.encode)
    return _split(interleave_stereo(codes.reshape(b, c, *codes.shape[1:])))


def _decode_fn(config: CodecConfig, params: Params, codes: jax.Array, stereo: bool) -> jax.Array:
    model = EncodecModel(config)
    codes = _split(codes)
    if not stereo:
        return _split(model.apply(params, codes, method=EncodecModel.decode))
    per_channel = deinterleave_stereo(codes)
    b, c = per_channel.shape[:2]
    wav = model.apply(params, per_channel.reshape(b * c, *per_channel.shape[2:]), method=EncodecModel.decode)
    return _split(wav.reshape(b, c, wav.shape[-1]))


_encode = jit_on_mesh(_encode_fn, ("config", "stereo"))
_decode = jit_on_mesh(_decode_fn, ("config", "stereo"))


@dataclasses.dataclass(frozen=True)
class Codec:
    """An EnCodec model with its parameters.

    Mono: `encode([B, C, T]) -> [B, K, T']` with C = config.channels. Stereo (`stereo=True`, mono
    codec): each channel is coded separately and the codebooks interleaved, `[B, 2, T] -> [B, 2K, T']`.
    Compiled once per input shape. `source`: the checkpoint its weights were read from (a hub id or path),
    if any: export gives back that checkpoint's own tensors (`convert.hf_export`).
    """

    config: CodecConfig
    params: Params
    stereo: bool = False
    source: str | None = None
    mesh: Mesh | None = None

    def __post_init__(self):
        if self.stereo and self.config.channels != 1:
            raise ValueError(f"stereo interleaving needs a mono codec, this one has {self.config.channels} channels")
        # on the device once, not copied from host memory at every call (benchmarks/RESULTS.md, "Design choices")
        object.__setattr__(self, "params", place(self.params, lambda: param_specs(self.config), self.mesh))

    @property
    def channels(self) -> int:
        """Audio channels of the waveforms this codec takes and returns."""
        return 2 if self.stereo else self.config.channels

    @property
    def num_codebooks(self) -> int:
        """Codebooks per frame in the codes this codec takes and returns."""
        return self.config.num_codebooks * (2 if self.stereo else 1)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    def encode(self, wav) -> jax.Array:
        """`wav [B, C, T] float -> codes [B, K, ceil(T / hop)] int32`."""
        wav = checked_audio(wav, self.channels)
        return _encode(self.config, self.params, pad_batch(wav, self.mesh), self.stereo, mesh=self.mesh)[: len(wav)]

    def decode(self, codes) -> jax.Array:
        """`codes [B, K, T'] int -> wav [B, C, T' * hop] float32`."""
        codes = checked_codes(codes, self.num_codebooks, self.config.codebook_size)
        batch = pad_batch(codes, self.mesh)
        return _decode(self.config, self.params, batch, self.stereo, mesh=self.mesh)[: len(codes)]


def checked_audio(wav, channels: int) -> np.ndarray:
    """`wav` as float32 `[B, channels, T > 0]`, finite; ValueError otherwise (checked on the host, before
    anything is compiled)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 3 or wav.shape[1] != channels or wav.shape[2] == 0:
        raise ValueError(f"expected audio of shape [batch, {channels}, samples > 0], got {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("audio contains NaN or infinite values")
    return wav


def checked_codes(codes, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """`codes` as int32 `[B, num_codebooks, T' > 0]` in [0, codebook_size); ValueError otherwise."""
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.shape[1] != num_codebooks or codes.shape[2] == 0:
        raise ValueError(f"expected codes of shape [batch, {num_codebooks}, frames > 0], got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got values in [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int32)
