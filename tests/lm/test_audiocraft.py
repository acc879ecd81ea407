"""audiocraft LM packages (`state_dict.bin`, audiocraft's `utils/export.py`) against the transformers twin.

The reference is the tiny transformers MusicGen (and MusicGen-Melody) of tests/lm/conftest.py, written here
in audiocraft's on-disk layout: fused `in_proj_weight` (q | k | v rows), audiocraft key names, the T5 (and
chroma) projection under `condition_provider`, and an `xp.cfg` YAML string laid out as audiocraft's merged
config (with its unresolved `${...}` references).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict
from safetensors.torch import save_file

from musicgen_jax.audio import write_audio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.cli import convert as convert_torch_weights
from musicgen_jax.cli import sample
from musicgen_jax.codec.weights import parse_audiocraft_cfg
from musicgen_jax.components import load_converted
from musicgen_jax.convert import audiocraft
from musicgen_jax.convert.audiocraft import (
    lm_config_from_audiocraft,
    lm_state_to_hf,
    load_audiocraft_lm,
    t5_name_from_audiocraft,
)
from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from tests.codec.test_checkpoints import AUDIOCRAFT_CFG
from tests.codec.test_checkpoints import audiocraft_state as codec_state
from tests.hub import add_repo, use_offline_cache
from tests.lm.conftest import tiny_hf_musicgen
from tests.lm.test_parity import load

TINY_T5 = "t5-tiny-test"  # registered with the tiny model's d_model (32) by the `tiny_t5` fixture

TEXT_CONDITIONING = """\
classifier_free_guidance:
  training_dropout: 0.3
  inference_coef: 3.0
attribute_dropout: {{}}
fuser:
  cross_attention_pos_emb: false
  cross_attention_pos_emb_scale: 1
  sum: []
  prepend: []
  cross:
  - description
  input_interpolate: []
conditioners:
  description:
    model: t5
    t5:
      name: {t5}
      finetune: false
      word_dropout: 0.3
      normalize_text: false
"""

MELODY_CONDITIONING = """\
classifier_free_guidance:
  training_dropout: 0.2
  inference_coef: 3.0
attribute_dropout:
  args:
    active_on_eval: false
  text: {{}}
  wav:
    self_wav: 0.5
fuser:
  cross_attention_pos_emb: false
  cross_attention_pos_emb_scale: 1
  sum: []
  prepend:
  - self_wav
  - description
  cross: []
  input_interpolate: []
conditioners:
  self_wav:
    model: chroma_stem
    chroma_stem:
      sample_rate: ${{sample_rate}}
      n_chroma: 12
      radix2_exp: 14
      argmax: true
      match_len_on_eval: false
      eval_wavs: null
      n_eval_wavs: 100
      cache_path: null
  description:
    model: t5
    t5:
      name: {t5}
      finetune: false
      word_dropout: 0.2
      normalize_text: false
"""

XP_CFG = """\
device: cuda
dtype: float32
autocast: true
autocast_dtype: float16
seed: 2036
dora:
  dir: /checkpoint/${{oc.env:USER}}/experiments/audiocraft/outputs
  use_rendezvous: false
solver: musicgen
sample_rate: 32000
channels: {channels}
compression_model_checkpoint: //pretrained/facebook/encodec_32khz
compression_model_n_q: null
tokens:
  padding_with_special_token: false
interleave_stereo_codebooks:
  use: {stereo}
  per_timestep: false
dataset:
  batch_size: 192
  segment_duration: {segment_duration}
metrics:
  chroma_cosine:
    use_gt: false
    model: chroma_base
    chroma_base:
      sample_rate: ${{sample_rate}}
      n_chroma: 12
generate:
  audio:
    format: wav
    strategy: loudness
    sample_rate: ${{sample_rate}}
{conditioning}\
lm_model: transformer_lm
codebooks_pattern:
  modeling: delay
  delay:
    delays: {delays}
    flatten_first: 0
    empty_initial: 0
  unroll:
    flattening: [0, 1, 2, 3]
    delays: [0, 0, 0, 0]
  music_lm:
    group_by: 2
  coarse_first:
    delays: [0, 0, 0]
transformer_lm:
  dim: {dim}
  num_heads: {heads}
  num_layers: {layers}
  hidden_scale: 4
  n_q: {n_q}
  card: 2048
  dropout: 0.0
  emb_lr: null
  activation: gelu
  norm_first: true
  bias_ff: false
  bias_attn: false
  bias_proj: false
  past_context: null
  causal: true
  custom: false
  memory_efficient: true
  attention_as_float32: false
  layer_scale: null
  positional_embedding: sin
  xpos: false
  checkpointing: none
  weight_init: gaussian
  depthwise_init: current
  zero_bias_init: true
  norm: layer_norm
  cross_attention: false
  qk_layer_norm: false
  qk_layer_norm_cross: false
  attention_dropout: null
  kv_repeat: 1
  two_step_cfg: false
