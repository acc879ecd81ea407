"""hear21passt's released PaSST checkpoints (`passt-s-f128-20sec-p16-s10-ap.474-swa.pt`, ...) as `PasstNet` params.

A released file is the `torch.save`d state dict of hear21passt's `PaSST` network (no wrapper prefix: its
`load_pretrained` loads it strictly into the net, after `checkpoint_filter_fn`, which unwraps a `{"model": ...}`
dict and reshapes a flat patch projection, and `adapt_input_conv`, which sums a 3-channel patch kernel to one).
The distillation head `head_dist` is loaded by hear21passt but unused by its forward pass: it is skipped here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_torch_pickle, tensors_to_numpy
from musicgen_jax.checkpoint.keymap import Target, assemble, param_shapes
from musicgen_jax.metrics import networks
from musicgen_jax.metrics.passt.model import PASST_20SEC_URL, PaSST, PasstConfig, PasstNet, num_frames

UNUSED = ("head_dist.weight", "head_dist.bias")
HEAD_DIM = 64  # every released PaSST: 768 wide, 12 heads


def key_map(config: PasstConfig) -> dict[str, Target]:
    """`{hear21passt state-dict key: Target}` for every parameter of `PasstNet(config)`."""
    keys = {
        "patch_embed.proj.weight": Target(("patch_kernel",)),
        "patch_embed.proj.bias": Target(("patch_bias",)),
        **{name: Target((name,)) for name in ("cls_token", "dist_token", "new_pos_embed")},
        **{name: Target((name,)) for name in ("freq_new_pos_embed", "time_new_pos_embed")},
        "norm.weight": Target(("norm", "scale")),
        "norm.bias": Target(("norm", "bias")),
        "head.0.weight": Target(("head_norm", "scale")),
        "head.0.bias": Target(("head_norm", "bias")),
        "head.1.weight": Target(("head", "kernel"), "linear"),
        "head.1.bias": Target(("head", "bias")),
    }
    for i in range(config.depth):
        block = f"blocks_{i}"
        for torch_name, ours in (("norm1", ("norm1",)), ("norm2", ("norm2",))):
            keys[f"blocks.{i}.{torch_name}.weight"] = Target((block, *ours, "scale"))
            keys[f"blocks.{i}.{torch_name}.bias"] = Target((block, *ours, "bias"))
        for torch_name, ours in (("attn.qkv", ("attn", "qkv")), ("attn.proj", ("attn", "proj")),
                                 ("mlp.fc1", ("fc1",)), ("mlp.fc2", ("fc2",))):  # fmt: skip
            keys[f"blocks.{i}.{torch_name}.weight"] = Target((block, *ours, "kernel"), "linear")
            keys[f"blocks.{i}.{torch_name}.bias"] = Target((block, *ours, "bias"))
    return keys


def shapes(config: PasstConfig) -> dict:
    mel = jnp.zeros((1, config.n_mels, num_frames(config.sample_rate, config)), jnp.float32)
    return param_shapes(lambda: PasstNet(config).init(jax.random.PRNGKey(0), mel))


def _shape(state: dict, key: str, rank: int) -> tuple[int, ...]:
    if key not in state or np.ndim(state[key]) != rank:
        raise CheckpointError(f"not a PaSST checkpoint: {key} missing or not of rank {rank}")
    return np.shape(state[key])


def config_from_state(state: dict[str, np.ndarray]) -> PasstConfig:
    """The network's shape read off its tensors (depth, widths, patch grid, classes); the front end is the one
    all released models share (`AugmentMelSTFT` as `get_basic_model` builds it)."""
    embed_dim = _shape(state, "cls_token", 3)[-1]
    freq_patches = _shape(state, "freq_new_pos_embed", 4)[2]
    time_patches = _shape(state, "time_new_pos_embed", 4)[3]
    patch = _shape(state, "patch_embed.proj.weight", 4)[-1]
    defaults = PasstConfig()
    strides = [s for s in (10, 16) if (defaults.n_mels - patch) // s + 1 == freq_patches]
    if not strides:
        raise CheckpointError(f"freq_new_pos_embed: {freq_patches} frequency patches fit no patch stride (10, 16)")
    depth = len({m.group(1) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))})
    stride = strides[0]
    return PasstConfig(
        patch_size=patch,
        patch_stride=stride,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=max(1, embed_dim // HEAD_DIM),
        mlp_dim=_shape(state, "blocks.0.mlp.fc1.weight", 2)[0],
        freq_patches=freq_patches,
        time_patches=time_patches,
        num_classes=_shape(state, "head.1.weight", 2)[0],
        max_seconds=float(round(time_patches * stride * defaults.hop_length / defaults.sample_rate)),
    )


def _released_layout(state: dict) -> dict:
    """The state dict hear21passt's `load_pretrained` would load: unwrapped, the patch kernel `[D, 1, P, P]`."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"not a PaSST checkpoint: a {type(state).__name__}, not a state dict")
    state = tensors_to_numpy(state)
    kernel = state.get("patch_embed.proj.weight")
    if kernel is not None and kernel.ndim == 4 and kernel.shape[1] == 3:
        state["patch_embed.proj.weight"] = kernel.sum(axis=1, keepdims=True)  # adapt_input_conv
    elif kernel is not None and kernel.ndim < 4 and "time_new_pos_embed" in state:
        side = int(round((kernel.size // kernel.shape[0]) ** 0.5))
        state["patch_embed.proj.weight"] = kernel.reshape(kernel.shape[0], -1, side, side)  # checkpoint_filter_fn
    return state


def convert(path: Path) -> tuple[dict, dict]:
    """`({"params": tree}, config dict)` of a hear21passt `.pt` checkpoint (a CheckpointError naming the
    missing, unexpected or wrongly shaped keys if it does not match the network its shapes describe)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        if len(files) != 1:
            raise CheckpointError(f"{path}: expected one PaSST .pt file, found {[f.name for f in files]}")
        path = files[0]
    state = _released_layout(read_torch_pickle(path))
    config = config_from_state(state)
    params = assemble(state, key_map(config), shapes(config), f"PaSST checkpoint {path.name}", unused=UNUSED)
    return params, config.to_dict()


def load_passt(source: str | os.PathLike = PASST_20SEC_URL, batch_size: int = 4, mesh=None) -> PaSST:
    """PaSST from a released hear21passt checkpoint (`.pt`; any source `metrics.networks` resolves; default
    the 20 s model audiocraft's KLD uses), converted on first use and cached."""
    params, config = networks.load("passt", source, convert)
    return PaSST(params, PasstConfig.from_dict(config), batch_size, mesh)
