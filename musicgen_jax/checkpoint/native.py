"""This project's converted-weights format: a directory with `config.json` and `params.safetensors`.

`params.safetensors` holds the flattened parameter tree (keys joined with '/'), float32 as
converted. Directories are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from musicgen_jax import fileio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_json

PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `directory`; on success it replaces `directory` (`_swap_in`),
    on failure it is removed and an existing `directory` is left as it was. No partial output remains.
    A failed write (OSError) raises CheckpointError. A URL: a local temporary directory, uploaded on
    success with its top-level JSON last (`fileio.upload_tree`; readers read it from a `fileio.mirror`)."""
    if fileio.is_url(directory):
        with tempfile.TemporaryDirectory(prefix="musicgen-jax-") as tmp:
            yield Path(tmp)
            try:
                fileio.upload_tree(Path(tmp), directory)
            except fileio.StorageError as e:
                raise CheckpointError(str(e)) from e
        return
    directory = Path(directory)
    tmp = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        yield tmp
        _swap_in(tmp, directory)
    except OSError as e:
        raise CheckpointError(f"cannot write {directory}: {e.strerror or e}") from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename `tmp` to `directory`; an existing one is moved aside first, removed after, and put back
    if the rename fails."""
    if not directory.exists():
        tmp.rename(directory)
        return
    old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
    directory.rename(old)
    try:
        tmp.rename(directory)
    except OSError:
        old.rename(directory)
        raise
    shutil.rmtree(old)


def write_tree(directory: Path, params, meta: dict) -> None:
    """Write `params` and `meta` (JSON-serializable, with a "format" key) into the existing `directory`."""
    flat = {"/".join(k): np.ascontiguousarray(np.asarray(v)) for k, v in flatten_dict(params).items()}
    save_file(flat, str(directory / PARAMS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def save_tree(directory: str | os.PathLike, params, meta: dict) -> epath.Path:
    """`write_tree` into `directory`, replacing it atomically if it exists."""
    with atomic_directory(directory) as tmp:
        write_tree(tmp, params, meta)
    return fileio.path(directory)


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