"""


# 3 s segments: int(3 * 32000) // 4096 + 1 = 24 chroma frames, the tiny MusicGen-Melody's `chroma_length`.
TINY_SEGMENT = 3
WINDOW = "condition_provider.conditioners.self_wav.chroma.spec.window"


def xp_cfg(
    dim=64, heads=4, layers=2, delays=(0, 1, 2, 3), stereo=False, melody=False, t5=TINY_T5, segment_duration=30
) -> str:
    conditioning = (MELODY_CONDITIONING if melody else TEXT_CONDITIONING).format(t5=t5)
    return XP_CFG.format(
        dim=dim,
        heads=heads,
        layers=layers,
        n_q=len(delays),
        delays=list(delays),
        stereo=str(stereo).lower(),
        channels=2 if stereo else 1,
        conditioning=conditioning,
        segment_duration=segment_duration,
    )


def audiocraft_state(hf_state: dict[str, torch.Tensor], num_layers: int, num_codebooks: int) -> dict:
    """A transformers MusicGen state dict in audiocraft's `state_dict.bin` `best_state`
    layout. A MusicGen-Melody
        one (with `audio_enc_to_dec_proj`) has no cross-attention and gets the chroma projection and the chroma
        spectrogram's Hann window buffer (n_fft 2**14)."""
    dec, state = "decoder.model.decoder", {}
    melody = "audio_enc_to_dec_proj.weight" in hf_state
    for k in range(num_codebooks):
        state[f"emb.{k}.weight"] = hf_state[f"{dec}.embed_tokens.{k}.weight"]
        state[f"linears.{k}.weight"] = hf_state[f"decoder.lm_heads.{k}.weight"]
    attentions = [("self_attn", "self_attn")] + ([] if melody else [("encoder_attn", "cross_attention")])
    norms = [("self_attn_layer_norm", "norm1"), ("final_layer_norm", "norm2")]
    norms += [] if melody else [("encoder_attn_layer_norm", "norm_cross")]
    for i in range(num_layers):
        hf, ac = f"{dec}.layers.{i}", f"transformer.layers.{i}"
        for hf_attn, ac_attn in attentions:
            state[f"{ac}.{ac_attn}.in_proj_weight"] = torch.cat(
                [hf_state[f"{hf}.{hf_attn}.{p}_proj.weight"] for p in "qkv"], dim=0
            )
            state[f"{ac}.{ac_attn}.out_proj.weight"] = hf_state[f"{hf}.{hf_attn}.out_proj.weight"]
        state[f"{ac}.linear1.weight"] = hf_state[f"{hf}.fc1.weight"]
        state[f"{ac}.linear2.weight"] = hf_state[f"{hf}.fc2.weight"]
        for hf_norm, ac_norm in norms:
            for p in ("weight", "bias"):
                state[f"{ac}.{ac_norm}.{p}"] = hf_state[f"{hf}.{hf_norm}.{p}"]
    for p in ("weight", "bias"):
        state[f"out_norm.{p}"] = hf_state[f"{dec}.layer_norm.{p}"]
        state[f"condition_provider.conditioners.description.output_proj.{p}"] = hf_state[f"enc_to_dec_proj.{p}"]
        if melody:
            state[f"condition_provider.conditioners.self_wav.output_proj.{p}"] = hf_state[f"audio_enc_to_dec_proj.{p}"]
    if melody:
        state[WINDOW] = torch.hann_window(2**14)
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def write_package(path, best_state: dict, cfg: str):
    torch.save({"best_state": best_state, "xp.cfg": cfg, "version": "1.3.0", "exported": True}, path)
    return path


@pytest.fixture
def tiny_t5(monkeypatch):
    monkeypatch.setitem(audiocraft.T5_DIMS, TINY_T5, 32)


@pytest.fixture(scope="module")
def twin_state(hf_musicgen):
    model, _ = hf_musicgen
    return audiocraft_state(model.state_dict(), num_layers=2, num_codebooks=4)


def test_twin_converts_to_the_transformers_parameters(hf_musicgen, twin_state, tmp_path, tiny_t5):
    _, directory = hf_musicgen
    config, params, t5_name, stereo = load_audiocraft_lm(
        write_package(tmp_path / "state_dict.bin", twin_state, xp_cfg())
    )
    hf_config, hf_params = load(directory)
    assert config == hf_config
    assert (t5_name, stereo) == (TINY_T5, False)
    ours, theirs = flatten_dict(params), flatten_dict(hf_params)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    for path in theirs:
        assert ours[path].dtype == np.float32
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg="/".join(path))
    # the directory holding state_dict.bin loads the same
    assert load_audiocraft_lm(tmp_path)[0] == config


