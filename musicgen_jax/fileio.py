"""Atomic file writes: a temporary file in the same directory, renamed into place when complete."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is renamed to `path`, when it
    fails it is removed, so `path` is either absent, as before, or complete. Missing parent directories
    are created. A failed write (OSError) raises ValueError naming `path` (the CLIs' user-error type)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from e


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented JSON to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe form of a prompt: lowercase ASCII letters and digits joined by "_", at most
    `length` characters ("unconditional" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:length] or "unconditional"
