"""Codec shapes at the real size, padding arithmetic, and input checks."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from musicgen_jax.codec.model import Codec, deinterleave_stereo, init_params, interleave_stereo
from musicgen_jax.codec.seanet import conv_padding
from musicgen_jax.config import ENCODEC_32KHZ, CodecConfig


@pytest.mark.parametrize(
    "kernel,stride,length,expected",
    [
        (7, 1, 100, (3, 3)),
        (3, 1, 5, (1, 1)),
        (1, 1, 5, (0, 0)),
        (8, 4, 16, (2, 2)),
        (8, 4, 17, (2, 5)),
        (10, 5, 13, (3, 4)),
        (16, 8, 3, (4, 9)),
    ],
)
def test_conv_padding_matches_spec(kernel, stride, length, expected):
    """audiocraft's `StreamableConv1d` / `StreamableConvTranspose1d` padding: k8 s4 -> (2, 2 + extra), k10 s5 -> (3,
    2 + extra), k16 s8 -> (4, 4 + extra)."""
    left, right = conv_padding(length, kernel, stride, 1, causal=False)
    assert (left, right) == expected
    assert (length + left + right - kernel) // stride + 1 == -(-length // stride)


@pytest.mark.slow
def test_real_size_codec_shapes():
    """The released architecture (64 filters): frames = ceil(samples / 640), decode gives frames * 640."""
    config = ENCODEC_32KHZ
    assert (config.hop_length, config.frame_rate, config.n_filters) == (640, 50, 64)
    params = init_params(config, jax.random.key(0))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert 55e6 < n_params < 65e6
    codec = Codec(config, params)
    wav = np.random.default_rng(0).standard_normal((1, 1, 32001)).astype(np.float32) * 0.1
    codes = np.asarray(codec.encode(wav))
    assert codes.shape == (1, 4, 51) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 2048
    assert codec.decode(codes).shape == (1, 1, 51 * 640)


def test_interleave_order():
    codes = np.arange(2 * 2 * 3 * 5).reshape(2, 2, 3, 5)  # [B, channel, K, T]
    mixed = np.asarray(interleave_stereo(codes))
    np.testing.assert_array_equal(mixed[:, 0], codes[:, 0, 0])  # L0
    np.testing.assert_array_equal(mixed[:, 1], codes[:, 1, 0])  # R0
    np.testing.assert_array_equal(mixed[:, 4], codes[:, 0, 2])  # L2
    np.testing.assert_array_equal(np.asarray(deinterleave_stereo(mixed)), codes)


@pytest.fixture(scope="module")
def tiny_codec():
    config = CodecConfig(n_filters=2, dimension=8, codebook_size=16, lstm_layers=1)
    return Codec(config, init_params(config, jax.random.key(1)))


@pytest.mark.parametrize(
    "wav,message",
    [
        (np.zeros((1, 2, 100)), r"expected audio of shape \[batch, 1, samples > 0\]"),
        (np.zeros((100,)), "expected audio of shape"),
        (np.zeros((1, 1, 0)), "expected audio of shape"),
        (np.full((1, 1, 100), np.nan), "NaN or infinite"),
    ],
)
def test_bad_audio_input(tiny_codec, wav, message):
    with pytest.raises(ValueError, match=message):
        tiny_codec.encode(wav)


@pytest.mark.parametrize(
    "codes,message",
    [
        (np.zeros((1, 3, 5), np.int32), r"expected codes of shape \[batch, 4, frames > 0\]"),
        (np.zeros((1, 4, 5), np.float32), "codes must be integers"),
        (np.full((1, 4, 5), -1), r"codes must lie in \[0, 16\)"),
    ],
)
def test_bad_codes_input(tiny_codec, codes, message):
    with pytest.raises(ValueError, match=message):
        tiny_codec.decode(codes)


def test_config_validation():
    with pytest.raises(ValueError, match="pad_mode must be one of"):
        CodecConfig(pad_mode="circular")
    with pytest.raises(ValueError, match="non-positive"):
        CodecConfig(num_codebooks=0)
    with pytest.raises(ValueError, match="stereo interleaving needs a mono codec"):
        Codec(CodecConfig(channels=2), {}, stereo=True)