def test_in_proj_split_rows():
    w = np.arange(3 * 4 * 4, dtype=np.float32).reshape(12, 4)
    out = lm_state_to_hf({"transformer.layers.3.cross_attention.in_proj_weight": w})
    prefix = "decoder.model.decoder.layers.3.encoder_attn"
    assert sorted(out) == [f"{prefix}.{p}_proj.weight" for p in "kqv"]
    for i, p in enumerate("qkv"):
        np.testing.assert_array_equal(out[f"{prefix}.{p}_proj.weight"], w[4 * i : 4 * (i + 1)])
    # audiocraft's non-custom attention (nn.MultiheadAttention) stores the same tensors under `.mha.`
    mha = lm_state_to_hf(
        {
            "transformer.layers.0.self_attn.mha.in_proj_weight": w,
            "transformer.layers.0.self_attn.mha.out_proj.weight": w[:4],
        }
    )
    assert sorted(mha) == [f"decoder.model.decoder.layers.0.self_attn.{p}_proj.weight" for p in ("k", "out", "q", "v")]


def test_unrecognized_keys_pass_through_unchanged():
    """Anchored rules: look-alike keys are not renamed (no substring replacement)."""
    keys = [
        "emb.0.weight.extra",
        "xemb.0.weight",
        "transformer.layers.0.linear10.weight",
        "linears.0.bias",
        "transformer.layers.0.norm3.weight",
        "my_transformer.layers.0.norm1.weight",
        WINDOW,
        "condition_provider.conditioners.self_wav.output_proj.weight.extra",
        "transformer.layers.0.self_attn.in_proj_weight",
    ]
    state = {k: np.zeros((4, 2), np.float32) for k in keys}  # 4 rows: not a fused q|k|v
    assert lm_state_to_hf(state).keys() == set(keys)
    renamed = lm_state_to_hf(
        {
            "emb.12.weight": np.zeros(1),
            "transformer.layers.7.norm_cross.bias": np.zeros(1),
            "condition_provider.conditioners.self_wav.output_proj.bias": np.zeros(1),
        }
    )
    assert renamed.keys() == {
        "decoder.model.decoder.embed_tokens.12.weight",
        "decoder.model.decoder.layers.7.encoder_attn_layer_norm.bias",
        "audio_enc_to_dec_proj.bias",
    }


def test_extra_and_missing_keys_are_named(twin_state, tmp_path, tiny_t5):
    state = dict(twin_state)
    state["transformer.layers.0.self_attn.bogus.weight"] = torch.zeros(3)
    del state["linears.1.weight"]
    del state["transformer.layers.1.self_attn.in_proj_weight"]
    with pytest.raises(CheckpointError) as info:
        load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", state, xp_cfg()))
    message = str(info.value)
    assert "unexpected keys (1): transformer.layers.0.self_attn.bogus.weight" in message
    assert "linears.1.weight" in message
    assert "transformer.layers.1.self_attn.in_proj_weight[q rows]" in message


def test_layer_count_mismatch_is_named(twin_state, tmp_path, tiny_t5):
    """A config that does not match the weights (3 layers declared, 2 stored)."""
    with pytest.raises(CheckpointError, match=r"missing keys.*transformer\.layers\.2\.linear1\.weight"):
        load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", twin_state, xp_cfg(layers=3)))


