"""Either codec family in this project's converted format (`config.json` + `params.safetensors`, written by
`checkpoint.native`): EnCodec's `codec.weights.save_codec` directories, and DAC's, which record the codebooks it
codes with (`DacCodec.set_num_codebooks`)."""

from __future__ import annotations

import os
from pathlib import Path

import jax

from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import check_tree
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.dac import weights as dac
from musicgen_jax.codec.dac.model import DacCodec
from musicgen_jax.codec.model import Codec
from musicgen_jax.config import DacConfig

DAC_FORMAT = "musicgen_jax.dac"


def save_codec(codec: Codec | DacCodec, directory: str | os.PathLike) -> Path:
    """Write `codec` converted (EnCodec: `codec.weights.save_codec`)."""
    if not isinstance(codec, DacCodec):
        return enc.save_codec(codec, directory)
    meta = {
        "format": DAC_FORMAT,
        "version": 1,
        "config": codec.config.to_dict(),
        "num_codebooks": codec.num_codebooks,
        "source": codec.source,
    }
    return native.save_tree(directory, jax.device_get(codec.params), meta)


def is_converted(directory: Path) -> bool:
    return native.is_native(directory, enc.NATIVE_FORMAT) or native.is_native(directory, DAC_FORMAT)


def load_converted(directory: str | os.PathLike, stereo: bool | None = None) -> Codec | DacCodec:
    """A codec written by `save_codec` (`stereo` overrides an EnCodec's recorded layout)."""
    directory = Path(directory)
    if not native.is_native(directory, DAC_FORMAT):
        return enc.load_native_codec(directory, stereo)
    if stereo:
        raise CheckpointError(f"{directory}: DAC codes mono audio; interleaved stereo codebooks need an EnCodec")
    params, meta = native.load_tree(directory)
    config = DacConfig.from_dict(meta["config"])
    params = check_tree(params, dac.expected_shapes(config), dac.describe(config, str(directory)))
    codec = DacCodec(config, params, meta.get("source"))
    codec.set_num_codebooks(meta["num_codebooks"])
    return codec
