"""MusicGen LM weights from a transformers MusicGen or MusicGen-Melody checkpoint (transformers'
`MusicgenForCausalLM`) into `LMModel` parameters."""

from __future__ import annotations

import jax
import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import Target, assemble, disassemble, param_shapes
from musicgen_jax.config import LMConfig, interleaved_delays
from musicgen_jax.lm.model import init_params

_DECODER = "decoder.model.decoder"


def lm_config_from_hf(cfg: dict) -> LMConfig:
    """LMConfig from a transformers `MusicgenConfig` or `MusicgenMelodyConfig` dict."""
    if cfg.get("model_type") not in ("musicgen", "musicgen_melody"):
        raise CheckpointError(
            f"expected a MusicGen or MusicGen-Melody config, got model_type {cfg.get('model_type')!r}"
        )
    melody = {}
    if cfg["model_type"] == "musicgen_melody":
        melody = {"chroma_bins": cfg.get("num_chroma", 12), "chroma_frames": cfg.get("chroma_length", 235)}
    dec = cfg.get("decoder") or {}
    if dec.get("activation_function", "gelu") != "gelu" or dec.get("scale_embedding", False):
        raise CheckpointError(
            f"unsupported MusicGen decoder settings: activation "
            f"{dec.get('activation_function')!r}, scale_embedding {dec.get('scale_embedding')}"
        )
    if dec.get("cross_attention_hidden_size") not in (None, dec.get("hidden_size", 1024)):
        raise CheckpointError("cross_attention_hidden_size other than the decoder width is not supported")
    num_codebooks, channels = dec.get("num_codebooks", 4), dec.get("audio_channels", 1)
    if channels not in (1, 2) or num_codebooks % channels:
        raise CheckpointError(f"unsupported codebooks / channels: {num_codebooks} / {channels}")
    text = cfg.get("text_encoder") or {}
    return LMConfig(
        dim=dec.get("hidden_size", 1024),
        num_heads=dec.get("num_attention_heads", 16),
        num_layers=dec.get("num_hidden_layers", 24),
        ffn_dim=dec.get("ffn_dim", 4096),
        card=dec.get("vocab_size", 2048),
        delays=interleaved_delays(num_codebooks, channels),
        text_dim=text.get("d_model", 768),
        **melody,
    )


def config_to_hf(config: LMConfig, text_encoder: dict, audio_encoder: dict) -> dict:
    """The transformers `MusicgenConfig` (melody models: `MusicgenMelodyConfig`) dict of the LM `config`
    with the given text encoder and codec config dicts (the inverse of `lm_config_from_hf`)."""
    channels = (
        2 if config.num_codebooks % 2 == 0 and config.delays == interleaved_delays(config.num_codebooks, 2) else 1
    )
    if (
        config.delays != interleaved_delays(config.num_codebooks, channels)
        or config.norm_eps != 1e-5
        or config.max_period != 10000.0
        or text_encoder["d_model"] != config.text_dim
    ):
        raise CheckpointError(
            f"the LM {config} has no transformers MusicGen config (delays, norm eps, max period or text width)"
        )
    decoder = {
        "model_type": "musicgen_melody_decoder" if config.melody else "musicgen_decoder",
        "vocab_size": config.card,
        "hidden_size": config.dim,
        "num_attention_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "ffn_dim": config.ffn_dim,
        "num_codebooks": config.num_codebooks,
        "audio_channels": channels,
        "activation_function": "gelu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "layerdrop": 0.0,
        "scale_embedding": False,
        "pad_token_id": config.card,
        "bos_token_id": config.card,
        "tie_word_embeddings": False,
    }
    cfg = {
        "model_type": "musicgen_melody" if config.melody else "musicgen",
        "text_encoder": text_encoder,
        "audio_encoder": audio_encoder,
        "decoder": decoder,
    }
    if config.melody:
        cfg.update(num_chroma=config.chroma_bins, chroma_length=config.chroma_frames)
    if lm_config_from_hf(cfg) != config:
        raise CheckpointError(f"the LM {config} has no transformers MusicGen config")
    return cfg


def hf_state_dict(params, config: LMConfig) -> dict[str, np.ndarray]:
    """transformers MusicGen LM tensors (decoder and projections) of `params` (the inverse of
    `lm_params_from_hf_state_dict`)."""
    return disassemble(params, hf_key_map(config))


def hf_key_map(config: LMConfig) -> dict[str, Target]:
    """Every transformers MusicGen LM key (decoder, `enc_to_dec_proj`, melody: `audio_enc_to_dec_proj`),
    mapped to its parameter (linear weights as they are: `LMModel` keeps PyTorch's [out, in] layout)."""
    keys = {
        "enc_to_dec_proj.weight": Target(("text_projection", "kernel")),
        "enc_to_dec_proj.bias": Target(("text_projection", "bias")),
        f"{_DECODER}.layer_norm.weight": Target(("out_norm", "scale")),
        f"{_DECODER}.layer_norm.bias": Target(("out_norm", "bias")),
    }
    if config.melody:
        keys["audio_enc_to_dec_proj.weight"] = Target(("chroma_projection", "kernel"))
        keys["audio_enc_to_dec_proj.bias"] = Target(("chroma_projection", "bias"))
    attentions, norms = (
        [("self_attn", "self_attn")],
        [("self_attn_layer_norm", "norm_self"), ("final_layer_norm", "norm_ffn")],
    )
    if not config.melody:  # melody models have no cross-attention
        attentions.append(("encoder_attn", "cross_attn"))
        norms.append(("encoder_attn_layer_norm", "norm_cross"))
    for k in range(config.num_codebooks):
        keys[f"{_DECODER}.embed_tokens.{k}.weight"] = Target((f"embeddings_{k}", "embedding"))
        keys[f"decoder.lm_heads.{k}.weight"] = Target((f"heads_{k}", "kernel"))
    for i in range(config.num_layers):
        hf, ours = f"{_DECODER}.layers.{i}", (f"layers_{i}",)
        for attn_hf, attn in attentions:
            for proj, name in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "out")):
                keys[f"{hf}.{attn_hf}.{proj}.weight"] = Target(ours + (attn, name, "kernel"))
        for norm_hf, norm in norms:
            keys[f"{hf}.{norm_hf}.weight"] = Target(ours + (norm, "scale"))
            keys[f"{hf}.{norm_hf}.bias"] = Target(ours + (norm, "bias"))
        keys[f"{hf}.fc1.weight"] = Target(ours + ("fc1", "kernel"))
        keys[f"{hf}.fc2.weight"] = Target(ours + ("fc2", "kernel"))
    return keys


def expected_shapes(config: LMConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    return param_shapes(lambda: init_params(config, jax.random.key(0)))


def lm_params_from_hf_state_dict(state: dict[str, np.ndarray], config: LMConfig, source: str = "checkpoint") -> dict:
    """LM parameters from a transformers MusicGen state dict. The text encoder (`text_encoder.*`) and
    codec (`audio_encoder.*`) are loaded by their own converters; the sinusoidal table
    (`embed_positions.weights`) is recomputed, never read."""
    state = {k: v for k, v in state.items() if not k.startswith(("text_encoder.", "audio_encoder."))}
    unused = [f"{_DECODER}.embed_positions.weights"]
    what = f"{source} (MusicGen LM, {config.num_layers} layers, dim {config.dim}, {config.num_codebooks} codebooks)"
    return assemble(state, hf_key_map(config), expected_shapes(config), what, unused)
