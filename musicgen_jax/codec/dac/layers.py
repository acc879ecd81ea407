"""DAC's layers, Flax linen, channels-last `[B, T, C]`: the Snake activation and PyTorch-style zero-padded
(transposed) convolutions (descript's `Snake1d`, `WNConv1d`, `WNConvTranspose1d`; transformers' `Snake1d` and
the `nn.Conv1d` / `nn.ConvTranspose1d` of `DacModel`).

The references' convolutions are weight-normed; the norm is folded into the kernels when the weights are
loaded (`musicgen_jax.codec.weights.fold_weight_norm`), so these hold plain kernels `[k, C_in, C_out]`
(logical axes as EnCodec's, replicated by the rules of `musicgen_jax.sharding`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from musicgen_jax.codec.seanet import CONV_AXES, overlap_add

_DIMS = ("NWC", "WIO", "NWC")


def _kernel_and_bias(module: nn.Module, shape: tuple[int, int, int]) -> tuple[jax.Array, jax.Array]:
    kernel = module.param("kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(), CONV_AXES), shape)
    bias = module.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("channels",)), shape[-1:])
    return kernel, bias


def strided_geometry(stride: int) -> tuple[int, int]:
    """(kernel size, padding) of the references' down- and upsampling convolutions: 2 * stride and
    ceil(stride / 2). Downsampling maps T (a multiple of stride) to T / stride frames; upsampling maps T
    frames to T * stride samples for an even stride, T * stride - 1 for an odd one."""
    return 2 * stride, math.ceil(stride / 2)


class Snake(nn.Module):
    """x + sin(alpha x)^2 / (alpha + 1e-9), one alpha per channel: `[B, T, C] -> [B, T, C]` (descript's `snake`).
    The 1e-9 keeps a channel whose alpha is 0 at x (1e9 * 0) instead of NaN (inf * 0).

    Parameter: alpha `[C]` (the references' `[1, C, 1]`).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.with_logical_partitioning(nn.initializers.ones, ("channels",)), x.shape[-1:])
        return x + jnp.reciprocal(alpha + 1e-9) * jnp.sin(alpha * x) ** 2


class Conv1d(nn.Module):
    """PyTorch's `nn.Conv1d(padding=padding)`: `padding` zeros on both sides, `[B, T, C_in] ->
    [B, (T + 2 padding - dilation (k - 1) - 1) // stride + 1, features]`."""

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _kernel_and_bias(self, (self.kernel_size, x.shape[-1], self.features))
        y = lax.conv_general_dilated(
            x,
            kernel,
            (self.stride,),
            [(self.padding, self.padding)],
            rhs_dilation=(self.dilation,),
            dimension_numbers=_DIMS,
        )
        return y + bias


class ConvTranspose1d(nn.Module):
    """PyTorch's `nn.ConvTranspose1d(padding=padding)`: the full transposed convolution with `padding` samples
    cut from each end, `[B, T, C_in] -> [B, (T - 1) stride + k - 2 padding, features]`."""

    features: int
    kernel_size: int
    stride: int
    padding: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _kernel_and_bias(self, (self.kernel_size, x.shape[-1], self.features))
        full = overlap_add(x, kernel, self.stride)
        return full[:, self.padding : full.shape[1] - self.padding] + bias
