"""Optional dependencies: the features that need a package `pip install musicgen-jax` does not pull in, and one
clear error naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency of the asked-for feature is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`import module`, or MissingExtraError: `feature` needs `pip install 'musicgen-jax[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{feature} needs {module}: pip install 'musicgen-jax[{extra}]' ({e})") from e
