"""Atomic file writes shared by the CLIs: a temporary file in the same directory, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save through a temporary file in the same directory, renamed into place. A failed write
    raises ValueError naming `path` (the CLIs' user-error type, as `write_audio`'s AudioError)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from e
