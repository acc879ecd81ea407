"""SEANet encoder and decoder of EnCodec (audiocraft's `SEANetEncoder` / `SEANetDecoder`, transformers'
`EncodecEncoder` / `EncodecDecoder`), Flax linen, channels-last.

Activations are laid out `[B, T, C]` inside the codec. Submodules are named `layers_{i}` after the index of
the layer in the reference `nn.Sequential` (ELUs count), so that checkpoint keys map one-to-one
(`encoder.layers.3.conv.weight` -> `encoder/layers_3/kernel`; weight norm already folded). The logical axes
of the codec's parameters (`musicgen_jax.sharding`) are all replicated by the rules (`codec.model` splits
the batch).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from musicgen_jax.config import CodecConfig

_DIMS = ("NWC", "WIO", "NWC")
_JNP_PAD_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
CONV_AXES = ("taps", "in_channels", "channels")


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...], bias: bool = False):
    init = nn.initializers.zeros if bias else nn.initializers.lecun_normal()
    return module.param(name, nn.with_logical_partitioning(init, axes), shape)


def conv_padding(length: int, kernel_size: int, stride: int, dilation: int, causal: bool) -> tuple[int, int]:
    """(left, right) padding of a streamable conv so that the output has ceil(length / stride) frames.

    The right side carries the `extra` samples that complete the last window (audiocraft's `StreamableConv1d` /
    `StreamableConvTranspose1d` padding).
    """
    k_eff = (kernel_size - 1) * dilation + 1
    padding_total = k_eff - stride
    n_frames = -((stride - length) // stride) + 1  # ceil((length - stride) / stride) + 1
    extra = (n_frames - 1) * stride + (k_eff - padding_total) - length
    if causal:
        return padding_total, extra
    right = padding_total // 2
    return padding_total - right, right + extra


def pad1d(x: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    """Pad `[B, T, C]` along T like audiocraft's pad1d, including reflect on inputs shorter than the pad."""
    length = x.shape[1]
    extra = 0
    if mode == "reflect" and length <= max(left, right):
        extra = max(left, right) - length + 1
        x = jnp.pad(x, ((0, 0), (0, extra), (0, 0)))
    y = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=_JNP_PAD_MODE[mode])
    return y[:, : y.shape[1] - extra]


