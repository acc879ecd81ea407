"""Every experiment config in configs/ loads, has the keys scripts rely on, holds audiocraft's recipe
(audiocraft's `solver/musicgen/default.yaml`) and builds a valid optimizer and step."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from musicgen_jax.config import LMConfig
from musicgen_jax.train.trainer import COMPUTE_DTYPES, OptimConfig, StepConfig

REPO = Path(__file__).resolve().parents[2]
MODELS = {  # name -> (dim, layers, max_norm, cfg_dropout, word_dropout, melody_dropout)
    "musicgen_small": (1024, 24, 1.0, 0.3, 0.3, 0.0),
    "musicgen_medium": (1536, 48, 1.0, 0.3, 0.3, 0.0),
    "musicgen_large": (2048, 48, 3.0, 0.2, 0.2, 0.0),
    "musicgen_melody": (1536, 48, 1.0, 0.2, 0.2, 0.5),
}
KEYS = (
    "data_dir",
    "total_steps",
    "batch_size",
    "seed",
    "log_every",
    "checkpoint_every",
    "eval_every",
    "mesh",
    "compute_dtype",
    "text_encoder",
)


def load(name: str):
    return importlib.import_module(f"configs.{name}").get_config()


def test_every_config_file_is_covered():
    names = {p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common")}
    assert names == set(MODELS) | {"debug"}


@pytest.mark.parametrize("name", [*MODELS, "debug"])
def test_config_keys_and_step(name):
    config = load(name)
    assert all(key in config for key in KEYS) and set(config.mesh) == {"data", "fsdp", "tensor"}
    assert config.compute_dtype in COMPUTE_DTYPES and config.text_encoder == "t5-base"
    m = config.model
    lm = LMConfig(
        dim=m.dim,
        num_heads=m.num_heads,
        num_layers=m.num_layers,
        ffn_dim=m.ffn_dim,
        chroma_bins=12 if config.melody else 0,
    )
    StepConfig(
        lm,
        optim=OptimConfig(**config.optim, total_steps=config.total_steps),
        cfg_dropout=config.cfg_dropout,
        melody_dropout=config.melody_dropout,
        scan_layers=config.scan_layers,
        remat=config.remat,
        compute_dtype=config.compute_dtype,
    )


@pytest.mark.parametrize("name", MODELS)
def test_model_configs_hold_the_recipe(name):
    config = load(name)
    dim, layers, max_norm, cfg_dropout, word_dropout, melody_dropout = MODELS[name]
    assert (config.model.dim, config.model.num_layers) == (dim, layers)
    assert dict(config.optim) == {
        "lr": 1e-4,
        "b1": 0.9,
        "b2": 0.95,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "warmup_steps": 4000,
        "max_norm": max_norm,
    }
    assert (config.cfg_dropout, config.word_dropout, config.melody_dropout) == (
        cfg_dropout,
        word_dropout,
        melody_dropout,
    )
    assert config.melody == (melody_dropout > 0)
    assert (config.batch_size, config.frames, config.total_steps) == (192, 1500, 1_000_000)
    assert (config.ema.decay, config.ema.every, config.compute_dtype) == (0.99, 10, "bfloat16")
