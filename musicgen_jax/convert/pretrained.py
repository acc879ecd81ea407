"""Whole MusicGen models from PyTorch checkpoints (transformers or audiocraft format) into `Components`
(`musicgen_jax.components` saves them as this project's converted directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import fetch_hf_weights, read_json, resolve
from musicgen_jax.checkpoint.keymap import strip_prefix
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.model import Codec
from musicgen_jax.components import MODEL_FILE, Components
from musicgen_jax.convert.audiocraft import load_audiocraft_lm
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.lm import weights as mg
from musicgen_jax.text import weights as t5
from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.text.tokenizer import T5Tokenizer

FORMATS = ("auto", "hf", "audiocraft")
_SMALL_FILES = ["config.json", MODEL_FILE, "spiece.model", "tokenizer.json", "tokenizer_config.json"]


def convert(source: str | os.PathLike, fmt: str = "auto") -> Components:
    """Read a PyTorch MusicGen checkpoint (hub id or local directory).

    `fmt`: "hf" (transformers: `config.json` + safetensors / `pytorch_model.bin` + tokenizer files),
    "audiocraft" (`state_dict.bin` + `compression_state_dict.bin`; T5 and its tokenizer from the hub
    name in `xp.cfg`, as audiocraft does), or "auto" (transformers format when there is a MusicGen
    `config.json`, else audiocraft)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    path = resolve(source, _SMALL_FILES)
    if path.is_file():
        path = path.parent
    has_hf = (path / "config.json").exists() and str(read_json(path / "config.json").get("model_type", "")).startswith(
        "musicgen"
    )
    if fmt == "hf" or (fmt == "auto" and has_hf):
        if not has_hf:
            raise CheckpointError(f"{source}: no MusicGen config.json (transformers format) in {path}")
        return _convert_hf(source, path)
    return _convert_audiocraft(source, path)


def _convert_hf(source, path: Path) -> Components:
    cfg = read_json(path / "config.json")
    lm_config = mg.lm_config_from_hf(cfg)
    state = fetch_hf_weights(source, path)  # read once, split between the three converters
    codec_config = enc.config_from_hf(cfg.get("audio_encoder") or {})
    codec = Codec(
        codec_config,
        enc.params_from_hf_state_dict(strip_prefix(state, "audio_encoder."), codec_config, f"{source} audio_encoder"),
        stereo=lm_config.num_codebooks == 2 * codec_config.num_codebooks,
        source=str(source),
    )
    t5_config = t5.config_from_hf(cfg.get("text_encoder") or {})
    t5_params = t5.params_from_hf_state_dict(strip_prefix(state, "text_encoder."), t5_config, f"{source} text_encoder")
    text_encoder = T5TextEncoder(t5_config, t5_params, T5Tokenizer.from_pretrained(path))
    lm_params = mg.lm_params_from_hf_state_dict(state, lm_config, str(source))
    return Components(codec, text_encoder, lm_config, lm_params, str(source))


def _convert_audiocraft(source, path: Path) -> Components:
    files = ["state_dict.bin", "compression_state_dict.bin"]
    if not all((path / f).exists() for f in files):
        path = resolve(source, files)  # a hub id: download the audiocraft files only now
    if not all((path / f).exists() for f in files):
        raise CheckpointError(f"{source}: the audiocraft format needs state_dict.bin and compression_state_dict.bin")
    lm_config, lm_params, t5_name, stereo = load_audiocraft_lm(path / "state_dict.bin")
    # a DAC codes with as many of its codebooks as the LM models (audiocraft's `compression_model_n_q`)
    codec = load_codec(path / "compression_state_dict.bin", stereo=stereo, num_codebooks=lm_config.num_codebooks)
    return Components(codec, T5TextEncoder.from_pretrained(t5_name), lm_config, lm_params, str(source))