def tiny_random_state(num_codebooks: int, dim: int = 16, layers: int = 1, text_dim: int = 768, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {f"emb.{k}.weight": r(2049, dim) for k in range(num_codebooks)}
    state.update({f"linears.{k}.weight": r(2048, dim) for k in range(num_codebooks)})
    for i in range(layers):
        for attn in ("self_attn", "cross_attention"):
            state[f"transformer.layers.{i}.{attn}.in_proj_weight"] = r(3 * dim, dim)
            state[f"transformer.layers.{i}.{attn}.out_proj.weight"] = r(dim, dim)
        state[f"transformer.layers.{i}.linear1.weight"] = r(4 * dim, dim)
        state[f"transformer.layers.{i}.linear2.weight"] = r(dim, 4 * dim)
        for norm in ("norm1", "norm2", "norm_cross"):
            state[f"transformer.layers.{i}.{norm}.weight"] = r(dim)
            state[f"transformer.layers.{i}.{norm}.bias"] = r(dim)
    state.update(
        {
            "out_norm.weight": r(dim),
            "out_norm.bias": r(dim),
            "condition_provider.conditioners.description.output_proj.weight": r(dim, text_dim),
            "condition_provider.conditioners.description.output_proj.bias": r(dim),
        }
    )
    return state


def test_stereo(tmp_path):
    delays = (0, 0, 1, 1, 2, 2, 3, 3)
    state = tiny_random_state(8)
    path = write_package(
        tmp_path / "state_dict.bin", state, xp_cfg(dim=16, heads=2, layers=1, delays=delays, stereo=True, t5="t5-base")
    )
    config, params, t5_name, stereo = load_audiocraft_lm(path)
    assert stereo is True and t5_name == "t5-base"
    assert config.delays == delays and config.num_codebooks == 8
    assert (config.dim, config.num_heads, config.num_layers, config.ffn_dim, config.text_dim) == (16, 2, 1, 64, 768)
    assert_placed(state, params, num_codebooks=8, layers=1)


def assert_placed(state: dict, params: dict, num_codebooks: int, layers: int):
    """Every audiocraft tensor at its parameter (an independent table of audiocraft's `best_state` keys -> our
    layout; linear
        kernels keep PyTorch's [out, in]), and every parameter filled: catches swapped norms / projections
        that equal-valued weights would hide."""
    flat = flatten_dict(params["params"])
    expected = {
        ("out_norm", "scale"): state["out_norm.weight"],
        ("out_norm", "bias"): state["out_norm.bias"],
        ("text_projection", "kernel"): state["condition_provider.conditioners.description.output_proj.weight"],
        ("text_projection", "bias"): state["condition_provider.conditioners.description.output_proj.bias"],
    }
    for k in range(num_codebooks):
        expected[(f"embeddings_{k}", "embedding")] = state[f"emb.{k}.weight"]
        expected[(f"heads_{k}", "kernel")] = state[f"linears.{k}.weight"]
    for i in range(layers):
        ac, ours = f"transformer.layers.{i}", f"layers_{i}"
        for ac_attn, attn in (("self_attn", "self_attn"), ("cross_attention", "cross_attn")):
            fused = state[f"{ac}.{ac_attn}.in_proj_weight"]
            d = fused.shape[1]
            for j, name in enumerate("qkv"):
                expected[(ours, attn, name, "kernel")] = fused[j * d : (j + 1) * d]
            expected[(ours, attn, "out", "kernel")] = state[f"{ac}.{ac_attn}.out_proj.weight"]
        for ac_norm, norm in (("norm1", "norm_self"), ("norm_cross", "norm_cross"), ("norm2", "norm_ffn")):
            expected[(ours, norm, "scale")] = state[f"{ac}.{ac_norm}.weight"]
            expected[(ours, norm, "bias")] = state[f"{ac}.{ac_norm}.bias"]
        expected[(ours, "fc1", "kernel")] = state[f"{ac}.linear1.weight"]
        expected[(ours, "fc2", "kernel")] = state[f"{ac}.linear2.weight"]
    assert flat.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(flat[path], value.numpy(), err_msg="/".join(path))


def test_every_tensor_lands_at_its_parameter(tmp_path):
    state = tiny_random_state(4, layers=2, seed=1)
    path = write_package(tmp_path / "state_dict.bin", state, xp_cfg(dim=16, heads=2, layers=2, t5="t5-base"))
    assert_placed(state, load_audiocraft_lm(path)[1], num_codebooks=4, layers=2)


def base_cfg(melody=False, **changes) -> dict:
    cfg = parse_audiocraft_cfg(xp_cfg(t5="t5-base", melody=melody))
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("/")
        for part in parents:
            node = node[part]
        node[last] = value
    return cfg


def test_config_fields_and_t5_names():
    config = lm_config_from_audiocraft(base_cfg())
    assert config.delays == (0, 1, 2, 3) and (config.dim, config.ffn_dim, config.text_dim) == (64, 256, 768)
    assert t5_name_from_audiocraft(base_cfg()) == "t5-base"
    for name, dim in (("t5-small", 512), ("google-t5/t5-large", 1024), ("t5-3b", 1024), ("t5-11b", 1024)):
        cfg = base_cfg(**{"conditioners/description/t5/name": name})
        assert lm_config_from_audiocraft(cfg).text_dim == dim
        assert t5_name_from_audiocraft(cfg) == name
    with pytest.raises(CheckpointError, match="unknown T5 model 'bert-base'"):
        lm_config_from_audiocraft(base_cfg(**{"conditioners/description/t5/name": "bert-base"}))


@pytest.mark.parametrize(
    "setting, value, match",
    [
        ("codebooks_pattern/modeling", "parallel", "only the delay codebook pattern"),
        ("transformer_lm/n_q", 8, "n_q 8 != 4 delays"),
        ("transformer_lm/norm", "rms_norm", "'norm': 'rms_norm'"),
        ("transformer_lm/activation", "relu", "'activation': 'relu'"),
        ("transformer_lm/bias_ff", True, "'bias_ff': True"),
        ("transformer_lm/bias_attn", True, "'bias_attn': True"),
        ("transformer_lm/bias_proj", True, "'bias_proj': True"),
        ("transformer_lm/positional_embedding", "rope", "'positional_embedding': 'rope'"),
        ("transformer_lm/qk_layer_norm", True, "'qk_layer_norm': True"),
        ("transformer_lm/kv_repeat", 2, "'kv_repeat': 2"),
        ("transformer_lm/norm_first", False, "'norm_first': False"),
        ("fuser/cross", [], "cross-attention"),
        ("lm_model", "transformer_lm_magnet", "lm_model"),
    ],
)
def test_unsupported_settings(setting, value, match):
    with pytest.raises(CheckpointError, match=match):
        lm_config_from_audiocraft(base_cfg(**{setting: value}))


def test_missing_package_entries(tmp_path):
    torch.save({"best_state": {"emb.0.weight": torch.zeros(2)}, "version": "1.3.0"}, tmp_path / "a.bin")
    with pytest.raises(CheckpointError, match="'best_state' and 'xp.cfg'"):
        load_audiocraft_lm(tmp_path / "a.bin")
    torch.save({"xp.cfg": xp_cfg(), "exported": True}, tmp_path / "b.bin")
    with pytest.raises(CheckpointError, match="'best_state' and 'xp.cfg'"):
        load_audiocraft_lm(tmp_path / "b.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_audiocraft_lm(tmp_path / "missing.bin")


@pytest.fixture(scope="module")
def hf_musicgen_stereo_melody(tmp_path_factory):
    """(model, directory) of a tiny stereo MusicGen-Melody (8 codebooks, mono chroma), weights and config only."""
    model, directory = tiny_hf_musicgen(seed=3, audio_channels=2, melody=True), tmp_path_factory.mktemp("st_melody")
    model.save_pretrained(directory)
    return model, directory


MELODY_TWINS = {
    "mono": ("hf_musicgen_melody", (0, 1, 2, 3)),
    "stereo": ("hf_musicgen_stereo_melody", (0, 0, 1, 1, 2, 2, 3, 3)),
}


@pytest.mark.parametrize("channels", MELODY_TWINS)
def test_melody_twin_converts_to_the_transformers_parameters(request, channels, tmp_path, tiny_t5):
    """musicgen-melody / stereo-melody: no cross-attention, the chroma projection from `self_wav.output_proj`,
    chroma_frames from dataset.segment_duration; the spectrogram window is checked, not a parameter."""
    fixture, delays = MELODY_TWINS[channels]
    model, directory = request.getfixturevalue(fixture)
    state = audiocraft_state(model.state_dict(), num_layers=2, num_codebooks=len(delays))
    assert WINDOW in state and not any("cross_attention" in key or "norm_cross" in key for key in state)
    cfg = xp_cfg(delays=delays, stereo=channels == "stereo", melody=True, segment_duration=TINY_SEGMENT)
    config, params, t5_name, stereo = load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", state, cfg))
    hf_config, hf_params = load(directory)
    assert model.config.chroma_length == 24 and model.config.num_chroma == 12
    assert config == hf_config and (config.chroma_bins, config.chroma_frames, config.delays) == (12, 24, delays)
    assert (t5_name, stereo) == (TINY_T5, channels == "stereo")
    ours, theirs = flatten_dict(params), flatten_dict(hf_params)
    assert ours.keys() == theirs.keys() and ("params", "chroma_projection", "kernel") in ours
    for path in theirs:
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg="/".join(path))


@pytest.mark.parametrize(
    "segment_duration, frames",
    [(30, 235), (TINY_SEGMENT, 24), (23 * 4096 / 32000, 24), ((23 * 4096 - 1) / 32000, 23), (0.25, 5)],
)
def test_chroma_frames_from_the_segment_duration(segment_duration, frames):
    """audiocraft's chroma_len: 1 + int(32000 * duration) // 4096, the zeros padded to n_fft (16384) first."""
    config = lm_config_from_audiocraft(base_cfg(melody=True, **{"dataset/segment_duration": segment_duration}))
    assert (config.chroma_bins, config.chroma_frames, config.melody) == (12, frames, True)
    assert lm_config_from_audiocraft(base_cfg(**{"dataset/segment_duration": segment_duration})).chroma_bins == 0


@pytest.fixture(scope="module")
def melody_state(hf_musicgen_melody):
    return audiocraft_state(hf_musicgen_melody[0].state_dict(), num_layers=2, num_codebooks=4)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"drop": "condition_provider.conditioners.self_wav.output_proj.weight"},
            r"missing keys \(1\): condition_provider\.conditioners\.self_wav\.output_proj\.weight",
        ),
        ({"drop": WINDOW}, "melody package lacks condition_provider.conditioners.self_wav.chroma.spec.window"),
        (
            {WINDOW: torch.hann_window(2**12)},
            r"window \(shape \(4096,\)\) is not the periodic Hann window of length 16384",
        ),
        ({WINDOW: torch.hamming_window(2**14)}, "is not the periodic Hann window"),
        (
            {"transformer.layers.1.cross_attention.out_proj.weight": torch.zeros(64, 64)},
            r"unexpected keys \(1\): transformer\.layers\.1\.cross_attention\.out_proj\.weight",
        ),
    ],
    ids=["no-chroma-projection", "no-window", "short-window", "hamming-window", "cross-attention"],
)
def test_melody_key_errors_are_named(melody_state, change, match, tmp_path, tiny_t5):
    state = {k: v for k, v in melody_state.items() if k != change.get("drop")}
    state.update({k: v for k, v in change.items() if k != "drop"})
    with pytest.raises(CheckpointError, match=match):
        load_audiocraft_lm(
            write_package(tmp_path / "state_dict.bin", state, xp_cfg(melody=True, segment_duration=TINY_SEGMENT))
        )


