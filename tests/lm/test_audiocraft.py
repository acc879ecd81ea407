"""audiocraft LM packages (`state_dict.bin`, SPEC 2.7 / 8.1) against the transformers twin.

The reference is the tiny transformers MusicGen of tests/lm/conftest.py, written here in audiocraft's
on-disk layout: fused `in_proj_weight` (q | k | v rows), audiocraft key names, the T5 projection under
`condition_provider`, and an `xp.cfg` YAML string laid out as audiocraft's merged config (with its
unresolved `${...}` references).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from musicgen_jax.convert import audiocraft
from musicgen_jax.convert.audiocraft import (
    lm_config_from_audiocraft,
    lm_state_to_hf,
    load_audiocraft_lm,
    t5_name_from_audiocraft,
)
from musicgen_jax.convert.encodec import parse_audiocraft_cfg
from musicgen_jax.convert.torch_io import CheckpointError
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
  segment_duration: 30
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


def xp_cfg(dim=64, heads=4, layers=2, delays=(0, 1, 2, 3), stereo=False, melody=False, t5=TINY_T5) -> str:
    conditioning = (MELODY_CONDITIONING if melody else TEXT_CONDITIONING).format(t5=t5)
    return XP_CFG.format(dim=dim, heads=heads, layers=layers, n_q=len(delays), delays=list(delays),
                         stereo=str(stereo).lower(), channels=2 if stereo else 1, conditioning=conditioning)


def audiocraft_state(hf_state: dict[str, torch.Tensor], num_layers: int, num_codebooks: int) -> dict:
    """A transformers MusicGen state dict in audiocraft's `best_state` layout (SPEC 2.7)."""
    dec, state = "decoder.model.decoder", {}
    for k in range(num_codebooks):
        state[f"emb.{k}.weight"] = hf_state[f"{dec}.embed_tokens.{k}.weight"]
        state[f"linears.{k}.weight"] = hf_state[f"decoder.lm_heads.{k}.weight"]
    for i in range(num_layers):
        hf, ac = f"{dec}.layers.{i}", f"transformer.layers.{i}"
        for hf_attn, ac_attn in (("self_attn", "self_attn"), ("encoder_attn", "cross_attention")):
            state[f"{ac}.{ac_attn}.in_proj_weight"] = torch.cat(
                [hf_state[f"{hf}.{hf_attn}.{p}_proj.weight"] for p in "qkv"], dim=0)
            state[f"{ac}.{ac_attn}.out_proj.weight"] = hf_state[f"{hf}.{hf_attn}.out_proj.weight"]
        state[f"{ac}.linear1.weight"] = hf_state[f"{hf}.fc1.weight"]
        state[f"{ac}.linear2.weight"] = hf_state[f"{hf}.fc2.weight"]
        for hf_norm, ac_norm in (("self_attn_layer_norm", "norm1"), ("encoder_attn_layer_norm", "norm_cross"),
                                 ("final_layer_norm", "norm2")):
            for p in ("weight", "bias"):
                state[f"{ac}.{ac_norm}.{p}"] = hf_state[f"{hf}.{hf_norm}.{p}"]
    for p in ("weight", "bias"):
        state[f"out_norm.{p}"] = hf_state[f"{dec}.layer_norm.{p}"]
        state[f"condition_provider.conditioners.description.output_proj.{p}"] = hf_state[f"enc_to_dec_proj.{p}"]
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
    config, params, t5_name, stereo = load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", twin_state,
                                                                       xp_cfg()))
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
        np.testing.assert_array_equal(out[f"{prefix}.{p}_proj.weight"], w[4 * i:4 * (i + 1)])
    # audiocraft's non-custom attention (nn.MultiheadAttention) stores the same tensors under `.mha.`
    mha = lm_state_to_hf({"transformer.layers.0.self_attn.mha.in_proj_weight": w,
                          "transformer.layers.0.self_attn.mha.out_proj.weight": w[:4]})
    assert sorted(mha) == [f"decoder.model.decoder.layers.0.self_attn.{p}_proj.weight" for p in ("k", "out", "q", "v")]


