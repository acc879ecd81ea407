"""Checkpoint tensors -> parameter trees, through a key map that names every tensor's destination.

A key map is `{checkpoint key: Target}`, generated from a model's own layout. `assemble` checks the
state dict against it (missing keys, unexpected keys, wrong shapes: all reported in one
CheckpointError) and builds the float32 parameter tree; `check_tree` does the same check for a tree
in this project's own format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from musicgen_jax.checkpoint.errors import CheckpointError

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a checkpoint tensor goes: our parameter path and the tensor's layout.

    layout: "copy" (same layout), "conv" (torch [out, in, k]), "convtr" (torch [in, out, k]),
    "conv2d" (torch [out, in, kh, kw], Flax [kh, kw, in, out]), "linear" (torch [out, in]),
    "channel" (torch [1, C, 1]: a per-channel parameter broadcast over [B, C, T]; ours [C]),
    "sum" (added into the parameter), "stack" (row `index` of the parameter).
    """

    path: Path
    layout: str = "copy"
    index: int = 0


_TO_TORCH_SHAPE = {
    "conv": lambda s: (s[2], s[1], s[0]),
    "convtr": lambda s: (s[1], s[2], s[0]),
    "conv2d": lambda s: (s[3], s[2], s[0], s[1]),
    "linear": lambda s: (s[1], s[0]),
    "channel": lambda s: (1, s[0], 1),
    "stack": lambda s: s[1:],
}
_FROM_TORCH = {
    "conv": lambda v: v.transpose(2, 1, 0),
    "convtr": lambda v: v.transpose(2, 0, 1),
    "conv2d": lambda v: v.transpose(2, 3, 1, 0),
    "linear": lambda v: v.T,
    "channel": lambda v: v.reshape(-1),
}


def param_shapes(init: Callable[[], dict]) -> dict[Path, tuple[int, ...]]:
    """Shape of every parameter that `init()` (a flax `Module.init` call) creates, by path below "params"
    (logical-axis metadata boxes removed)."""
    return {path: leaf.shape for path, leaf in flatten_dict(nn.unbox(jax.eval_shape(init))["params"]).items()}


def _mismatch(what: str, missing: list, unexpected: list, wrong: list) -> None:
    if not (missing or unexpected or wrong):
        return
    lines = [f"{what}:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
    raise CheckpointError("\n".join(lines))


def assemble(
    state: dict[str, np.ndarray],
    key_map: dict[str, Target],
    shapes: dict[Path, tuple[int, ...]],
    what: str,
    unused: Iterable[str] = (),
) -> dict:
    """`{"params": tree}` from checkpoint tensors. `unused`: keys a checkpoint may carry that the model
    does not use by design (e.g. training-only buffers); any other key not in `key_map` is an error."""
    missing = sorted(set(key_map) - set(state))
    unexpected = sorted(set(state) - set(key_map) - set(unused))
    torch_shape = {key: _TO_TORCH_SHAPE.get(t.layout, lambda s: s)(shapes[t.path]) for key, t in key_map.items()}
    wrong = [
        f"{key}: {tuple(state[key].shape)} (expected {tuple(torch_shape[key])})"
        for key in key_map
        if key in state and tuple(state[key].shape) != tuple(torch_shape[key])
    ]
    _mismatch(f"{what} does not match its config", missing, unexpected, wrong)
    flat = {path: np.zeros(shape, np.float32) for path, shape in shapes.items()}
    for key, target in key_map.items():
        value = _FROM_TORCH.get(target.layout, lambda v: v)(np.asarray(state[key], np.float32))
        if target.layout == "stack":
            flat[target.path][target.index] = value
        elif target.layout == "sum":
            flat[target.path] += value
        else:
            flat[target.path] = value
    return {"params": unflatten_dict(flat)}


_TO_TORCH = {
    "conv": lambda v: v.transpose(2, 1, 0),
    "convtr": lambda v: v.transpose(1, 2, 0),
    "conv2d": lambda v: v.transpose(3, 2, 0, 1),
    "linear": lambda v: v.T,
    "channel": lambda v: v.reshape(1, -1, 1),
}


def disassemble(params, key_map: dict[str, Target]) -> dict[str, np.ndarray]:
    """The inverse of `assemble`: checkpoint tensors (float32, contiguous, in the checkpoint's layouts)
    from `{"params": tree}`. A parameter that several "sum" keys add up to goes whole to the first of
    them, zeros to the others (so `assemble` gives the parameter back exactly; the original split is
    not recoverable)."""
    flat = {path: np.asarray(v, np.float32) for path, v in flatten_dict(params["params"]).items()}
    missing = sorted({"/".join(t.path) for t in key_map.values()} - {"/".join(p) for p in flat})
    if missing:
        raise CheckpointError(f"parameters to export are missing: {', '.join(missing[:12])}")
    out, summed = {}, set()
    for key, target in key_map.items():
        value = flat[target.path]
        if target.layout == "stack":
            value = value[target.index]
        elif target.layout == "sum":
            value = value if target.path not in summed else np.zeros_like(value)
            summed.add(target.path)
        out[key] = np.ascontiguousarray(_TO_TORCH.get(target.layout, lambda v: v)(value))
    return out


def same_tree(a, b) -> bool:
    """Whether two parameter trees have the same paths and exactly equal arrays."""
    a, b = flatten_dict(a), flatten_dict(b)
    return sorted(a) == sorted(b) and all(np.array_equal(np.asarray(a[p]), np.asarray(b[p])) for p in a)


def check_tree(params, shapes: dict[Path, tuple[int, ...]], what: str) -> dict:
    """`params` (`{"params": tree}`) as float32 numpy if its paths and shapes are `shapes`, else a
    CheckpointError naming the missing, unexpected and wrongly shaped parameters."""
    flat = flatten_dict(params.get("params", {}) if isinstance(params, dict) else {})
    missing = sorted("/".join(p) for p in set(shapes) - set(flat))
    unexpected = sorted("/".join(p) for p in set(flat) - set(shapes))
    wrong = [
        f"{'/'.join(p)}: {tuple(np.shape(v))} (expected {shapes[p]})"
        for p, v in flat.items()
        if p in shapes and tuple(np.shape(v)) != tuple(shapes[p])
    ]
    _mismatch(f"{what} does not match its config", missing, unexpected, wrong)
    return {"params": unflatten_dict({p: np.asarray(v, np.float32) for p, v in flat.items()})}


def strip_prefix(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The tensors under `prefix` (e.g. `audio_encoder.` in a MusicGen checkpoint), prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
