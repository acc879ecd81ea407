"""A MusicGen model's three parts (`Components`) and this project's converted directory of them, which
loads without torch:

  musicgen_jax.json   {"format": "musicgen_jax.musicgen", "version", "source", "stereo"}
  codec/              config.json + params.safetensors          (EnCodec)
  text/               config.json + params.safetensors + tokenizer files (T5 encoder)
  lm/                 config.json + params.safetensors          (LM, incl. the text projection)

Versions (the one in musicgen_jax.json covers every part): 1 stored the LM's linear kernels [in, out];
2 (current) stores them [out, in]. Directories of another version are refused by `load_converted` (square
kernels would otherwise load silently transposed); `MusicGen.get_pretrained` converts its cache entries again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
from etils import epath

from musicgen_jax import fileio
from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_json
from musicgen_jax.checkpoint.keymap import check_tree
from musicgen_jax.codec.converted import load_converted as load_converted_codec
from musicgen_jax.codec.converted import save_codec
from musicgen_jax.codec.model import Codec
from musicgen_jax.config import LMConfig, T5Config
from musicgen_jax.lm.weights import expected_shapes as lm_shapes
from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.text.tokenizer import T5Tokenizer
from musicgen_jax.text.weights import expected_shapes as t5_shapes

MODEL_FILE = "musicgen_jax.json"
MODEL_FORMAT = "musicgen_jax.musicgen"
MODEL_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Components:
    """The three parts of a MusicGen model, ready to run."""

    codec: Codec
    text_encoder: T5TextEncoder
    lm_config: LMConfig
    lm_params: Any
    source: str


def is_converted(path: Path) -> bool:
    """A directory written by `save_converted` (of any version)."""
    return (path / MODEL_FILE).is_file()


def is_current(path: Path) -> bool:
    """A directory written by `save_converted` of this version."""
    try:
        return is_converted(path) and read_json(path / MODEL_FILE).get("version") == MODEL_VERSION
    except CheckpointError:
        return False


def save_converted(components: Components, directory: str | os.PathLike) -> epath.Path:
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
    return fileio.path(directory)


def load_converted(directory: str | os.PathLike) -> Components:
    """A converted directory written by `save_converted`."""
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
    codec = load_converted_codec(directory / "codec")
    t5_params, t5_meta = native.load_tree(directory / "text")
    t5_config = T5Config.from_dict(t5_meta["config"])
    t5_params = check_tree(t5_params, t5_shapes(t5_config), f"{directory / 'text'} (T5 encoder)")
    text_encoder = T5TextEncoder(
        t5_config, t5_params, T5Tokenizer.from_pretrained(directory / "text"), t5_meta.get("source")
    )
    lm_params, lm_meta = native.load_tree(directory / "lm")
    lm_config = LMConfig.from_dict(lm_meta["config"])
    lm_params = check_tree(lm_params, lm_shapes(lm_config), f"{directory / 'lm'} (LM)")
    return Components(codec, text_encoder, lm_config, lm_params, meta.get("source", str(directory)))
