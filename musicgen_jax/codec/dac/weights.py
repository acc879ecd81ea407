"""DAC weights: transformers' `DacModel` and descript's `dac` package checkpoints into `DacCodec` parameters.

One key map, generated from the model's own parameter tree (its modules are named as transformers names
them); descript's names are the same map translated (`descript_key`: the indices of its `nn.Sequential`
containers). Weight norm (`weight_g` / `weight_v` or `parametrizations.weight.original0/1`) is folded into
plain kernels on import; every missing key, unexpected key and wrong shape is reported at once.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import Target, assemble, param_shapes
from musicgen_jax.codec.dac.model import DacModel
from musicgen_jax.codec.weights import fold_weight_norm
from musicgen_jax.config import DacConfig

# our parameter name -> (the name's tail in the checkpoints, the tensor's layout); "kernel" of a transposed
# convolution (transformers' `conv_t1`) is "convtr"
_LEAVES = {
    "kernel": ("weight", "conv"),
    "bias": ("bias", "copy"),
    "alpha": ("alpha", "channel"),
    "codebook": ("codebook.weight", "copy"),
}

# members of descript's nn.Sequential containers in order, by transformers' names
_ENCODER_BLOCK = ("res_unit1", "res_unit2", "res_unit3", "snake1", "conv1")
_DECODER_BLOCK = ("snake1", "conv_t1", "res_unit1", "res_unit2", "res_unit3")
_RESIDUAL_UNIT = ("snake1", "conv1", "snake2", "conv2")


def expected_shapes(config: DacConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every parameter, keyed by its path below "params"."""
    return param_shapes(
        lambda: DacModel(config).init(jax.random.key(0), np.zeros((1, 1, config.hop_length), np.float32))
    )


def hf_key_map(config: DacConfig) -> dict[str, Target]:
    """Every key of transformers' `DacModel` (weight norm folded) mapped to its parameter:
    `encoder/block_0/res_unit1/conv1/kernel` <- `encoder.block.0.res_unit1.conv1.weight`."""
    keys = {}
    for path in expected_shapes(config):
        *modules, leaf = path
        name, layout = _LEAVES[leaf]
        if leaf == "kernel" and modules[-1] == "conv_t1":
            layout = "convtr"
        prefix = ".".join(re.sub(r"_(\d+)$", r".\1", module) for module in modules)
        keys[f"{prefix}.{name}"] = Target(path, layout)
    return keys


def descript_key(hf_key: str, config: DacConfig) -> str:
    """transformers' name of a DAC tensor -> descript's: `encoder.block.0.res_unit1.conv1.weight` ->
    `encoder.block.1.block.0.block.1.weight` (the encoder's `block` and the decoder's `model` sequences: first
    convolution, the blocks, snake, last convolution; transformers' `convert_dac_checkpoint.py` maps the same)."""
    part, top, *rest = hf_key.split(".")
    if part == "quantizer":
        return hf_key
    sequence, members = ("block", _ENCODER_BLOCK) if part == "encoder" else ("model", _DECODER_BLOCK)
    if top == "block":
        index, member, *rest = rest
        inner = [str(1 + int(index)), "block", str(members.index(member))]
        if member.startswith("res_unit"):
            unit_member, *rest = rest
            inner += ["block", str(_RESIDUAL_UNIT.index(unit_member))]
        return ".".join([part, sequence, *inner, *rest])
    blocks = len(config.encoder_rates if part == "encoder" else config.decoder_rates)
    index = {"conv1": 0, "snake1": blocks + 1, "conv2": blocks + 2}[top]
    return ".".join([part, sequence, str(index), *rest])


def descript_key_map(config: DacConfig) -> dict[str, Target]:
    """`hf_key_map` under descript's names."""
    return {descript_key(key, config): target for key, target in hf_key_map(config).items()}


def config_from_hf(cfg: dict) -> DacConfig:
    """DacConfig from a transformers `DacConfig` dict (`config.json`; a missing value takes transformers'
    default, which is descript's but for the sampling rate, 16 kHz). The latent width is the encoder's
    (transformers derives `hidden_size` so)."""
    if cfg.get("model_type") != "dac":
        raise CheckpointError(f"expected a DAC config, got model_type {cfg.get('model_type')!r}")
    defaults = DacConfig()
    downsampling = tuple(cfg.get("downsampling_ratios", defaults.encoder_rates))
    return DacConfig(
        sample_rate=cfg.get("sampling_rate", 16000),
        encoder_dim=cfg.get("encoder_hidden_size", defaults.encoder_dim),
        encoder_rates=downsampling,
        decoder_dim=cfg.get("decoder_hidden_size", defaults.decoder_dim),
        decoder_rates=tuple(cfg.get("upsampling_ratios") or downsampling[::-1]),
        n_codebooks=cfg.get("n_codebooks", defaults.n_codebooks),
        codebook_size=cfg.get("codebook_size", defaults.codebook_size),
        codebook_dim=cfg.get("codebook_dim", defaults.codebook_dim),
    )


def config_from_descript(kwargs: dict) -> DacConfig:
    """DacConfig from the `metadata["kwargs"]` of a descript checkpoint: the arguments of its `DAC` (missing ones
    take `DAC`'s defaults, which are DacConfig's; others, such as quantizer_dropout, do not matter here)."""
    fields = {f.name for f in dataclasses.fields(DacConfig)}
    arguments = {k: v for k, v in kwargs.items() if k in fields}
    codebook_dim = arguments.get("codebook_dim")
    if isinstance(codebook_dim, list | tuple):
        if len(set(codebook_dim)) != 1:
            raise CheckpointError(f"codebooks of different widths {codebook_dim} are not supported")
        arguments["codebook_dim"] = codebook_dim[0]
    try:
        return DacConfig(**arguments)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid DAC arguments {arguments}: {e}") from e


def describe(config: DacConfig, source: str) -> str:
    return f"{source} (DAC, {config.sample_rate} Hz, {config.n_codebooks} codebooks, latent {config.latent_dim})"


def params_from_hf_state_dict(state: dict[str, np.ndarray], config: DacConfig, source: str = "checkpoint"):
    """Parameters from transformers-named DAC tensors; CheckpointError listing every mismatch."""
    return assemble(fold_weight_norm(state), hf_key_map(config), expected_shapes(config), describe(config, source))


def params_from_descript_state_dict(state: dict[str, np.ndarray], config: DacConfig, source: str = "checkpoint"):
    """Parameters from the `state_dict` of a descript checkpoint; CheckpointError listing every mismatch."""
    return assemble(
        fold_weight_norm(state), descript_key_map(config), expected_shapes(config), describe(config, source)
    )
