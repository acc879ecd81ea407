"""DAC's encoder and decoder, Flax linen, channels-last (descript's `Encoder` / `Decoder`, transformers'
`DacEncoder` / `DacDecoder`).

Submodules are named as transformers names them (`block_0/res_unit1/conv1` is `block.0.res_unit1.conv1`), so
the weights' key map follows from the parameter tree (`codec.dac.weights`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.codec.dac.layers import Conv1d, ConvTranspose1d, Snake, strided_geometry
from musicgen_jax.config import DacConfig

DILATIONS = (1, 3, 9)  # of the three residual units of every block
RESIDUAL_KERNEL = 7
OUTER_KERNEL = 7  # the encoder's first and the decoder's first and last convolutions
LATENT_KERNEL = 3  # the encoder's last convolution


class ResidualUnit(nn.Module):
    """x + conv1x1(snake(conv7_dilated(snake(x)))): `[B, T, C] -> [B, T, C]`. Both convolutions keep the length
    (padding 3 * dilation), so the references' crop of x to the branch's length never cuts anything."""

    dilation: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        pad = (RESIDUAL_KERNEL - 1) * self.dilation // 2
        y = Conv1d(dim, RESIDUAL_KERNEL, dilation=self.dilation, padding=pad, name="conv1")(Snake(name="snake1")(x))
        return x + Conv1d(dim, 1, name="conv2")(Snake(name="snake2")(y))


def _residual_units(x: jax.Array) -> jax.Array:
    for j, dilation in enumerate(DILATIONS):
        x = ResidualUnit(dilation, name=f"res_unit{j + 1}")(x)
    return x


class EncoderBlock(nn.Module):
    """Three residual units, snake, strided conv: `[B, T, C] -> [B, T / stride, 2C]`."""

    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Snake(name="snake1")(_residual_units(x))
        kernel, pad = strided_geometry(self.stride)
        return Conv1d(2 * x.shape[-1], kernel, stride=self.stride, padding=pad, name="conv1")(x)


class DecoderBlock(nn.Module):
    """Snake, transposed conv, three residual units: `[B, T, C] -> [B, T * stride (- 1 if odd), features]`."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, pad = strided_geometry(self.stride)
        x = ConvTranspose1d(self.features, kernel, self.stride, padding=pad, name="conv_t1")(Snake(name="snake1")(x))
        return _residual_units(x)


class Encoder(nn.Module):
    """`[B, T, 1] -> [B, T / hop, latent_dim]`, T a multiple of the hop; the width doubles at every block."""

    config: DacConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = Conv1d(c.encoder_dim, OUTER_KERNEL, padding=OUTER_KERNEL // 2, name="conv1")(x)
        for i, stride in enumerate(c.encoder_rates):
            x = EncoderBlock(stride, name=f"block_{i}")(x)
        x = Snake(name="snake1")(x)
        return Conv1d(c.latent_dim, LATENT_KERNEL, padding=LATENT_KERNEL // 2, name="conv2")(x)


class Decoder(nn.Module):
    """`[B, T', latent_dim] -> [B, T, 1]` in (-1, 1) (tanh); the width halves at every block. T = T' * hop when
    every rate is even (44.1 kHz); a block of odd rate gives one sample less, which the later blocks multiply
    (24 and 16 kHz, rates 8, 5, 4, 2: T' * hop - 8)."""

    config: DacConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = Conv1d(c.decoder_dim, OUTER_KERNEL, padding=OUTER_KERNEL // 2, name="conv1")(x)
        for i, stride in enumerate(c.decoder_rates):
            x = DecoderBlock(c.decoder_dim // 2 ** (i + 1), stride, name=f"block_{i}")(x)
        x = Snake(name="snake1")(x)
        return jnp.tanh(Conv1d(1, OUTER_KERNEL, padding=OUTER_KERNEL // 2, name="conv2")(x))
