"""Whole MusicGen models: PyTorch checkpoints (transformers or audiocraft format) -> this project's
self-contained converted directory, and back into components.

Converted layout (loads without torch):
  musicgen_jax.json   {"format": "musicgen_jax.musicgen", "version", "source", "stereo"}
  codec/              config.json + params.safetensors          (EnCodec)
  text/               config.json + params.safetensors + tokenizer files (T5 encoder)
  lm/                 config.json + params.safetensors          (LM, incl. the text projection)

Versions (the one in musicgen_jax.json covers every part): 1 stored the LM's linear kernels [in, out];
2 (current) stores them [out, in]. Directories of another version are refused by `load` (square kernels
would otherwise load silently transposed); `MusicGen.get_pretrained` converts its cache entries again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax

from musicgen_jax.codec.model import Codec
from musicgen_jax.config import LMConfig, T5Config
from musicgen_jax.convert import encodec as enc
from musicgen_jax.convert import musicgen as mg
from musicgen_jax.convert import native, t5
from musicgen_jax.convert.codec_loader import load_codec, save_codec
from musicgen_jax.convert.keymap import check_tree, strip_prefix
from musicgen_jax.convert.torch_io import CheckpointError, fetch_hf_weights, read_json, resolve
from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.text.tokenizer import T5Tokenizer

MODEL_FILE = "musicgen_jax.json"
MODEL_FORMAT = "musicgen_jax.musicgen"
MODEL_VERSION = 2
FORMATS = ("auto", "hf", "audiocraft")
_SMALL_FILES = ["config.json", MODEL_FILE, "spiece.model", "tokenizer.json", "tokenizer_config.json"]


@dataclasses.dataclass(frozen=True)
class Components:
    """The three parts of a MusicGen model, ready to run."""

    codec: Codec
    text_encoder: T5TextEncoder
    lm_config: LMConfig
    lm_params: Any
    source: str


def is_converted(path: Path) -> bool:
    """A directory written by `save` (of any version)."""
    return (path / MODEL_FILE).is_file()


def is_current(path: Path) -> bool:
    """A directory written by `save` of this version."""
    try:
        return is_converted(path) and read_json(path / MODEL_FILE).get("version") == MODEL_VERSION
    except CheckpointError:
        return False


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
    from musicgen_jax.convert.audiocraft import load_audiocraft_lm

    files = ["state_dict.bin", "compression_state_dict.bin"]
    if not all((path / f).exists() for f in files):
        path = resolve(source, files)  # a hub id: download the audiocraft files only now
    if not all((path / f).exists() for f in files):
        raise CheckpointError(f"{source}: the audiocraft format needs state_dict.bin and compression_state_dict.bin")
    lm_config, lm_params, t5_name, stereo = load_audiocraft_lm(path / "state_dict.bin")
    codec = load_codec(path / "compression_state_dict.bin", stereo=stereo)
    return Components(codec, T5TextEncoder.from_pretrained(t5_name), lm_config, lm_params, str(source))


def save(components: Components, directory: str | os.PathLike) -> Path:
    """Write the converted directory atomically (no partial output on failure)."""
    with native.atomic_directory(directory) as tmp:
        save_codec(components.codec, tmp / "codec")
        text = components.text_encoder
        (tmp / "text").mkdir()
        native.write_tree(
            tmp / "text",
            jax.device_get(text.params),
            {"format": "musicgen_jax.t5", "config": text.config.to_dict(), "source": text.source},
        )
        text.tokenizer.save(tmp / "text")
        (tmp / "lm").mkdir()
        native.write_tree(
            tmp / "lm",
            jax.device_get(components.lm_params),
            {"format": "musicgen_jax.lm", "config": components.lm_config.to_dict()},
        )
        meta = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "source": components.source,
            "stereo": components.codec.stereo,
        }
        (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory)


def load(directory: str | os.PathLike) -> Components:
    """A converted directory written by `save`."""
    directory = Path(directory)
    meta = read_json(directory / MODEL_FILE)
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{directory / MODEL_FILE}: not a converted MusicGen (format {meta.get('format')!r})")
    if meta.get("version") != MODEL_VERSION:
        raise CheckpointError(
            f"{directory}: converted by another musicgen_jax version (format version "
            f"{meta.get('version')!r}, this one reads {MODEL_VERSION}); convert it again: "
            f"python convert_torch_weights.py SOURCE {directory}"
        )
    codec = load_codec(directory / "codec")
    t5_params, t5_meta = native.load_tree(directory / "text")
    t5_config = T5Config.from_dict(t5_meta["config"])
    t5_params = check_tree(t5_params, t5.expected_shapes(t5_config), f"{directory / 'text'} (T5 encoder)")
    text_encoder = T5TextEncoder(
        t5_config, t5_params, T5Tokenizer.from_pretrained(directory / "text"), t5_meta.get("source")
    )
    lm_params, lm_meta = native.load_tree(directory / "lm")
    lm_config = LMConfig.from_dict(lm_meta["config"])
    lm_params = check_tree(lm_params, mg.expected_shapes(lm_config), f"{directory / 'lm'} (LM)")
    return Components(codec, text_encoder, lm_config, lm_params, meta.get("source", str(directory)))
