"""Load a `Codec` from any supported source.

Sources: a hub id or local path of (1) this project's converted codec directory, (2) a transformers
`EncodecModel` (e.g. facebook/encodec_32khz), (3) a transformers MusicGen checkpoint (its
`audio_encoder`), (4) an audiocraft `compression_state_dict.bin`, full package or the pointer form
`{'pretrained': 'facebook/encodec_32khz'}`, or (5) an audiocraft compression solver's `checkpoint.th`.
Stereo (interleaved codebooks) is read from the MusicGen config when there is one, and can be forced
with `stereo=`. Descript's DAC (a `DacCodec`): (6) descript's checkpoint file (`weights_44khz_8kbps_0.0.1.pth`),
(7) a transformers `DacModel` (descript/dac_44khz), (8) the names dac_44khz, dac_24khz, dac_16khz (that hub
model). audiocraft's `//pretrained/NAME` spelling works for any of them.
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
from musicgen_jax.codec import converted
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.dac import weights as dac
from musicgen_jax.codec.dac.model import DacCodec
from musicgen_jax.codec.model import Codec
from musicgen_jax.config import CodecConfig

COMPRESSION_FILE = "compression_state_dict.bin"
AUDIOCRAFT_PRETRAINED = "//pretrained/"  # audiocraft's `compression_model_checkpoint` prefix of a pretrained codec
PRETRAINED_DAC = {f"dac_{rate}": f"descript/dac_{rate}" for rate in ("44khz", "24khz", "16khz")}  # hub ids
_SMALL_FILES = [
    "config.json",
    COMPRESSION_FILE,
    f"codec/{native.CONFIG_FILE}",
    f"codec/{native.PARAMS_FILE}",
    native.PARAMS_FILE,
]


def load_codec(
    source: str | os.PathLike, stereo: bool | None = None, num_codebooks: int | None = None
) -> Codec | DacCodec:
    """A `Codec` (EnCodec) or `DacCodec` from a hub id or a local path (see the module docstring).
    `num_codebooks`: code with the first so many (audiocraft's `set_num_codebooks`; DAC only)."""
    codec = _load(source, stereo)
    if num_codebooks is not None and num_codebooks != codec.num_codebooks:
        if not isinstance(codec, DacCodec):
            raise CheckpointError(
                f"{source}: an EnCodec codes with all its {codec.num_codebooks} codebooks; choosing "
                f"{num_codebooks} is supported for DAC"
            )
        codec.set_num_codebooks(num_codebooks)
    return codec


def _load(source: str | os.PathLike, stereo: bool | None) -> Codec | DacCodec:
    if isinstance(source, str):  # audiocraft's spelling of a pretrained codec, and its DAC names
        source = source.removeprefix(AUDIOCRAFT_PRETRAINED)
        source = PRETRAINED_DAC.get(source, source)
    path = resolve(source, _SMALL_FILES)
    if path.is_file():
        if path.suffix == ".safetensors":
            path = path.parent
        else:
            return _from_file(path, stereo)
    for directory in (path / "codec", path):
        if converted.is_converted(directory):
            return converted.load_converted(directory, stereo)
    hf_config = read_json(path / "config.json") if (path / "config.json").exists() else None
    if stereo is None and hf_config is not None and hf_config.get("model_type", "").startswith("musicgen"):
        stereo = hf_config.get("decoder", {}).get("audio_channels", 1) == 2
    if (path / COMPRESSION_FILE).exists():
        return _from_file(path / COMPRESSION_FILE, stereo)
    if hf_config is None:
        raise CheckpointError(f"{source}: no config.json, {COMPRESSION_FILE} or converted codec found in {path}")
    if hf_config.get("model_type") == "dac":
        return _mono(_dac_from_hf(source, path, hf_config), stereo, source)
    return _from_hf(source, path, hf_config, bool(stereo))


def _mono(codec: DacCodec, stereo: bool | None, source) -> DacCodec:
    if stereo:
        raise CheckpointError(f"{source}: DAC codes mono audio; interleaved stereo codebooks need an EnCodec")
    return codec


def _from_file(file: Path, stereo: bool | None) -> Codec | DacCodec:
    """A torch pickle: descript's DAC checkpoint, or audiocraft's package or solver checkpoint."""
    pkg = read_torch_pickle(file, configs=True)
    if isinstance(pkg, dict) and "state_dict" in pkg:
        return _mono(_dac_from_descript(file, pkg), stereo, file)
    return _from_audiocraft_package(file, pkg, stereo)


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


def _from_audiocraft_package(file: Path, pkg, stereo: bool | None) -> Codec:
    """An audiocraft package (`export_encodec`'s, or the pointer form) or a compression solver's checkpoint
    (`checkpoint.th`: the best state under `best_state["model"]`, `xp.cfg` an OmegaConf config)."""
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


def _dac_from_hf(source, path: Path, hf_config: dict) -> DacCodec:
    """transformers' `DacModel` (descript/dac_44khz, ...; a `save_pretrained` directory)."""
    config = dac.config_from_hf(hf_config)
    state = fetch_hf_weights(source, path)
    return DacCodec(config, dac.params_from_hf_state_dict(state, config, str(source)), str(source))


def _dac_from_descript(file: Path, checkpoint: dict) -> DacCodec:
    """descript's `torch.save({"state_dict": ..., "metadata": {"kwargs": DAC's arguments, ...}})` (audiotools'
    `BaseModel.save` without packaging: what `dac.utils.load_model` reads, e.g. `weights_44khz_8kbps_0.0.1.pth`)."""
    metadata = checkpoint.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("kwargs"), dict):
        raise CheckpointError(
            f"{file}: not a descript DAC checkpoint: expected 'state_dict' and 'metadata' with 'kwargs', found "
            f"{sorted(checkpoint)}"
        )
    try:
        config = dac.config_from_descript(metadata["kwargs"])
    except CheckpointError as e:
        raise CheckpointError(f"{file}: {e}") from e
    state = tensors_to_numpy(checkpoint["state_dict"])
    return DacCodec(config, dac.params_from_descript_state_dict(state, config, str(file)), str(file))
