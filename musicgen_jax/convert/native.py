"""This project's converted-weights format: a directory with `config.json` and `params.safetensors`.

`params.safetensors` holds the flattened parameter tree (keys joined with '/'), float32 as
converted. Directories are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from musicgen_jax.convert.torch_io import CheckpointError, read_json

PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"


def save_tree(directory: str | os.PathLike, params, meta: dict) -> Path:
    """Write `params` and `meta` (JSON-serializable, must carry a "format" key) to `directory`,
    replacing it atomically if it exists."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        flat = {"/".join(k): np.ascontiguousarray(np.asarray(v)) for k, v in flatten_dict(params).items()}
        save_file(flat, str(tmp / PARAMS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old)
        else:
            tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return directory


def is_native(directory: Path, fmt: str) -> bool:
    config = directory / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == fmt
    except (ValueError, AttributeError):
        return False


def load_tree(directory: Path) -> tuple[dict, dict]:
    """(params, meta) written by `save_tree`."""
    meta = read_json(directory / CONFIG_FILE)
    try:
        flat = load_file(str(directory / PARAMS_FILE))
    except Exception as e:
        raise CheckpointError(f"cannot read {directory / PARAMS_FILE}: {type(e).__name__}: {e}") from e
    return unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()}), meta
