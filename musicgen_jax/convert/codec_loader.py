"""Load a `Codec` from any supported source.

Sources: a hub id or local path of (1) this project's converted codec directory, (2) a transformers
`EncodecModel` (e.g. facebook/encodec_32khz), (3) a transformers MusicGen checkpoint (its
`audio_encoder`), (4) an audiocraft `compression_state_dict.bin`, full package or the pointer form
`{'pretrained': 'facebook/encodec_32khz'}`, or (5) an audiocraft compression solver's `checkpoint.th`.
Stereo (interleaved codebooks) is read from the MusicGen config when there is one, and can be forced
with `stereo=`. `load_dac`: a `DacCodec` from a descript checkpoint file or a transformers `DacModel`.
"""

from __future__ import annotations

import os
from pathlib import Path

from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import (
    fetch_hf_weights,
    hf_component,
    read_json,
    read_torch_pickle,
    resolve,
    tensors_to_numpy,
)
from musicgen_jax.checkpoint.keymap import strip_prefix
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.dac import weights as dac
from musicgen_jax.codec.dac.model import DacCodec
from musicgen_jax.codec.model import Codec
from musicgen_jax.config import CodecConfig

COMPRESSION_FILE = "compression_state_dict.bin"
_SMALL_FILES = [
    "config.json",
    COMPRESSION_FILE,
    f"codec/{native.CONFIG_FILE}",
    f"codec/{native.PARAMS_FILE}",
    native.PARAMS_FILE,
]


def load_codec(source: str | os.PathLike, stereo: bool | None = None) -> Codec:
    """A `Codec` from a hub id or a local path (see the module docstring)."""
    path = resolve(source, _SMALL_FILES)
    if path.is_file():
        if path.suffix == ".safetensors":
            path = path.parent
        else:
            return _from_audiocraft_package(path, stereo)
    for directory in (path / "codec", path):
        if native.is_native(directory, enc.NATIVE_FORMAT):
            return enc.load_native_codec(directory, stereo)
    hf_config = read_json(path / "config.json") if (path / "config.json").exists() else None
    if stereo is None and hf_config is not None and hf_config.get("model_type", "").startswith("musicgen"):
        stereo = hf_config.get("decoder", {}).get("audio_channels", 1) == 2
    if (path / COMPRESSION_FILE).exists():
        return _from_audiocraft_package(path / COMPRESSION_FILE, stereo)
    if hf_config is None:
        raise CheckpointError(f"{source}: no config.json, {COMPRESSION_FILE} or converted codec found in {path}")
    return _from_hf(source, path, hf_config, bool(stereo))


def _from_hf(source, path: Path, hf_config: dict, stereo: bool) -> Codec:
    config, state = _hf_tensors(source, path, hf_config)
    return Codec(config, enc.params_from_hf_state_dict(state, config, str(source)), stereo, str(source))


def _hf_tensors(source, path: Path, hf_config: dict) -> tuple[CodecConfig, dict]:
    """The codec config and transformers-named tensors of an `EncodecModel` or a MusicGen's `audio_encoder`."""
    codec_config, prefix = hf_component(hf_config, "encodec", "audio_encoder", source)
    return enc.config_from_hf(codec_config), strip_prefix(fetch_hf_weights(source, path, prefix), prefix)


def hf_codec_tensors(source: str) -> dict | None:
    """The transformers-named tensors of the codec in `source` (an `EncodecModel` or a transformers MusicGen
    checkpoint: a path, or a hub id, resolved as any checkpoint), as that checkpoint holds them; None for
    other sources (audiocraft packages, converted directories) or when they cannot be read."""
    try:
        path = resolve(source, _SMALL_FILES)
        if not (path / "config.json").is_file() or (path / COMPRESSION_FILE).exists():
            return None
        return _hf_tensors(source, path, read_json(path / "config.json"))[1]
    except (OSError, CheckpointError):
        return None


def _from_audiocraft_package(file: Path, stereo: bool | None) -> Codec:
    """An audiocraft package (`export_encodec`'s, or the pointer form) or a compression solver's checkpoint
    (`checkpoint.th`: the best state under `best_state["model"]`, `xp.cfg` an OmegaConf config)."""
    pkg = read_torch_pickle(file, configs=True)
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{file}: not an audiocraft package (a dict), got {type(pkg).__name__}")
    if "pretrained" in pkg:
        return load_codec(pkg["pretrained"], stereo)
    if "best_state" not in pkg or "xp.cfg" not in pkg:
        hint = " (an FSDP solver checkpoint: export it with audiocraft first)" if "fsdp_best_state" in pkg else ""
        raise CheckpointError(
            f"{file}: an audiocraft package needs 'best_state' and 'xp.cfg' (or 'pretrained'), found keys "
            f"{sorted(pkg)}{hint}"
        )
    best = pkg["best_state"]
    solver = isinstance(best, dict) and isinstance(best.get("model"), dict)  # a solver's: per stateful part
    config = enc.config_from_audiocraft(enc.parse_audiocraft_cfg(pkg["xp.cfg"]))
    state = {enc.audiocraft_to_hf_key(k): v for k, v in tensors_to_numpy(best["model"] if solver else best).items()}
    return Codec(config, enc.params_from_hf_state_dict(state, config, str(file)), bool(stereo), str(file))


def load_dac(source: str | os.PathLike) -> DacCodec:
    """A `DacCodec` from a descript checkpoint file (what `dac.utils.load_model` reads, e.g.
    `weights_44khz_8kbps_0.0.1.pth`) or a transformers `DacModel` (a hub id such as descript/dac_44khz, or a
    `save_pretrained` directory). Its hyper-parameters come from the checkpoint."""
    path = resolve(source, ["config.json"])
    if path.is_file():
        return _dac_from_descript(path)
    if not (path / "config.json").exists():
        raise CheckpointError(f"{source}: neither a descript DAC checkpoint file nor a directory with config.json")
    config = dac.config_from_hf(read_json(path / "config.json"))
    state = fetch_hf_weights(source, path)
    return DacCodec(config, dac.params_from_hf_state_dict(state, config, str(source)), str(source))


def _dac_from_descript(file: Path) -> DacCodec:
    """descript's `torch.save({"state_dict": ..., "metadata": {"kwargs": DAC's arguments, ...}})` (audiotools'
    `BaseModel.save` without packaging)."""
    checkpoint = read_torch_pickle(file)
    metadata = checkpoint.get("metadata") if isinstance(checkpoint, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("kwargs"), dict) or "state_dict" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{file}: not a descript DAC checkpoint: expected 'state_dict' and 'metadata' with 'kwargs', found {found}"
        )
    try:
        config = dac.config_from_descript(metadata["kwargs"])
    except CheckpointError as e:
        raise CheckpointError(f"{file}: {e}") from e
    state = tensors_to_numpy(checkpoint["state_dict"])
    return DacCodec(config, dac.params_from_descript_state_dict(state, config, str(file)), str(file))
