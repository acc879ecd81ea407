"""Every experiment config in configs/ loads, has the keys scripts rely on, holds audiocraft's recipe
(audiocraft's `solver/musicgen/default.yaml`) and builds a valid optimizer and step."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import pytest
from jax.sharding import PartitionSpec

from musicgen_jax.config import LMConfig
from musicgen_jax.sharding import LOGICAL_RULES
from musicgen_jax.train import experiment
from musicgen_jax.train.trainer import COMPUTE_DTYPES, OptimConfig, StepConfig, state_specs
from tests.processes import device_env

REPO = Path(__file__).resolve().parents[2]
MODELS = {  # name -> (dim, layers, max_norm, cfg_dropout, word_dropout, melody_dropout)
    "musicgen_small": (1024, 24, 1.0, 0.3, 0.3, 0.0),
    "musicgen_medium": (1536, 48, 1.0, 0.3, 0.3, 0.0),
    "musicgen_large": (2048, 48, 3.0, 0.2, 0.2, 0.0),
    "musicgen_melody": (1536, 48, 1.0, 0.2, 0.2, 0.5),
    "musicgen_small_dac": (1024, 24, 1.0, 0.3, 0.3, 0.0),
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
    """Every config gives a valid run, train step and pipeline, each value passed through unchanged."""
    config = load(name)
    config.data_dir = "/data"
    assert all(key in config for key in KEYS) and set(config.mesh) == {"data", "fsdp", "tensor"}
    assert config.compute_dtype in COMPUTE_DTYPES and config.text_encoder == "t5-base"
    run = experiment.run_config(config)
    assert dataclasses.asdict(run.model) == dict(config.model) and run.total_steps == config.total_steps
    m = run.model
    lm = LMConfig(m.dim, m.num_heads, m.num_layers, m.ffn_dim, chroma_bins=12 if run.melody else 0)
    step = experiment.step_config(config, lm, None)
    assert step.optim == OptimConfig(**config.optim, total_steps=config.total_steps)
    assert (step.ema_decay, step.ema_every) == (config.ema.decay, config.ema.every)
    assert step.rules == LOGICAL_RULES  # no override
    assert all(getattr(step, key) == config[key] for key in experiment.STEP_KEYS)
    passed = {"lm", "t5", "optim", "ema_decay", "ema_every", "rules", *experiment.STEP_KEYS}
    assert {f.name for f in dataclasses.fields(StepConfig)} == passed  # every setting of the step is the config's
    pipeline = experiment.pipeline_config(config, 4, 0)
    assert (pipeline.frames, pipeline.word_dropout, pipeline.text_lengths) == (
        config.frames,
        config.word_dropout,
        (config.text_length,),
    )
    assert dataclasses.asdict(pipeline.text) == dict(config.text)


def test_defaults_are_the_typed_configs_and_the_recipe():
    """`default_config()` holds each typed config's own defaults, but where audiocraft's recipe differs:
    bfloat16 compute, word dropout 0.3 and the metadata augmentation 0.25 / 0.5 / 0.5."""
    config = experiment.default_config()
    run = {f.name: f for f in dataclasses.fields(experiment.RunConfig)}
    for name, field in run.items():
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        expected = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
        assert (config[name].to_dict() if hasattr(config[name], "to_dict") else config[name]) == expected, name
    optim = OptimConfig()
    assert dict(config.optim) == {
        f.name: getattr(optim, f.name) for f in dataclasses.fields(OptimConfig) if f.name != "total_steps"
    }
    step = StepConfig(LMConfig())
    assert (config.cfg_dropout, config.melody_dropout, config.remat, config.lora_rank) == (
        step.cfg_dropout,
        step.melody_dropout,
        step.remat,
        step.lora_rank,
    )
    assert (config.ema.decay, config.ema.every) == (step.ema_decay, step.ema_every) == (0.99, 10)
    assert (config.compute_dtype, config.word_dropout, dict(config.text)) == (
        "bfloat16",
        0.3,
        {"merge_text_p": 0.25, "drop_desc_p": 0.5, "drop_other_p": 0.5},
    )
    assert set(config) == set(run) | {"optim", "ema", "word_dropout", "text", *experiment.STEP_KEYS}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data_dir", "", "config.data_dir is not set"),
        ("total_steps", 0, "config.total_steps must be a positive integer, got 0"),
        ("eval_every", -1, r"config.eval_every must be a non-negative integer \(0: never\), got -1"),
        ("batch_size", True, "config.batch_size must be a positive integer, got True"),
        ("model.num_layers", 0, "config.model.num_layers must be a positive integer, got 0"),
        ("codebooks.n_q", -1, r"config.codebooks.n_q must be a non-negative integer \(0: the data's\), got -1"),
        ("codebooks.delays", [0, -1], "config.codebooks.delays must be a list of non-negative integers, got -1"),
    ],
)
def test_bad_run_settings_are_named(key, value, message):
    config = load("debug")
    config.data_dir = "/data"
    section, _, name = key.rpartition(".")
    with config.unlocked():
        (config[section] if section else config)[name] = value
    with pytest.raises(ValueError, match=message):
        experiment.run_config(config)


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
    dac = name.endswith("_dac")  # 30 s at DAC 44.1 kHz's frame rate; its codebooks (audiocraft's DAC recipe)
    assert (config.batch_size, config.frames, config.total_steps) == (192, 2584 if dac else 1500, 1_000_000)
    assert dict(config.codebooks) == (
        {"n_q": 9, "card": 1024, "delays": tuple(range(9))}
        if dac
        else {
            "n_q": 0,
            "card": 0,
            "delays": (),
        }
    )
    assert (config.ema.decay, config.ema.every, config.compute_dtype) == (0.99, 10, "bfloat16")


def test_logical_axis_rules_override_entries_of_the_table():
    """`config.logical_axis_rules` replaces the named entries of `LOGICAL_RULES` (MaxText's
    `logical_axis_rules`), in the step's state shardings too; an unknown mesh axis is named."""
    config = load("debug")
    config.logical_axis_rules = (("mlp", None), ("embed", ("fsdp", "tensor")))
    step = experiment.step_config(config, LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, card=16), None)
    rules = dict(step.rules)
    assert rules["mlp"] is None and rules["embed"] == ("fsdp", "tensor") and len(step.rules) == len(LOGICAL_RULES)
    assert {k: v for k, v in rules.items() if k not in ("mlp", "embed")} == {
        k: v for k, v in LOGICAL_RULES if k not in ("mlp", "embed")
    }
    fc1 = state_specs(step).params["params"]["layers_0"]["fc1"]["kernel"]  # ("mlp", "embed")
    assert nn.logical_to_mesh_axes(fc1, step.rules) == PartitionSpec(None, ("fsdp", "tensor"))
    assert nn.logical_to_mesh_axes(fc1, LOGICAL_RULES) == PartitionSpec("tensor", "fsdp")
    config.logical_axis_rules = (("mlp", "model"),)
    with pytest.raises(ValueError, match=r"logical axis rule 'mlp': \['model'\] not among the mesh axes"):
        experiment.step_config(config, LMConfig(), None)


