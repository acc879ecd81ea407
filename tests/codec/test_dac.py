"""Parity of the Flax DAC (`musicgen_jax.codec.dac`) with transformers' `DacModel` and descript's `DAC` (the `dac`
package, `tests/codec/descript_api.py`), each with random weights of the released 44.1 kHz size, loaded from the
format that reference writes: a `save_pretrained` directory and a `dac.utils.load_model` checkpoint file.

Tolerances: codes identical; decoded audio (peaks near 0.99) within 5e-5 absolute, about 4 times the largest
error seen (1.3e-5 with the narrow 24 kHz model, 8.7e-6 at 44.1 kHz).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import DacConfig as HFDacConfig
from transformers import DacModel

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.codec.dac import weights as dac_weights
from musicgen_jax.codec.dac.weights import (
    config_from_descript,
    params_from_descript_state_dict,
    params_from_hf_state_dict,
)
from musicgen_jax.config import DAC_16KHZ, DAC_24KHZ, DAC_44KHZ, DAC_44KHZ_16KBPS, DacConfig
from musicgen_jax.convert.codec_loader import load_codec
from tests.codec.conftest import tiny_hf_model
from tests.codec.descript_api import descript_checkpoint, descript_dac_class
from tests.hub import add_repo, use_offline_cache

AUDIO_TOL = 5e-5
# descript's code uses torch's old weight_norm and torch.jit.script, both deprecated in torch 2.13
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm`", "ignore:`torch.jit.script`")


def music(length: int, sample_rate: int, seed: int) -> np.ndarray:
    """`[1, 1, length]` float32: notes every 0.15 s (harmonic tones, partials 1/k, random pitches) under
    attack-decay envelopes, peak 0.5, plus noise at 0.01."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sample_rate
    wav = np.zeros(length)
    for onset in np.arange(0.0, t[-1], 0.15):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        since = np.clip(t - onset, 0.0, None)
        envelope = (t >= onset) * (1 - np.exp(-since * 80)) * np.exp(-since * 6)
        wav += envelope * sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 7))
    wav = 0.5 * wav / np.abs(wav).max() + 0.01 * rng.standard_normal(length)
    return wav.astype(np.float32)[None, None]


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, at scales where the codes follow the signal and the decoder's tanh does not
    saturate: weight-norm gains (`weight_g`, `original0`) 0.7 * U(0.5, 1.5) (each output row of norm about 0.7:
    the signal neither dies out nor blows up through the blocks), biases N(0, 0.02), Snake alphas U(0.5, 1.5)
    but each Snake's first channel 0 (where the 1e-9 of the references' Snake keeps the output finite),
    codebooks N(0, 1) (their scale drops out: they are L2-normalized). Directions `v` keep their random init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.copy_(0.7 * (torch.rand(p.shape, generator=generator) + 0.5))
            elif name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
                p[0, 0, 0] = 0.0
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
            elif name.endswith("codebook.weight"):
                p.copy_(torch.randn(p.shape, generator=generator))
            else:
                assert name.endswith(("weight_v", "original1")), name


def hf_config(config: DacConfig) -> HFDacConfig:
    return HFDacConfig(
        encoder_hidden_size=config.encoder_dim,
        downsampling_ratios=list(config.encoder_rates),
        decoder_hidden_size=config.decoder_dim,
        n_codebooks=config.n_codebooks,
        codebook_size=config.codebook_size,
        codebook_dim=config.codebook_dim,
        sampling_rate=config.sample_rate,
    )


def hf_model(config: DacConfig, seed: int) -> DacModel:
    """transformers' `DacModel` with weight norm (saved as `parametrizations.weight.original0/1`), `randomize`d."""
    torch.manual_seed(seed)
    model = DacModel(hf_config(config)).eval()
    model.apply_weight_norm()
    randomize(model, seed)
    return model


def hf_encode(model: DacModel, wav: np.ndarray, hop: int) -> np.ndarray:
    """Codes of `wav` zero-padded on the right to whole frames, as transformers' `DacFeatureExtractor` pads."""
    padded = np.pad(wav, ((0, 0), (0, 0), (0, -wav.shape[-1] % hop)))
    with torch.no_grad():
        return model.encode(torch.from_numpy(padded)).audio_codes.numpy()