def test_window_of_a_text_model_is_unexpected(twin_state, tmp_path, tiny_t5):
    state = {**twin_state, WINDOW: torch.hann_window(2**14)}
    with pytest.raises(CheckpointError, match=rf"unexpected keys \(1\): {WINDOW}"):
        load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", state, xp_cfg()))


STEM = "conditioners/self_wav/chroma_stem"


@pytest.mark.parametrize(
    "setting, value, match",
    [
        ("conditioners/self_wav/model", "style", "only a `chroma_stem` \\(melody\\) `self_wav` conditioner"),
        (f"{STEM}/radix2_exp", 12, "'radix2_exp': 12"),
        (f"{STEM}/sample_rate", 44100, "'sample_rate': 44100"),
        (f"{STEM}/argmax", False, "'argmax': False"),
        (f"{STEM}/n_chroma", 0, "'n_chroma': 0"),
        (f"{STEM}/winhop", 2048, r"unsupported conditioners\.self_wav\.chroma_stem settings \['winhop'\]"),
        (
            STEM,
            {"sample_rate": 32000, "radix2_exp": 14, "argmax": True},
            r"lacks .*chroma_stem settings \['n_chroma'\]",
        ),
        ("dataset/segment_duration", None, "needs dataset.segment_duration"),
        ("fuser/prepend", ["description"], r"prepend \[self_wav, description\].*prepend=\['description'\]"),
        ("fuser/prepend", ["description", "self_wav"], r"prepend=\['description', 'self_wav'\]"),
        ("fuser/cross", ["description"], r"cross=\['description'\]"),
        ("fuser/sum", ["self_wav"], r"sum=\['self_wav'\]"),
        ("conditioners/style", {"model": "style"}, r"unsupported conditioners \['style'\]"),
    ],
)
def test_unsupported_melody_settings(setting, value, match):
    with pytest.raises(CheckpointError, match=match):
        lm_config_from_audiocraft(base_cfg(melody=True, **{setting: value}))


