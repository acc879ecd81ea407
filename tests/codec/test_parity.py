"""Parity of the Flax codec with transformers' `EncodecModel` (the PyTorch reference).

Tolerances: codes identical; decoded audio within 1e-4 relative L2.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import save_file

from musicgen_jax.convert.codec_loader import load_codec
from tests.codec.conftest import hf_decode, hf_encode, rel_l2

# Lengths: frame multiple, not a multiple of 640, one short enough that reflect padding needs its
# short-input special case in deep layers, a single sample, and a longer odd length.
LENGTHS = [1280, 1000, 641, 1, 9617]


@pytest.fixture(scope="module")
def saved(hf_encodec, tmp_path_factory):
    pad_mode, model = hf_encodec
    directory = tmp_path_factory.mktemp(f"encodec_{pad_mode}")
    model.save_pretrained(directory)
    return pad_mode, model, directory


def test_config_read_from_checkpoint(saved):
    pad_mode, _, directory = saved
    codec = load_codec(directory)
    assert codec.config.pad_mode == pad_mode
    assert (codec.config.num_codebooks, codec.config.codebook_size, codec.config.n_filters) == (4, 2048, 4)
    assert codec.config.ratios == (8, 5, 4, 4) and codec.frame_rate == 50 and not codec.config.causal


@pytest.mark.parametrize("length", LENGTHS)
def test_codes_and_audio_match_transformers(saved, length):
    _, model, directory = saved
    codec = load_codec(directory)
    wav = (0.5 * np.random.default_rng(length).standard_normal((2, 1, length))).astype(np.float32)
    expected = hf_encode(model, wav)
    codes = np.asarray(codec.encode(wav))
    assert codes.shape == (2, 4, -(-length // 640)) == expected.shape
    np.testing.assert_array_equal(codes, expected)
    audio = np.asarray(codec.decode(codes))
    reference = hf_decode(model, expected)
    assert audio.shape == reference.shape == (2, 1, codes.shape[-1] * 640)
    assert rel_l2(audio, reference) < 1e-4


def test_weight_g_weight_v_spelling(saved, tmp_path):
    """Hub safetensors converted in 2023 store weight norm as weight_g / weight_v."""
    _, model, directory = saved
    state = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v.contiguous()
        for k, v in model.state_dict().items()
    }
    assert any(k.endswith("weight_g") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    wav = np.random.default_rng(1).standard_normal((1, 1, 3000)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(load_codec(tmp_path).encode(wav)), hf_encode(model, wav))


def test_stereo_interleaves_per_channel_codes(saved):
    """Stereo = mono codec per channel, codebooks ordered [L0, R0, L1, R1, ...] (audiocraft's
    `InterleaveStereoCompressionModel`)."""
    _, model, directory = saved
    codec = load_codec(directory, stereo=True)
    wav = np.random.default_rng(2).standard_normal((2, 2, 2000)).astype(np.float32)
    codes = np.asarray(codec.encode(wav))
    left, right = hf_encode(model, wav[:, :1]), hf_encode(model, wav[:, 1:])
    assert codes.shape == (2, 8, 4) and codec.num_codebooks == 8
    np.testing.assert_array_equal(codes[:, 0::2], left)
    np.testing.assert_array_equal(codes[:, 1::2], right)
    audio = np.asarray(codec.decode(codes))
    assert audio.shape == (2, 2, 4 * 640)
    assert rel_l2(audio[:, :1], hf_decode(model, left)) < 1e-4
    assert rel_l2(audio[:, 1:], hf_decode(model, right)) < 1e-4


def test_codes_vary_with_input(saved):
    """Guards the parity tests against a degenerate codec that maps every input to one code."""
    _, model, _ = saved
    wav = np.random.default_rng(3).standard_normal((4, 1, 6400)).astype(np.float32)
    codes = hf_encode(model, wav)
    assert all(len(np.unique(codes[:, q])) > 10 for q in range(codes.shape[1]))