def test_unrecognized_keys_pass_through_unchanged():
    """Anchored rules: look-alike keys are not renamed (no substring replacement)."""
    keys = ["emb.0.weight.extra", "xemb.0.weight", "transformer.layers.0.linear10.weight", "linears.0.bias",
            "transformer.layers.0.norm3.weight", "my_transformer.layers.0.norm1.weight",
            "condition_provider.conditioners.self_wav.output_proj.weight",
            "transformer.layers.0.self_attn.in_proj_weight"]
    state = {k: np.zeros((4, 2), np.float32) for k in keys}  # 4 rows: not a fused q|k|v
    assert lm_state_to_hf(state).keys() == set(keys)
    renamed = lm_state_to_hf({"emb.12.weight": np.zeros(1), "transformer.layers.7.norm_cross.bias": np.zeros(1)})
    assert renamed.keys() == {"decoder.model.decoder.embed_tokens.12.weight",
                              "decoder.model.decoder.layers.7.encoder_attn_layer_norm.bias"}


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


def test_melody_is_rejected(twin_state, tmp_path):
    cfg = parse_audiocraft_cfg(xp_cfg(melody=True, t5="t5-base"))
    assert cfg["conditioners"]["self_wav"]["chroma_stem"]["sample_rate"] == 32000  # reference resolved
    with pytest.raises(CheckpointError, match="melody models are not supported yet"):
        lm_config_from_audiocraft(cfg)
    with pytest.raises(CheckpointError, match="melody models are not supported yet"):
        load_audiocraft_lm(write_package(tmp_path / "state_dict.bin", twin_state, xp_cfg(melody=True)))


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
    state.update({"out_norm.weight": r(dim), "out_norm.bias": r(dim),
                  "condition_provider.conditioners.description.output_proj.weight": r(dim, text_dim),
                  "condition_provider.conditioners.description.output_proj.bias": r(dim)})
    return state


def test_stereo(tmp_path):
    delays = (0, 0, 1, 1, 2, 2, 3, 3)
    state = tiny_random_state(8)
    path = write_package(tmp_path / "state_dict.bin", state,
                         xp_cfg(dim=16, heads=2, layers=1, delays=delays, stereo=True, t5="t5-base"))
    config, params, t5_name, stereo = load_audiocraft_lm(path)
    assert stereo is True and t5_name == "t5-base"
    assert config.delays == delays and config.num_codebooks == 8
    assert (config.dim, config.num_heads, config.num_layers, config.ffn_dim, config.text_dim) == (16, 2, 1, 64, 768)
    assert_placed(state, params, num_codebooks=8, layers=1)


def assert_placed(state: dict, params: dict, num_codebooks: int, layers: int):
    """Every audiocraft tensor at its parameter (an independent table of SPEC 2.7 -> our layout; linear
    kernels keep PyTorch's [out, in]), and every parameter filled: catches swapped norms / projections
    that equal-valued weights would hide."""
    flat = flatten_dict(params["params"])
    expected = {("out_norm", "scale"): state["out_norm.weight"], ("out_norm", "bias"): state["out_norm.bias"],
                ("text_projection", "kernel"):
                    state["condition_provider.conditioners.description.output_proj.weight"],
                ("text_projection", "bias"): state["condition_provider.conditioners.description.output_proj.bias"]}
    for k in range(num_codebooks):
        expected[(f"embeddings_{k}", "embedding")] = state[f"emb.{k}.weight"]
        expected[(f"heads_{k}", "kernel")] = state[f"linears.{k}.weight"]
    for i in range(layers):
        ac, ours = f"transformer.layers.{i}", f"layers_{i}"
        for ac_attn, attn in (("self_attn", "self_attn"), ("cross_attention", "cross_attn")):
            fused = state[f"{ac}.{ac_attn}.in_proj_weight"]
            d = fused.shape[1]
            for j, name in enumerate("qkv"):
                expected[(ours, attn, name, "kernel")] = fused[j * d:(j + 1) * d]
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


def base_cfg(**changes) -> dict:
    cfg = parse_audiocraft_cfg(xp_cfg(t5="t5-base"))
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


@pytest.mark.parametrize("setting, value, match", [
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
])
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