def test_text_model_prepending_self_wav_is_rejected():
    """fuser.prepend [self_wav, description] without a `self_wav` conditioner is neither kind of model."""
    with pytest.raises(
        CheckpointError,
        match=r"got conditioners \['description'\] and fuser cross=\[\] "
        r"prepend=\['self_wav', 'description'\]",
    ):
        lm_config_from_audiocraft(base_cfg(**{"fuser/cross": [], "fuser/prepend": ["self_wav", "description"]}))


def audiocraft_directory(model, hf_directory, root, monkeypatch, cfg: str, num_codebooks: int):
    """`model` (a transformers twin) as an audiocraft directory (state_dict.bin + compression_state_dict.bin) under
    `root`, its T5 in an offline hub cache under the name TINY_T5 that `cfg` names."""
    t5_repo = root / "t5"
    t5_repo.mkdir()
    (t5_repo / "config.json").write_text(json.dumps({**model.text_encoder.config.to_dict(), "model_type": "t5"}))
    save_file({k: v.clone() for k, v in model.text_encoder.state_dict().items()}, str(t5_repo / "model.safetensors"))
    (t5_repo / "spiece.model").write_bytes((hf_directory / "spiece.model").read_bytes())
    use_offline_cache(monkeypatch, root / "hub")
    add_repo(root / "hub", TINY_T5, t5_repo)
    ac = root / "audiocraft"
    ac.mkdir()
    write_package(ac / "state_dict.bin", audiocraft_state(model.state_dict(), 2, num_codebooks), cfg)
    torch.save(
        {
            "best_state": codec_state(model.audio_encoder),
            "xp.cfg": AUDIOCRAFT_CFG.replace("pad_mode: constant", "pad_mode: reflect"),
            "version": "1.0",
            "exported": True,
        },
        ac / "compression_state_dict.bin",
    )
    return ac


@pytest.mark.parametrize("kind", ["text", "melody"])
def test_audiocraft_directory_converts_like_its_transformers_twin(request, kind, tmp_path, monkeypatch, tiny_t5):
    """state_dict.bin + compression_state_dict.bin, T5 resolved on the (offline) hub by its xp.cfg name, through
    convert_torch_weights.py: the same parameters and configs as the transformers twin's conversion."""
    model, directory = request.getfixturevalue("hf_musicgen" if kind == "text" else "hf_musicgen_melody")
    cfg = xp_cfg() if kind == "text" else xp_cfg(melody=True, segment_duration=TINY_SEGMENT)
    ac = audiocraft_directory(model, directory, tmp_path, monkeypatch, cfg, num_codebooks=4)
    assert convert_torch_weights.main([str(ac), str(tmp_path / "from_ac"), "--format", "audiocraft"]) == 0
    from_ac, from_hf = load_converted(tmp_path / "from_ac"), convert_checkpoint(directory)
    assert from_ac.lm_config == from_hf.lm_config and from_ac.lm_config.melody == (kind == "melody")
    assert from_ac.codec.config == from_hf.codec.config and not from_ac.codec.stereo
    for a, b in (
        (from_ac.lm_params, from_hf.lm_params),
        (from_ac.text_encoder.params, from_hf.text_encoder.params),
        (from_ac.codec.params, from_hf.codec.params),
    ):
        fa, fb = flatten_dict(a), flatten_dict(b)
        assert fa.keys() == fb.keys()
        for key in fa:
            np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=str(key))


