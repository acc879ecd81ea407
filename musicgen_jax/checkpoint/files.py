"""Checkpoint files: hub or local resolution, JSON, safetensors (single or sharded) and torch pickles read
to numpy. torch itself is imported lazily, only for `.bin` pickles (install the `torch` extra for those).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from musicgen_jax import fileio
from musicgen_jax.checkpoint import omegaconf_pickle
from musicgen_jax.checkpoint.errors import CheckpointError


def resolve(source: str | os.PathLike, allow_patterns: list[str]) -> Path:
    """A local file or directory as is; a URL (gs://...) or a hub repo id downloaded (or read from the cache:
    `fileio.mirror`, `huggingface_hub.snapshot_download`), restricted to `allow_patterns`. Returns the
    local path."""
    if fileio.is_url(source):
        try:
            return fileio.mirror(source, allow_patterns)
        except fileio.StorageError as e:
            raise CheckpointError(str(e)) from e
    path = Path(source).expanduser()
    if path.exists():
        return path
    source = str(source)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise CheckpointError(f"checkpoint path {source} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(source, allow_patterns=allow_patterns))
    except HFValidationError as e:
        raise CheckpointError(f"{source!r} is neither an existing path nor a valid hub repo id: {e}") from e
    except Exception as e:  # network, missing repo, offline mode without a cached copy
        raise CheckpointError(f"cannot fetch {source!r} from the Hugging Face hub: {type(e).__name__}: {e}") from e


def _to_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as float32 (floating) or its own integer/bool dtype."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def read_safetensors(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The tensors of one `.safetensors` file whose keys start with `prefix` (the others are not read),
    floating ones as float32 (bf16 included)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="flax") as f:
            return {key: _to_numpy(f.get_tensor(key)) for key in f.keys() if key.startswith(prefix)}
    except Exception as e:
        raise CheckpointError(f"cannot read safetensors file {path}: {type(e).__name__}: {e}") from e


def read_torch_pickle(path: Path, numpy_arrays: bool = False, configs: bool = False) -> Any:
    """`torch.load` of a checkpoint pickle (tensors, dicts, strings only: `weights_only=True`; with
    `numpy_arrays`, numpy arrays too, as torchvggish's PCA parameter file holds; with `configs`, OmegaConf
    configurations as plain dicts, as audiocraft's solver checkpoints hold: `omegaconf_pickle`)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs PyTorch: pip install 'musicgen-jax[torch]'") from e
    allowed = omegaconf_pickle.safe_globals() if configs else []
    if numpy_arrays:
        core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
        allowed += [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float32))]
        allowed += [type(np.dtype(t)) for t in (np.float64, np.int64, np.int32)]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read PyTorch checkpoint {path}: {type(e).__name__}: {e}") from e
    return omegaconf_pickle.plain(loaded) if configs else loaded


def tensors_to_numpy(state_dict: dict) -> dict[str, np.ndarray]:
    return {key: _to_numpy(value) for key, value in state_dict.items()}


def _read_pickle(path: Path, prefix: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors_to_numpy(read_torch_pickle(path)).items() if k.startswith(prefix)}


def read_hf_weights(directory: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The weights of a transformers `save_pretrained` directory whose keys start with `prefix` (e.g.
    `audio_encoder.`: one component of a MusicGen; safetensors files read only those tensors, a sharded
    index only the shards that hold them): `model.safetensors`, sharded `model.safetensors.index.json`,
    `pytorch_model.bin` or its sharded index, in that order."""
    for index_name, single_name, reader in (
        ("model.safetensors.index.json", "model.safetensors", read_safetensors),
        ("pytorch_model.bin.index.json", "pytorch_model.bin", _read_pickle),
    ):
        if (directory / single_name).exists():
            return reader(directory / single_name, prefix)
        if (directory / index_name).exists():
            try:
                weight_map = json.loads((directory / index_name).read_text())["weight_map"]
                shards = sorted({shard for key, shard in weight_map.items() if key.startswith(prefix)})
            except (ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"corrupt shard index {directory / index_name}: {e}") from e
            missing = [s for s in shards if not (directory / s).exists()]
            if missing:
                raise CheckpointError(f"{directory / index_name} lists shards that are missing: {missing}")
            weights = {}
            for shard in shards:
                weights.update(reader(directory / shard, prefix))
            return weights
    raise CheckpointError(
        f"no weights in {directory}: expected model.safetensors, pytorch_model.bin or a sharded index of either"
    )


_WEIGHT_PATTERNS = (
    ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"],
    ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"],
)


def fetch_hf_weights(source: str | os.PathLike, path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The weights of the transformers checkpoint `source` (those whose keys start with `prefix`: see
    `read_hf_weights`), resolved to `path`. A hub id is resolved with small files first; its weights are
    downloaded only here, safetensors preferred."""
    if not Path(source).expanduser().exists():
        for patterns in _WEIGHT_PATTERNS:
            path = resolve(source, patterns)
            if any((path / p).exists() for p in patterns[:2]):
                break
    return read_hf_weights(path, prefix)


def hf_component(hf_config: dict, model_type: str, musicgen_key: str, source) -> tuple[dict, str]:
    """(config, weight-key prefix) of one component in a transformers checkpoint: the config itself
    for a standalone `model_type` checkpoint, its `musicgen_key` part (weights under `musicgen_key.`)
    in a MusicGen checkpoint."""
    found = hf_config.get("model_type")
    if found == model_type:
        return hf_config, ""
    if found in ("musicgen", "musicgen_melody"):
        return hf_config.get(musicgen_key) or {}, f"{musicgen_key}."
    raise CheckpointError(f"{source}: config.json has model_type {found!r}, expected {model_type} or musicgen")


def read_json(path: str | os.PathLike) -> dict:
    """`fileio.read_json`, a missing or corrupt file raised as the CheckpointError of its checkpoint."""
    try:
        return fileio.read_json(path)
    except fileio.StorageError as e:
        raise CheckpointError(str(e)) from e
