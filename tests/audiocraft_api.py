"""audiocraft itself, as the reference that reads exported packages: its 1.3.0 sources (installed with
`pip install --no-deps audiocraft==1.3.0`: its requirements pin torch 2.1 and CUDA-only packages) with the
modules it imports but never runs on the paths used here (audio file I/O, xformers, metrics, demucs, ...)
replaced by empty stand-ins."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import types

# imported by audiocraft's package __init__s, not used to build or run the LM and EnCodec models
UNUSED = (
    "av",
    "torchaudio",
    "xformers",
    "spacy",
    "laion_clap",
    "demucs",
    "num2words",
    "flashy",
    "hydra",
    "dora",
    "treetable",
    "torchmetrics",
    "encodec",
    "gradio",
    "torchvision",
    "torchtext",
)


class _Absent(types.ModuleType):
    """A stand-in module: any attribute is another stand-in (classes derive from `object`)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return sys.modules.setdefault(f"{self.__name__}.{name}", _Absent(f"{self.__name__}.{name}"))

    def __call__(self, *args, **kwargs):
        return self

    def __mro_entries__(self, bases):
        return (object,)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in UNUSED and name not in sys.modules:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Absent(spec.name)

    def exec_module(self, module):
        module.__path__ = []


@contextlib.contextmanager
def audiocraft_models():
    """`audiocraft.models` (`MusicGen`, `loaders`, ...), with the stand-ins importable only inside the block
    (other tests see the real environment: no demucs, no torchaudio); AssertionError naming the install
    command if audiocraft is absent. xformers' one function its attention calls with the torch backend, `ops.unbind`, is
    `torch.unbind`."""
    import torch

    finder, before = _Finder(), set(sys.modules)
    sys.meta_path.append(finder)
    try:
        import xformers.ops

        xformers.ops.unbind = torch.unbind
        try:
            import audiocraft.models
        except ModuleNotFoundError as e:
            raise AssertionError(
                f"audiocraft is not installed ({e}): make test installs it with "
                "`pip install --no-deps audiocraft==1.3.0`"
            ) from e
        yield audiocraft.models
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if isinstance(sys.modules[name], _Absent):
                del sys.modules[name]
