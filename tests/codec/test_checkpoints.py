"""Checkpoint formats and sources of the codec, and their errors.

Reference: a tiny transformers `EncodecModel` (tests/codec/conftest.py); audiocraft packages are
written here in audiocraft's on-disk layout (transformers' `convert_encodec_checkpoint_to_pytorch.py`, audiocraft's
`utils/export.py`).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from flax.traverse_util import flatten_dict

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.codec.weights import save_codec
from musicgen_jax.convert.codec_loader import load_codec
from tests.codec.conftest import hf_encode, tiny_hf_model
from tests.hub import add_repo, use_offline_cache

WAV = np.random.default_rng(7).standard_normal((1, 1, 4000)).astype(np.float32)


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model("constant", seed=1)


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf_encodec")
    hf_model.save_pretrained(directory)
    return directory


def assert_same_params(a, b):
    fa, fb = flatten_dict(a.params), flatten_dict(b.params)
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=str(key))


def audiocraft_state(hf_model) -> dict:
    """The HF weights under audiocraft's names, weight norm as weight_g / weight_v."""
    convtr = {3, 6, 9, 12}
    state = {}
    for key, value in hf_model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        )
        m = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", key)
        if m:
            part, i, rest = m.group(1), int(m.group(2)), m.group(3)
            if rest.startswith("conv."):
                wrap = "convtr.convtr." if part == "decoder" and i in convtr else "conv.conv."
                rest = wrap + rest[len("conv.") :]
            else:
                rest = rest.replace(".conv.", ".conv.conv.")
            key = f"{part}.model.{i}.{rest}"
        else:
            key = key.replace("quantizer.layers.", "quantizer.vq.layers.").replace(".codebook.", "._codebook.")
        state[key] = value.clone()
    return state


AUDIOCRAFT_CFG = """\
sample_rate: 32000
channels: 1
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${sample_rate}
  channels: ${channels}
  causal: false
  renormalize: false
seanet:
  dimension: 16
  channels: ${channels}
  causal: ${encodec.causal}
  n_filters: 4
  n_residual_layers: 1
  ratios: [8, 5, 4, 4]
  activation: ELU
  activation_params: {alpha: 1.0}
  norm: weight_norm
  norm_params: {}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: constant
  true_skip: true
  compress: 2
  lstm: 2
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {}
rvq:
  n_q: 4
  q_dropout: false
  bins: 2048
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
"""


def test_audiocraft_package_equals_hf_twin(hf_model, hf_dir, tmp_path):
    state = audiocraft_state(hf_model)
    assert "decoder.model.3.convtr.convtr.weight_g" in state and "quantizer.vq.layers.0._codebook.embed" in state
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": state, "xp.cfg": AUDIOCRAFT_CFG, "version": "1.0", "exported": True}, path)
    from_ac, from_hf = load_codec(path), load_codec(hf_dir)
    assert from_ac.config == from_hf.config
    assert_same_params(from_ac, from_hf)
    np.testing.assert_array_equal(np.asarray(from_ac.encode(WAV)), hf_encode(hf_model, WAV))


def test_audiocraft_pointer_resolves_through_hub(hf_model, hf_dir, tmp_path, monkeypatch):
    use_offline_cache(monkeypatch, tmp_path / "cache")
    add_repo(tmp_path / "cache", "facebook/encodec_32khz", hf_dir)
    repo = tmp_path / "musicgen"
    repo.mkdir()
    torch.save(
        {"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.0"},
        repo / "compression_state_dict.bin",
    )
    codec = load_codec(repo)
    np.testing.assert_array_equal(np.asarray(codec.encode(WAV)), hf_encode(hf_model, WAV))
    assert_same_params(codec, load_codec("facebook/encodec_32khz"))


