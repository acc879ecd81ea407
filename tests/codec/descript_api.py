"""descript's `dac` package (descript-audio-codec 1.0.0), the reference for its checkpoint layout and its codec.

Installed with `pip install --no-deps descript-audio-codec==1.0.0` (`make test` does): its requirements
descript-audiotools (which pins protobuf < 3.20 against TensorFlow's) and torchaudio (no build for torch 2.13)
are only needed for audio files and training, so the modules it imports from them, and argbind, are stand-ins
while it is imported. `descript_checkpoint` writes a model as audiotools' `BaseModel.save(package=False)` does.
"""

from __future__ import annotations

import inspect
import sys
import types

import torch


def _stand_ins() -> dict[str, types.ModuleType]:
    """audiotools (the names `dac` imports: `AudioSignal`, `STFTParams`, `ml.BaseModel` as a plain module with
    its INTERN / EXTERN lists, `ml.Accelerator`) and argbind (`bind` returning the function)."""
    audiotools, ml, argbind = (types.ModuleType(n) for n in ("audiotools", "audiotools.ml", "argbind"))
    ml.BaseModel = type("BaseModel", (torch.nn.Module,), {"INTERN": [], "EXTERN": []})
    ml.Accelerator = type("Accelerator", (), {})
    audiotools.ml = ml
    audiotools.AudioSignal = type("AudioSignal", (), {})
    audiotools.STFTParams = type("STFTParams", (), {})
    argbind.bind = lambda *args, **kwargs: lambda fn: fn
    return {"audiotools": audiotools, "audiotools.ml": ml, "argbind": argbind}


def descript_dac_class() -> type:
    """descript's `dac.model.DAC`; AssertionError naming the install command if the package is absent. The
    stand-ins are in `sys.modules` only while `dac` is imported."""
    stand_ins = {name: module for name, module in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import dac.model
    except ModuleNotFoundError as e:
        raise AssertionError(
            f"descript's dac package is missing ({e}): pip install --no-deps descript-audio-codec==1.0.0"
        ) from e
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return dac.model.DAC


def descript_checkpoint(model: torch.nn.Module, path) -> None:
    """`torch.save({"state_dict", "metadata": {"kwargs"}})` as audiotools' `BaseModel.save(path, package=False)`
    writes it (`dac.utils.load_model`'s files, whose `DAC.load` reads it back): kwargs are the defaults of the
    class's arguments, each replaced by the model's attribute of that name where it has one."""
    kwargs = {
        name: getattr(model, name, parameter.default)
        for name, parameter in inspect.signature(type(model)).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": kwargs}}, path)