@pytest.mark.slow
def test_audiocraft_melody_twin_samples_like_its_transformers_twin(hf_musicgen_melody, tmp_path, monkeypatch, tiny_t5):
    """`sample.py --melody` on the audiocraft melody package gives the greedy codes it gives on the transformers
    twin (which equal transformers' own: tests/lm/test_melody.py)."""
    model, directory = hf_musicgen_melody
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    ac = audiocraft_directory(
        model, directory, tmp_path, monkeypatch, xp_cfg(melody=True, segment_duration=TINY_SEGMENT), num_codebooks=4
    )
    clip = tmp_path / "melody.wav"
    t = np.arange(32000) / 32000
    write_audio(
        clip, (0.3 * np.sin(2 * np.pi * np.where(t < 0.5, 262.0, 392.0) * t)).astype(np.float32), 32000, strategy="none"
    )
    codes = {}
    for name, source in (("audiocraft", ac), ("transformers", directory)):
        assert (
            sample.main(
                [
                    "--model",
                    str(source),
                    "--prompt",
                    "calm piano",
                    "--duration",
                    "1",
                    "--top-k",
                    "1",
                    "--melody",
                    str(clip),
                    "--save-codes",
                    str(tmp_path / f"{name}.npy"),
                    "--out",
                    str(tmp_path / f"{name}.wav"),
                ]
            )
            == 0
        )
        codes[name] = np.load(tmp_path / f"{name}.npy")
    assert codes["audiocraft"].shape == (1, 4, 50)
    np.testing.assert_array_equal(codes["audiocraft"], codes["transformers"])


def packages(directory) -> dict:
    return {
        name: torch.load(directory / name, weights_only=True)
        for name in ("state_dict.bin", "compression_state_dict.bin")
    }


@pytest.mark.parametrize("kind", ["text", "melody"])
def test_export_to_audiocraft_gives_back_the_package(request, kind, tmp_path, monkeypatch, tiny_t5):
    """An audiocraft directory converted and exported `--to audiocraft`: every LM and codec tensor back
    exactly under its name (the melody LM's chroma window buffer too), an LM config that reads back to the
    same model and T5, the codec's own config."""
    from musicgen_jax.cli import export as export_cli

    model, directory = request.getfixturevalue("hf_musicgen" if kind == "text" else "hf_musicgen_melody")
    cfg = xp_cfg() if kind == "text" else xp_cfg(melody=True, segment_duration=TINY_SEGMENT)
    source = audiocraft_directory(model, directory, tmp_path, monkeypatch, cfg, num_codebooks=4)
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exported"
    assert export_cli.main(["--checkpoint", str(source), "--format", "audiocraft", "--to", "audiocraft", str(out)]) == 0
    theirs, ours = packages(source), packages(out)
    for name in theirs:
        a, b = ours[name]["best_state"], theirs[name]["best_state"]
        assert sorted(a) == sorted(b), name
        for key in b:
            assert torch.equal(a[key], b[key]), key
        assert ours[name]["exported"] is True
    assert ours["compression_state_dict.bin"]["xp.cfg"] == theirs["compression_state_dict.bin"]["xp.cfg"]
    exported_cfg, source_cfg = (parse_audiocraft_cfg(p["state_dict.bin"]["xp.cfg"]) for p in (ours, theirs))
    assert lm_config_from_audiocraft(exported_cfg) == lm_config_from_audiocraft(source_cfg)
    assert t5_name_from_audiocraft(exported_cfg) == TINY_T5


@pytest.mark.parametrize("channels", ["mono", "stereo"])
def test_a_transformers_checkpoint_exports_to_the_audiocraft_layout(request, channels, tmp_path, tiny_t5):
    """The tiny transformers MusicGen (mono, stereo), its T5 named TINY_T5: the LM package has the twin's
    keys and tensors (`audiocraft_state`, audiocraft's layout), the codec package the twin codec's keys,
    and both import back to the transformers conversion's parameters exactly (the codec's weight norm split
    anew), stereo read back as stereo."""
    import dataclasses

    from musicgen_jax.convert.audiocraft_export import export_audiocraft
    from musicgen_jax.convert.codec_loader import load_codec

    model, directory = request.getfixturevalue("hf_musicgen" if channels == "mono" else "hf_musicgen_stereo")
    components = convert_checkpoint(directory)
    components = dataclasses.replace(
        components, text_encoder=dataclasses.replace(components.text_encoder, source=TINY_T5)
    )
    out = export_audiocraft(components, tmp_path / "exported")
    ours = packages(out)
    twin = audiocraft_state(model.state_dict(), num_layers=2, num_codebooks=components.lm_config.num_codebooks)
    assert sorted(ours["state_dict.bin"]["best_state"]) == sorted(twin)
    for key, value in twin.items():
        assert torch.equal(ours["state_dict.bin"]["best_state"][key], value), key
    assert sorted(ours["compression_state_dict.bin"]["best_state"]) == sorted(codec_state(model.audio_encoder))
    config, params, t5_name, stereo = load_audiocraft_lm(out)
    assert (config, t5_name, stereo) == (components.lm_config, TINY_T5, channels == "stereo")
    codec = load_codec(out / "compression_state_dict.bin")
    assert codec.config == components.codec.config
    for a, b in ((params, components.lm_params), (codec.params, components.codec.params)):
        fa, fb = flatten_dict(a), flatten_dict(b)
        assert fa.keys() == fb.keys()
        for key in fa:
            np.testing.assert_array_equal(np.asarray(fa[key]), np.asarray(fb[key]), err_msg=str(key))