def test_hf_musicgen_checkpoint_prefix_and_stereo(hf_model, hf_dir, tmp_path, monkeypatch):
    """A MusicGen checkpoint keeps the codec under `audio_encoder.`; stereo comes from its decoder config."""
    from safetensors.torch import save_file

    codec_cfg = json.loads((hf_dir / "config.json").read_text())
    config = {
        "model_type": "musicgen",
        "audio_encoder": codec_cfg,
        "decoder": {"audio_channels": 2},
        "text_encoder": {"model_type": "t5"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = {f"audio_encoder.{k}": v.contiguous() for k, v in hf_model.state_dict().items()}
    state["decoder.model.decoder.embed_tokens.0.weight"] = torch.zeros(3, 2)
    save_file(state, str(tmp_path / "model.safetensors"))
    codec = load_codec(tmp_path)
    assert codec.stereo and codec.num_codebooks == 8
    assert_same_params(codec, load_codec(hf_dir))
    assert not load_codec(tmp_path, stereo=False).stereo


def test_sharded_safetensors_and_pytorch_bin(hf_model, hf_dir, tmp_path):
    sharded, pickled = tmp_path / "sharded", tmp_path / "bin"
    hf_model.save_pretrained(sharded, max_shard_size="50KB")
    assert (sharded / "model.safetensors.index.json").exists()
    pickled.mkdir()
    (pickled / "config.json").write_text((hf_dir / "config.json").read_text())
    torch.save(hf_model.state_dict(), pickled / "pytorch_model.bin")
    reference = load_codec(hf_dir)
    assert_same_params(load_codec(sharded), reference)
    assert_same_params(load_codec(pickled), reference)


def test_converted_directory_round_trip(hf_dir, tmp_path):
    codec = load_codec(hf_dir, stereo=True)
    out = save_codec(codec, tmp_path / "converted")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.safetensors"]
    again = load_codec(out)
    assert again.config == codec.config and again.stereo
    assert_same_params(again, codec)
    save_codec(load_codec(hf_dir), out)  # overwriting replaces, leaves no temporary directories
    assert not load_codec(out).stereo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]


def test_truncated_checkpoint_is_one_clear_error(hf_dir, tmp_path):
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    data = (hf_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read safetensors file .*model\.safetensors"):
        load_codec(tmp_path)


def test_wrong_codebook_count_names_missing_keys(hf_dir, tmp_path):
    config = json.loads((hf_dir / "config.json").read_text())
    config["target_bandwidths"] = [4.4]  # 8 codebooks; the weights have 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError) as info:
        load_codec(tmp_path)
    message = str(info.value)
    assert "8 codebooks" in message and "missing keys (4)" in message
    assert "quantizer.layers.4.codebook.embed" in message and "quantizer.layers.7.codebook.embed" in message


def test_mismatched_checkpoint_lists_unexpected_and_wrong_shapes(hf_model, hf_dir, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    del state["decoder.layers.1.lstm.bias_hh_l1"]
    state["encoder.layers.99.conv.bias"] = torch.zeros(3)
    state["quantizer.layers.2.codebook.embed"] = torch.zeros(2048, 8)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(CheckpointError) as info:
        load_codec(tmp_path)
    message = str(info.value)
    assert "missing keys (1): decoder.layers.1.lstm.bias_hh_l1" in message
    assert "unexpected keys (1): encoder.layers.99.conv.bias" in message
    assert "quantizer.layers.2.codebook.embed: (2048, 8) (expected (2048, 16))" in message


def test_unknown_source_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_codec(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        load_codec(tmp_path)
    bad = tmp_path / "compression_state_dict.bin"
    torch.save({"state": {}}, bad)
    with pytest.raises(CheckpointError, match="needs 'best_state' and 'xp.cfg'"):
        load_codec(bad)


def test_audiocraft_config_with_unresolvable_reference(hf_model, tmp_path):
    cfg = yaml.safe_load(AUDIOCRAFT_CFG)
    del cfg["sample_rate"]
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": audiocraft_state(hf_model), "xp.cfg": yaml.safe_dump(cfg)}, path)
    with pytest.raises(CheckpointError, match=r"unresolvable reference \$\{sample_rate\}"):
        load_codec(path)