class Conv1d(nn.Module):
    """Streamable Conv1d: padded so that `[B, T, C_in] -> [B, ceil(T / stride), features]`.

    Parameters: kernel `[k, C_in, C_out]` (logical axes ("taps", "in_channels", "channels")), bias `[C_out]`.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    pad_mode: str = "reflect"
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = _param(self, "kernel", (self.kernel_size, x.shape[-1], self.features), CONV_AXES)
        bias = _param(self, "bias", (self.features,), ("channels",), bias=True)
        left, right = conv_padding(x.shape[1], self.kernel_size, self.stride, self.dilation, self.causal)
        x = pad1d(x, left, right, self.pad_mode)
        y = lax.conv_general_dilated(
            x, kernel, (self.stride,), "VALID", rhs_dilation=(self.dilation,), dimension_numbers=_DIMS
        )
        return y + bias


def overlap_add(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """A transposed convolution before any trimming or bias: `x [B, T, C_in]`, `kernel [k, C_in, C_out]` ->
    `[B, (T - 1) * stride + k, C_out]`, y[t*s + j] += x[t] @ kernel[j] (PyTorch's `ConvTranspose1d` semantics).

    Computed as one matmul `[B*T, C_in] x [C_in, k * C_out]` followed by an overlap-add of the
    ceil(k / stride) shifted blocks: a conv over the stride-dilated input would multiply stride
    times as many (zero) samples (benchmarks/RESULTS.md, "Design choices").
    """
    k, s = kernel.shape[0], stride
    blocks = -(-k // s)
    kernel = jnp.pad(kernel, ((0, blocks * s - k), (0, 0), (0, 0)))  # zero taps up to a multiple of s
    b, t, _ = x.shape
    features = kernel.shape[-1]
    z = jnp.einsum("btc,kcd->btkd", x, kernel).reshape(b, t, blocks, s, features)
    # input frame i writes output samples i*s .. i*s + k - 1: block j lands at frame i + j
    full = sum(jnp.pad(z[:, :, j], ((0, 0), (j, blocks - 1 - j), (0, 0), (0, 0))) for j in range(blocks))
    return full.reshape(b, (t + blocks - 1) * s, features)[:, : (t - 1) * s + k]


class ConvTranspose1d(nn.Module):
    """Streamable ConvTranspose1d: `[B, T, C_in] -> [B, T * stride, features]` after trimming
    (`overlap_add`, then audiocraft's trim of k - stride samples).

    Parameters: kernel `[k, C_in, C_out]` (logical axes ("taps", "in_channels", "channels")) with PyTorch
    semantics y[t*s + j] += x[t] @ kernel[j], bias `[C_out]`.
    """

    features: int
    kernel_size: int
    stride: int
    causal: bool = False
    trim_right_ratio: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        kernel = _param(self, "kernel", (k, x.shape[-1], self.features), CONV_AXES)
        bias = _param(self, "bias", (self.features,), ("channels",), bias=True)
        full = overlap_add(x, kernel, s)
        padding_total = k - s
        right = math.ceil(padding_total * self.trim_right_ratio) if self.causal else padding_total // 2
        left = padding_total - right
        return full[:, left : full.shape[1] - right] + bias


class ResnetBlock(nn.Module):
    """x + Conv(ELU(Conv(ELU(x)))), hidden width dim // compress; identity or 1x1-conv shortcut."""

    config: CodecConfig
    dilation: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dim = x.shape[-1]
        conv = dict(pad_mode=c.pad_mode, causal=c.causal)
        h = Conv1d(dim // c.compress, c.residual_kernel_size, dilation=self.dilation, name="block_1", **conv)(nn.elu(x))
        h = Conv1d(dim, 1, name="block_3", **conv)(nn.elu(h))
        shortcut = x if c.true_skip else Conv1d(dim, 1, name="shortcut", **conv)(x)
        return shortcut + h


class LSTMLayer(nn.Module):
    """One unidirectional LSTM layer over time, zero initial state: `[B, T, C] -> [B, T, C]`.

    Parameters: kernel_ih `[C, 4C]`, kernel_hh `[C, 4C]` (logical axes ("channels", "gates")), bias `[4C]`
    (b_ih + b_hh), gates in the order i, f, g, o.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        kernel_ih = _param(self, "kernel_ih", (dim, 4 * dim), ("channels", "gates"))
        kernel_hh = _param(self, "kernel_hh", (dim, 4 * dim), ("channels", "gates"))
        bias = _param(self, "bias", (4 * dim,), ("gates",), bias=True)
        gates_x = x @ kernel_ih + bias  # all time steps at once; only h @ kernel_hh is sequential

        def step(carry, g):
            h, c = carry
            i, f, gg, o = jnp.split(g + h @ kernel_hh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros(x.shape[:1] + (dim,), x.dtype)
        _, hs = lax.scan(step, (zeros, zeros), jnp.swapaxes(gates_x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)


class LSTM(nn.Module):
    """Stacked LSTM with a skip connection over the whole stack: y = lstm(x) + x."""

    num_layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        for layer in range(self.num_layers):
            y = LSTMLayer(name=f"layer_{layer}")(y)
        return y + x


def encoder_layers(c: CodecConfig) -> list[tuple[str, dict]]:
    """The encoder's `nn.Sequential` as (kind, arguments) pairs; the list index is the layer index."""
    width = c.n_filters
    layers = [("conv", dict(features=width, kernel_size=c.kernel_size))]
    for ratio in reversed(c.ratios):
        layers += [("res", dict(dilation=c.dilation_base**j)) for j in range(c.n_residual_layers)]
        layers += [("elu", {}), ("conv", dict(features=2 * width, kernel_size=2 * ratio, stride=ratio))]
        width *= 2
    if c.lstm_layers:
        layers.append(("lstm", dict(num_layers=c.lstm_layers)))
    return layers + [("elu", {}), ("conv", dict(features=c.dimension, kernel_size=c.last_kernel_size))]


def decoder_layers(c: CodecConfig) -> list[tuple[str, dict]]:
    """The decoder's `nn.Sequential` as (kind, arguments) pairs; no final activation."""
    width = c.n_filters * 2 ** len(c.ratios)
    layers = [("conv", dict(features=width, kernel_size=c.kernel_size))]
    if c.lstm_layers:
        layers.append(("lstm", dict(num_layers=c.lstm_layers)))
    for ratio in c.ratios:
        width //= 2
        layers += [("elu", {}), ("convtr", dict(features=width, kernel_size=2 * ratio, stride=ratio))]
        layers += [("res", dict(dilation=c.dilation_base**j)) for j in range(c.n_residual_layers)]
    return layers + [("elu", {}), ("conv", dict(features=c.channels, kernel_size=c.last_kernel_size))]


def _run_layers(c: CodecConfig, layers: list[tuple[str, dict]], x: jax.Array) -> jax.Array:
    for index, (kind, kwargs) in enumerate(layers):
        name = f"layers_{index}"
        if kind == "elu":
            x = nn.elu(x)
        elif kind == "conv":
            x = Conv1d(**kwargs, pad_mode=c.pad_mode, causal=c.causal, name=name)(x)
        elif kind == "convtr":
            x = ConvTranspose1d(**kwargs, causal=c.causal, trim_right_ratio=c.trim_right_ratio, name=name)(x)
        elif kind == "res":
            x = ResnetBlock(c, **kwargs, name=name)(x)
        else:
            x = LSTM(**kwargs, name=name)(x)
    return x


class SEANetEncoder(nn.Module):
    """`[B, T, channels] -> [B, ceil(T / hop), dimension]`."""

    config: CodecConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _run_layers(self.config, encoder_layers(self.config), x)


class SEANetDecoder(nn.Module):
    """`[B, T', dimension] -> [B, T' * hop, channels]`."""

    config: CodecConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return _run_layers(self.config, decoder_layers(self.config), x)
