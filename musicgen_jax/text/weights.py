"""T5 encoder weights from transformers checkpoints (T5EncoderModel, T5ForConditionalGeneration, or
the `text_encoder.` part of a MusicGen checkpoint) into `T5Encoder` parameters."""

from __future__ import annotations

import os

import jax
import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import fetch_hf_weights, hf_component, read_json, resolve
from musicgen_jax.checkpoint.keymap import Target, assemble, disassemble, param_shapes, strip_prefix
from musicgen_jax.config import T5Config
from musicgen_jax.text.t5 import T5Encoder

_SMALL_FILES = ["config.json"]


def config_from_hf(cfg: dict) -> T5Config:
    """T5Config from a transformers T5 config dict."""
    if cfg.get("model_type", "t5") != "t5":
        raise CheckpointError(f"expected a T5 config, got model_type {cfg.get('model_type')!r}")
    proj = cfg.get("feed_forward_proj", "relu")
    if proj not in ("relu", "gated-gelu"):
        raise CheckpointError(f"unsupported T5 feed_forward_proj {proj!r} (relu and gated-gelu are implemented)")
    d_model = cfg.get("d_model", 512)
    return T5Config(
        vocab_size=cfg.get("vocab_size", 32128),
        d_model=d_model,
        d_kv=cfg.get("d_kv", 64),
        d_ff=cfg.get("d_ff", 2048),
        num_layers=cfg.get("num_layers", 6),
        num_heads=cfg.get("num_heads", 8),
        relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-6),
        feed_forward_proj=proj,
    )


def config_to_hf(config: T5Config) -> dict:
    """The transformers `T5Config` dict of the encoder `config` (the inverse of `config_from_hf`)."""
    return {
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "feed_forward_proj": config.feed_forward_proj,
        "dropout_rate": 0.0,
    }


def hf_state_dict(params, config: T5Config) -> dict[str, np.ndarray]:
    """transformers T5 encoder tensors of `params` (the inverse of `params_from_hf_state_dict`; the input
    embedding `encoder.embed_tokens.weight` is `shared.weight`, tied, as transformers saves it)."""
    return disassemble(params, hf_key_map(config))


def hf_key_map(config: T5Config) -> dict[str, Target]:
    """Every transformers T5 encoder key, mapped to its parameter."""
    keys = {
        "shared.weight": Target(("shared", "embedding")),
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": Target(("relative_attention_bias",)),
        "encoder.final_layer_norm.weight": Target(("final_norm", "scale")),
    }
    mlp = ("wi_0", "wi_1", "wo") if config.gated else ("wi", "wo")
    for i in range(config.num_layers):
        hf, ours = f"encoder.block.{i}.layer", (f"block_{i}",)
        for name in "qkvo":
            keys[f"{hf}.0.SelfAttention.{name}.weight"] = Target(ours + ("attention", name, "kernel"), "linear")
        keys[f"{hf}.0.layer_norm.weight"] = Target(ours + ("attention_norm", "scale"))
        for name in mlp:
            keys[f"{hf}.1.DenseReluDense.{name}.weight"] = Target(ours + ("mlp", name, "kernel"), "linear")
        keys[f"{hf}.1.layer_norm.weight"] = Target(ours + ("mlp_norm", "scale"))
    return keys


def expected_shapes(config: T5Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    ids = np.zeros((1, 1), np.int32)
    return param_shapes(lambda: T5Encoder(config).init(jax.random.key(0), ids, ids))


def params_from_hf_state_dict(state: dict[str, np.ndarray], config: T5Config, source: str = "checkpoint") -> dict:
    """T5 encoder parameters from transformers-named tensors.

    The decoder half of a full T5 (`decoder.*`, `lm_head.weight`) is not used by design; the encoder's
    copy of the tied embedding (`encoder.embed_tokens.weight`) stands in for `shared.weight` when that
    is absent and must equal it when both are present.
    """
    state = dict(state)
    tied = state.pop("encoder.embed_tokens.weight", None)
    if tied is not None:
        if "shared.weight" not in state:
            state["shared.weight"] = tied
        elif not np.array_equal(tied, state["shared.weight"]):
            raise CheckpointError(f"{source}: encoder.embed_tokens.weight differs from the tied shared.weight")
    unused = [k for k in state if k.startswith("decoder.") or k == "lm_head.weight"]
    what = f"{source} (T5 encoder, {config.num_layers} layers, d_model {config.d_model}, {config.feed_forward_proj})"
    return assemble(state, hf_key_map(config), expected_shapes(config), what, unused)


def load_t5(source: str | os.PathLike) -> tuple[T5Config, dict]:
    """(config, params) of the T5 encoder in a hub id or local directory: a transformers T5 checkpoint
    or a MusicGen checkpoint (`text_encoder` config and `text_encoder.` weights)."""
    path = resolve(source, _SMALL_FILES)
    if path.is_file():
        path = path.parent
    hf_config = read_json(path / "config.json")
    t5_config, prefix = hf_component(hf_config, "t5", "text_encoder", source)
    config = config_from_hf(t5_config)
    state = strip_prefix(fetch_hf_weights(source, path, prefix), prefix)
    return config, params_from_hf_state_dict(state, config, str(source))
