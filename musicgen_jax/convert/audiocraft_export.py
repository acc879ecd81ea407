"""A MusicGen model -> audiocraft's format (audiocraft's `utils/export.py` and `models/loaders.py`): the directory
audiocraft's `MusicGen.get_pretrained(OUT)`
reads, two PyTorch pickles written with `torch.save` (torch is needed here, as for reading them):

  state_dict.bin              {"best_state": the LM's tensors, "xp.cfg": its YAML config, "version", "exported"}
  compression_state_dict.bin  {"best_state": the EnCodec tensors, "xp.cfg": the codec's YAML, "version", "exported"}

The LM's tensors are the transformers export's (`musicgen.hf_state_dict`) under audiocraft's names
(`audiocraft.lm_state_from_hf`); audiocraft loads T5 by hub name, so the text encoder must be one of its
T5 models (`audiocraft.t5_name_for`). The codec: the package it was read from when that holds exactly its
weights, else `encodec.audiocraft_state_dict`'s split."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from etils import epath

from musicgen_jax import fileio
from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_torch_pickle, tensors_to_numpy
from musicgen_jax.checkpoint.keymap import same_tree
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.dac.model import DacCodec
from musicgen_jax.codec.model import Codec
from musicgen_jax.components import Components
from musicgen_jax.config import ChromaConfig
from musicgen_jax.convert import audiocraft as ac
from musicgen_jax.convert.codec_loader import AUDIOCRAFT_PRETRAINED, PRETRAINED_DAC
from musicgen_jax.lm import weights as mg

VERSION = "1.3.0"  # the audiocraft release whose layout these packages follow


def lm_package(components: Components) -> dict:
    """`state_dict.bin`'s contents (numpy tensors) for the LM of `components` (torch: see `export_audiocraft`)."""
    import torch

    lm, text = components.lm_config, components.text_encoder
    state = ac.lm_state_from_hf(mg.hf_state_dict(jax.device_get(components.lm_params), lm))
    if lm.melody:  # the buffer audiocraft's chroma extractor holds: torchaudio's Spectrogram window, torch's own
        state[ac.CHROMA_WINDOW] = torch.hann_window(ChromaConfig().n_fft).numpy()
    codec = components.codec
    compression = {}
    if isinstance(codec, DacCodec):  # audiocraft's `compression_model_checkpoint` / `_n_q` of a DAC recipe
        compression = {"checkpoint": AUDIOCRAFT_PRETRAINED + pretrained_dac(codec), "n_q": codec.num_codebooks}
    cfg = ac.xp_cfg(lm, ac.t5_name_for(text.config, text.source), codec.sample_rate, codec.stereo, **compression)
    return {"best_state": state, "xp.cfg": cfg, "version": VERSION, "exported": True}


AUDIOCRAFT_DAC = ("dac_44khz", "dac_24khz")  # the DACs audiocraft's `CompressionModel.get_pretrained` names


def pretrained_dac(codec: DacCodec) -> str:
    """audiocraft's name of a released DAC (`CompressionModel.get_pretrained`: dac_44khz, dac_24khz), which a
    package names instead of holding its weights; CheckpointError for any other DAC."""
    source = str(codec.source or "").removeprefix(AUDIOCRAFT_PRETRAINED)
    name = next((name for name, hub in PRETRAINED_DAC.items() if source in (name, hub)), None)
    if name not in AUDIOCRAFT_DAC:
        raise CheckpointError(
            f"audiocraft loads a DAC only by its release name ({', '.join(AUDIOCRAFT_DAC)}); this model's codec "
            f"is {codec.source or 'unnamed'}"
        )
    return name


def codec_package(codec: Codec | DacCodec) -> dict:
    """`compression_state_dict.bin`'s contents: a DAC's release name (audiocraft's
    `export_pretrained_compression_model` form); the audiocraft package `codec.source` when it imports to
    exactly `codec`'s parameters (a frozen codec given back unchanged), else its tensors and config."""
    if isinstance(codec, DacCodec):
        return {"pretrained": pretrained_dac(codec), "exported": True, "version": VERSION}
    params = jax.device_get(codec.params)
    if codec.source and Path(codec.source).name == "compression_state_dict.bin":
        try:
            package = read_torch_pickle(Path(codec.source))
            state = tensors_to_numpy(package["best_state"])
            imported = enc.params_from_hf_state_dict(
                {enc.audiocraft_to_hf_key(k): v for k, v in state.items()}, codec.config
            )
            if same_tree(params, imported):
                return {
                    "best_state": state,
                    "xp.cfg": package["xp.cfg"],
                    "version": package.get("version", VERSION),
                    "exported": True,
                }
        except (OSError, KeyError, TypeError, CheckpointError):
            pass
    return {
        "best_state": enc.audiocraft_state_dict(params, codec.config),
        "xp.cfg": enc.audiocraft_cfg(codec.config),
        "version": VERSION,
        "exported": True,
    }


def export_audiocraft(components: Components, directory: str | os.PathLike) -> epath.Path:
    """Write `components` in audiocraft's format to `directory`, atomically (replacing it if it exists)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError("exporting to audiocraft writes PyTorch pickles: install torch") from e

    packages = {"state_dict.bin": lm_package(components), "compression_state_dict.bin": codec_package(components.codec)}
    with native.atomic_directory(directory) as tmp:
        for name, package in packages.items():
            if "best_state" in package:
                state = {k: torch.from_numpy(np.array(v, order="C")) for k, v in package["best_state"].items()}
                package = {**package, "best_state": state}
            torch.save(package, tmp / name)
    return fileio.path(directory)