def hf_decode(model: DacModel, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(audio_codes=torch.from_numpy(codes)).audio_values.numpy()


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    model = hf_model(DAC_44KHZ, seed=0)
    directory = tmp_path_factory.mktemp("dac_44khz")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def hf_codec(hf_reference):
    return load_codec(hf_reference[1])


@pytest.fixture(scope="module")
def descript_reference(tmp_path_factory):
    """descript's `DAC()` (the 44.1 kHz model), `randomize`d, and its checkpoint file."""
    torch.manual_seed(1)
    model = descript_dac_class()().eval()
    randomize(model, seed=1)
    path = tmp_path_factory.mktemp("descript") / "weights_44khz_8kbps_0.0.1.pth"
    descript_checkpoint(model, path)
    return model, path


def test_config_read_from_transformers(hf_codec):
    assert hf_codec.config == DAC_44KHZ
    assert (hf_codec.config.hop_length, hf_codec.frame_rate) == (512, 44100 / 512)
    assert (hf_codec.sample_rate, hf_codec.channels, hf_codec.num_codebooks) == (44100, 1, 9)


# 30 frames exactly; 11000 samples = 21.5 frames, padded to 22 (test_descript_checkpoint_matches_descript's shape:
# compiled once)
@pytest.mark.parametrize("length,batch", [(15360, 2), (11000, 1)])
def test_codes_and_audio_match_transformers(hf_reference, hf_codec, length, batch):
    model, _ = hf_reference
    wav = np.concatenate([music(length, 44100, seed) for seed in range(batch)])
    expected = hf_encode(model, wav, 512)
    codes = np.asarray(hf_codec.encode(wav))
    frames = -(-length // 512)
    assert codes.shape == expected.shape == (batch, 9, frames) and codes.dtype == np.int32
    np.testing.assert_array_equal(codes, expected)
    assert all(len(np.unique(codes[:, q])) > frames // 3 for q in range(9))  # the codes follow the signal
    reference = hf_decode(model, expected)
    audio = np.asarray(hf_codec.decode(codes))
    assert audio.shape == (batch, 1, frames * 512) and reference.shape == (batch, frames * 512)
    assert 0.05 < reference.std() and np.abs(reference).max() < 0.999  # not lost in tanh's saturation
    assert np.abs(audio[:, 0] - reference).max() < AUDIO_TOL


def test_descript_checkpoint_matches_descript(descript_reference):
    """The file `dac.utils.load_model` reads, weight norm as `weight_g` / `weight_v`: descript's `DAC.compress`
    path (`preprocess`, `encode`) and audiocraft's `DAC.decode` (`quantizer.from_codes`, `decode`), with all
    codebooks and with 4 (audiocraft's `set_num_codebooks(4)`: descript's `n_quantizers=4`)."""
    model, path = descript_reference
    codec = load_codec(path)
    assert codec.config == DAC_44KHZ and codec.source == str(path)
    wav = music(11000, 44100, seed=3)
    for n in (9, 4):
        codec.set_num_codebooks(n)
        with torch.no_grad():
            expected = model.encode(model.preprocess(torch.from_numpy(wav), 44100), n)[1]
            reference = model.decode(model.quantizer.from_codes(expected)[0]).numpy()
        codes = np.asarray(codec.encode(wav))
        assert codes.shape == (1, n, 22) and codec.num_codebooks == n
        np.testing.assert_array_equal(codes, expected.numpy())
        audio = np.asarray(codec.decode(codes))
        assert audio.shape == reference.shape == (1, 1, 22 * 512)
        assert np.abs(audio - reference).max() < AUDIO_TOL


@pytest.mark.parametrize(
    "preset,hub_id", [(DAC_24KHZ, "descript/dac_24khz"), (DAC_16KHZ, "descript/dac_16khz")], ids=["24khz", "16khz"]
)
def test_24khz_and_16khz_rates_match_transformers(preset, hub_id, tmp_path, monkeypatch):
    """The released rates (an odd stride: the decoder gives frames * 320 - 8 samples) and codebooks, at narrow
    widths; loaded by hub id (from an offline hub cache)."""
    config = dataclasses.replace(preset, encoder_dim=8, latent_dim=None, decoder_dim=64)
    model = hf_model(config, seed=2)
    model.save_pretrained(tmp_path / "model")
    add_repo(tmp_path / "hub", hub_id, tmp_path / "model")
    use_offline_cache(monkeypatch, tmp_path / "hub")
    codec = load_codec(f"//pretrained/{hub_id.removeprefix('descript/')}")  # audiocraft's name of the release
    assert codec.config == config and codec.config.hop_length == 320 and codec.source == hub_id
    wav = np.concatenate([music(4000, config.sample_rate, seed) for seed in (4, 5)])
    expected = hf_encode(model, wav, 320)
    codes = np.asarray(codec.encode(wav))
    assert codes.shape == (2, config.n_codebooks, 13)
    np.testing.assert_array_equal(codes, expected)
    assert len(np.unique(codes)) > 50
    audio = np.asarray(codec.decode(codes))
    reference = hf_decode(model, expected)
    assert audio.shape == (2, 1, 13 * 320 - 8) and reference.shape == (2, 13 * 320 - 8)
    assert np.abs(audio[:, 0] - reference).max() < AUDIO_TOL


def _ones(state: dict) -> dict[str, np.ndarray]:
    return {key: np.ones(tuple(value.shape), np.float32) for key, value in state.items()}


@pytest.mark.parametrize(
    "config", [DAC_44KHZ, DAC_44KHZ_16KBPS, DAC_24KHZ, DAC_16KHZ], ids=["44khz", "44khz_16kbps", "24khz", "16khz"]
)
def test_released_architectures_match_both_layouts(config):
    """descript's `DAC` built with each released model's arguments (on the meta device: names and shapes only)
    has exactly the keys and shapes of our descript key map, and its checkpoint arguments give back the config;
    so does transformers' `DacModel` (it cannot express the 16 kbps model's narrower latent)."""
    with torch.device("meta"):
        model = descript_dac_class()(**config.to_dict())
    params_from_descript_state_dict(_ones(model.state_dict()), config)
    assert config_from_descript({**config.to_dict(), "quantizer_dropout": 0.5}) == config
    if config is not DAC_44KHZ_16KBPS:
        with torch.device("meta"):
            state = DacModel(hf_config(config)).state_dict()
        params_from_hf_state_dict(_ones(state), config)


TINY = DacConfig(encoder_dim=4, decoder_dim=16, n_codebooks=2, codebook_size=16, codebook_dim=2)


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    """The state dict of a narrow descript `DAC` with 2 codebooks of 16 entries."""
    torch.manual_seed(0)
    return descript_dac_class()(**TINY.to_dict()).state_dict()


def test_bad_descript_checkpoints_name_the_file_and_the_problem(tiny_state, tmp_path):
    tiny_hf_model(seed=0).save_pretrained(tmp_path / "encodec")
    state = dict(tiny_state)
    state.pop("decoder.model.1.block.1.weight_v")
    state["quantizer.quantizers.1.codebook.weight"] = torch.zeros(16, 3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state, "metadata": {"kwargs": TINY.to_dict()}}, path)
    with pytest.raises(CheckpointError) as error:
        load_codec(path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys (1): decoder.model.1.block.1.weight" in message
    assert "unexpected keys (1): decoder.model.1.block.1.weight_g" in message
    assert "quantizer.quantizers.1.codebook.weight: (16, 3) (expected (16, 2))" in message

    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"weights.pth: not a descript DAC checkpoint"):
        load_codec(path)
    torch.save({"state_dict": state, "metadata": {"kwargs": {**TINY.to_dict(), "codebook_dim": [2, 4]}}}, path)
    with pytest.raises(CheckpointError, match=r"weights.pth: codebooks of different widths \[2, 4\]"):
        load_codec(path)
    with pytest.raises(CheckpointError, match="expected a DAC config, got model_type 'encodec'"):
        dac_weights.config_from_hf({"model_type": "encodec"})
    torch.save({"state_dict": tiny_state, "metadata": {"kwargs": TINY.to_dict()}}, path)
    with pytest.raises(CheckpointError, match="weights.pth: DAC codes mono audio"):
        load_codec(path, stereo=True)
    with pytest.raises(CheckpointError, match="an EnCodec codes with all its 4 codebooks; choosing 2 is supported"):
        load_codec(tmp_path / "encodec", num_codebooks=2)


def test_set_num_codebooks_bounds_and_input_checks(tiny_state, tmp_path):
    torch.save({"state_dict": tiny_state, "metadata": {"kwargs": TINY.to_dict()}}, tmp_path / "weights.pth")
    codec = load_codec(tmp_path / "weights.pth")
    for n in (0, 3):
        with pytest.raises(ValueError, match=r"the number of codebooks must lie in \[1, 2\]"):
            codec.set_num_codebooks(n)
    codec.set_num_codebooks(1)
    with pytest.raises(ValueError, match=r"expected codes of shape \[batch, 1, frames > 0\]"):
        codec.decode(np.zeros((1, 2, 3), np.int32))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        codec.decode(np.full((1, 1, 3), 16))
    with pytest.raises(ValueError, match=r"expected audio of shape \[batch, 1, samples > 0\]"):
        codec.encode(np.zeros((1, 2, 512), np.float32))