def test_export_to_audiocraft_needs_an_audiocraft_t5(hf_musicgen, tmp_path, capsys):
    """The tiny transformers MusicGen's own T5 is none of audiocraft's hub models: one error, nothing written."""
    from musicgen_jax.cli import export as export_cli

    out = tmp_path / "exported"
    assert export_cli.main(["--checkpoint", str(hf_musicgen[1]), "--to", "audiocraft", str(out)]) == 2
    assert "audiocraft loads its T5 by hub name" in capsys.readouterr().err and not out.exists()


GREEDY_FRAMES = 50


def test_audiocraft_loads_the_export(hf_musicgen, tmp_path, monkeypatch, tiny_t5):
    """audiocraft's `MusicGen.get_pretrained(OUT)` (its LM and EnCodec built from the exported xp.cfgs,
    `load_state_dict` strict) reads the export of the tiny transformers MusicGen (its T5 named TINY_T5 on the
    offline hub): its teacher-forced predictions (`compute_predictions`, its T5 conditioner on the prompt)
    equal ours within 1e-4 of their peak, its greedy `generate` (guidance 3) gives the tokens ours gives,
    and its audio is our codec's decoding of them (1e-5)."""
    import dataclasses

    from musicgen_jax.convert.audiocraft_export import export_audiocraft
    from musicgen_jax.lm import pattern
    from musicgen_jax.lm.model import LMModel
    from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
    from tests.audiocraft_api import audiocraft_models

    model, directory = hf_musicgen
    audiocraft_directory(model, directory, tmp_path, monkeypatch, xp_cfg(), num_codebooks=4)  # T5 on the hub
    components = convert_checkpoint(directory)
    components = dataclasses.replace(
        components, text_encoder=dataclasses.replace(components.text_encoder, source=TINY_T5)
    )
    out = export_audiocraft(components, tmp_path / "exported")
    codes = torch.randint(0, 2048, (1, 4, 12), generator=torch.Generator().manual_seed(0))
    prompt = "calm piano melody"
    with audiocraft_models() as models:
        from audiocraft.modules.conditioners import ConditioningAttributes, T5Conditioner

        monkeypatch.setattr(T5Conditioner, "MODELS", [*T5Conditioner.MODELS, TINY_T5])
        monkeypatch.setitem(T5Conditioner.MODELS_DIMS, TINY_T5, 32)
        theirs_model = models.MusicGen.get_pretrained(str(out), device="cpu")
        theirs_model.set_generation_params(use_sampling=False, duration=GREEDY_FRAMES / 50, cfg_coef=3.0)
        with torch.no_grad():
            theirs = theirs_model.lm.compute_predictions(
                codes, [ConditioningAttributes(text={"description": prompt})]
            ).logits.numpy()
            wav, greedy = theirs_model.generate([prompt], return_tokens=True)
    text, mask = components.text_encoder([prompt])
    sequence = np.asarray(pattern.build(codes.numpy(), (0, 1, 2, 3), 2048))[..., :-1]
    ours = np.asarray(LMModel(components.lm_config).apply(components.lm_params, sequence, text, mask))
    ours = np.stack([ours[:, k, k : k + codes.shape[-1]] for k in range(4)], axis=1)  # frame t of k: step t + k
    # audiocraft's pattern spans the T frames' steps: codebook k's last k frames fall past it (NaN)
    valid = np.arange(codes.shape[-1])[None, :] < codes.shape[-1] - np.arange(4)[:, None]  # [K, T]
    np.testing.assert_array_equal(np.isnan(theirs).all(-1)[0], ~valid)
    np.testing.assert_allclose(theirs[0][valid], ours[0][valid], atol=1e-4 * np.abs(ours).max())
    expected = np.asarray(
        generate_tokens(
            components.lm_config,
            components.lm_params,
            text,
            mask,
            row_keys([0]),
            GREEDY_FRAMES,
            SamplingParams(top_k=1, cfg_coef=3.0),
        )
    )
    assert len(np.unique(expected)) > 20  # not a degenerate sequence
    np.testing.assert_array_equal(greedy.numpy(), expected)
    decoded = np.asarray(components.codec.decode(expected))
    np.testing.assert_allclose(wav.numpy(), decoded, atol=1e-5 * np.abs(decoded).max())
