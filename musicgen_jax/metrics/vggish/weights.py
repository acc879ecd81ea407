"""VGGish's weights: torchvggish's released `vggish-10086976.pth` (the `VGG` state dict, ported from
AudioSet's TensorFlow checkpoint) and its PCA parameters `vggish_pca_params-970ea276.pth`
(`pca_eigen_vectors`, `pca_means`), converted on first use (`metrics.networks`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.checkpoint import files
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import Target, assemble, param_shapes
from musicgen_jax.metrics import networks
from musicgen_jax.metrics.vggish.model import EXAMPLE_FRAMES, MEL_BANDS, VGG, VGGish, VGGishConfig

RELEASED = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
RELEASED_PCA = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth"


def key_map(config: VGGishConfig) -> dict[str, Target]:
    """torchvggish's `VGG` keys: `features.{i}` (conv, ReLU and pool layers counted in one Sequential),
    `embeddings.{0,2,4}` (the dense layers between ReLUs)."""
    out, index, conv = {}, 0, 0
    for block in config.blocks:
        if block == "M":
            index += 1
            continue
        out[f"features.{index}.weight"] = Target((f"conv_{conv}", "kernel"), "conv2d")
        out[f"features.{index}.bias"] = Target((f"conv_{conv}", "bias"))
        index, conv = index + 2, conv + 1
    for i, name in zip((0, 2, 4), ("fc1_1", "fc1_2", "fc2")):
        out[f"embeddings.{i}.weight"] = Target((name, "kernel"), "linear")
        out[f"embeddings.{i}.bias"] = Target((name, "bias"))
    return out


@functools.lru_cache(maxsize=4)
def expected_shapes(config: VGGishConfig) -> dict:
    return param_shapes(lambda: VGG(config).init(jax.random.key(0), jnp.zeros((1, EXAMPLE_FRAMES, MEL_BANDS))))


def _state(path: Path) -> dict[str, np.ndarray]:
    state = files.read_torch_pickle(path, numpy_arrays=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state dict ({type(state).__name__})")
    return files.tensors_to_numpy(state)


def convert(path: Path) -> tuple[dict, dict]:
    """torchvggish's `VGG` state dict file -> (`{"params": tree}`, config dict)."""
    config = VGGishConfig()
    params = assemble(_state(path), key_map(config), expected_shapes(config), f"VGGish checkpoint {path}")
    return params, config.to_dict()


def convert_pca(path: Path) -> tuple[dict, dict]:
    """torchvggish's PCA parameter file -> (`{"params": {"pca_matrix", "pca_means"}}`, {})."""
    state = _state(path)
    missing = sorted({"pca_eigen_vectors", "pca_means"} - set(state))
    if missing:
        raise CheckpointError(f"VGGish PCA parameters {path}: missing keys {', '.join(missing)}")
    matrix, means = state["pca_eigen_vectors"], state["pca_means"].reshape(-1)
    if matrix.shape != (means.shape[0], means.shape[0]):
        raise CheckpointError(f"VGGish PCA parameters {path}: eigenvectors {matrix.shape}, means {means.shape}")
    return {"params": {"pca_matrix": matrix, "pca_means": means}}, {}


def load_vggish(source: str | os.PathLike = RELEASED, pca: str | os.PathLike | None = None) -> VGGish:
    """VGGish from torchvggish's checkpoint at `source` (any form `metrics.networks` resolves; default the
    released file), with AudioSet's PCA parameters from `pca` if given."""
    params, config = networks.load("vggish", source, convert)
    pca_params = None
    if pca is not None:
        tree, _ = networks.load("vggish_pca", pca, convert_pca)
        pca_params = (tree["params"]["pca_matrix"], tree["params"]["pca_means"])
    return VGGish(VGGishConfig.from_dict(config), params, pca_params, os.fspath(source))