@pytest.mark.e2e
def test_a_missing_dataset_is_one_error_naming_it(tmp_path):
    """`train.py --config.data_dir=/nonexistent`: status 2 and one line naming the folder, no traceback."""
    missing = tmp_path / "nonexistent"
    args = [
        "--config",
        str(REPO / "configs/debug.py"),
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data_dir={missing}",
    ]
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True, env=device_env(1), cwd=REPO
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"error: config.data_dir: {missing}: not a prepared dataset (no dataset.json); prepare it with "
        "`python -m musicgen_jax.data.prepare`, or finish it with `--merge`"
    )


DAC_INFO = {"num_codebooks": 9, "card": 1024, "codec": {"source": "dac_44khz", "stereo": False}}


@pytest.mark.parametrize(
    ("codebooks", "delays", "message"),
    [
        ({}, tuple(range(9)), None),  # the dataset's: one step per codebook
        ({"n_q": 9, "card": 1024, "delays": [0, 1, 2, 3, 4, 5, 6, 7, 8]}, tuple(range(9)), None),
        ({"delays": [0, 0, 1, 1, 2, 2, 3, 3, 4]}, (0, 0, 1, 1, 2, 2, 3, 3, 4), None),
        ({"n_q": 4}, None, r"config.codebooks.n_q is 4, but the dataset /data \(dac_44khz\) has 9"),
        ({"card": 2048}, None, r"config.codebooks.card is 2048, but the dataset /data \(dac_44khz\) has 1024"),
        ({"delays": [0, 1, 2, 3]}, None, "config.codebooks.delays gives 4 delays, but the dataset /data .* has 9"),
    ],
)
def test_codebooks_come_from_the_dataset_and_must_agree(codebooks, delays, message):
    """audiocraft's DAC recipe (`transformer_lm.n_q=9 transformer_lm.card=1024`, delays 0..8) against a
    dataset of DAC 44.1 kHz tokens: the LM takes the dataset's codebooks; a setting that disagrees is one error."""
    from musicgen_jax.train.rundir import run_lm_config

    config = load("debug")
    config.data_dir = "/data"
    config.codebooks.update(codebooks)
    experiment.run_config(config)  # valid settings
    if message is None:
        lm = run_lm_config(config.to_dict(), DAC_INFO, 32)
        assert (lm.num_codebooks, lm.card, lm.delays) == (9, 1024, delays)
    else:
        with pytest.raises(ValueError, match=message):
            run_lm_config(config.to_dict(), DAC_INFO, 32)
