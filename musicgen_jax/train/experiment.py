"""An experiment config, the one source of a run's settings: `configs/*.py` start from `default_config()`
(an ml_collections `ConfigDict` that users override with `--config.key=value`), and the run passes its
sections into the typed configs the code consumes (big_vision's way): `run_config` (the loop's own
settings, `RunConfig`), `step_config` (`OptimConfig` and `StepConfig`, trainer.py) and `pipeline_config`
(`PipelineConfig` and `TextAugmentation`, data/). Each value has its default and its check in one place,
the typed config's field and `__post_init__`; `default_config` builds the ConfigDict from them, with the
settings where audiocraft's MusicGen recipe (its `solver/musicgen/default.yaml`) differs from a library
default set in `RECIPE`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from musicgen_jax.config import LMConfig, T5Config
from musicgen_jax.data.metadata import AUDIOCRAFT_DEFAULTS, TextAugmentation
from musicgen_jax.data.pipeline import PipelineConfig
from musicgen_jax.metrics import METRICS
from musicgen_jax.metrics.suite import Sources
from musicgen_jax.sharding import override_rules
from musicgen_jax.train.trainer import OptimConfig, StepConfig

SAMPLE_PROMPTS = (
    "lofi hip hop beat with a mellow piano",
    "energetic rock song with electric guitars",
    "calm ambient pads with soft strings",
)


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """The LM's size (musicgen-small's by default); codebooks and cardinality come from the dataset's codec."""

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 4096


@dataclasses.dataclass(frozen=True)
class Codebooks:
    """The LM's codebooks, as audiocraft sets them (`transformer_lm.n_q`, `transformer_lm.card`,
    `codebooks_pattern.delay.delays`). 0 and () take the dataset's codec: its codebooks and cardinality, delays
    0, 1, ..., n_q - 1 ([0, 0, 1, 1, ...] for interleaved stereo). Values set must agree with the dataset
    (`rundir.run_lm_config` says which does not, before anything compiles)."""

    n_q: int = 0
    card: int = 0
    delays: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run loop's settings (the train step's and the pipeline's are `StepConfig`'s and `PipelineConfig`'s)."""

    data_dir: str = ""  # a dataset of `python -m musicgen_jax.data.prepare` (required)
    text_encoder: str = "t5-base"  # T5 checkpoint (hub id or path; a MusicGen checkpoint works too)
    init_from: str = ""  # fine-tune: start from this checkpoint's LM (hub id, PyTorch or converted directory, run)
    text_embeddings: bool = False  # use the T5 states stored by `prepare --text-encoder` instead of running T5
    total_steps: int = 1_000_000
    batch_size: int = 192  # global, over all processes
    frames: int = 1500  # crop length: 30 s at 50 Hz
    text_length: int = 128  # T5 tokens per text (every process pads to it; longer texts keep their first ones)
    seed: int = 0
    data_parts: int = 0  # pipeline parts the global batch is drawn from (0: one per process, fixed at the start)
    log_every: int = 100
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0: no evaluation
    keep_checkpoints: int = 3
    generate_every: int = 0  # 0: no samples; else the EMA weights' samples every so many steps (WORKDIR/samples/)
    sample_prompts: tuple[str, ...] = SAMPLE_PROMPTS
    sample_seconds: float = 10.0
    sample_seed: int = 0
    sample_dtype: str = "auto"  # the LM's dtype for samples: auto (bfloat16 on GPU / TPU, float32 on CPU) or a name
    objective_every: int = 0  # 0: never; else audiocraft's objective metrics of the EMA weights (metrics.jsonl)
    objective_samples: int = 16  # valid examples generated for them (WORKDIR/objective/STEP/)
    objective_metrics: tuple[str, ...] = ()  # of fad, kld, clap, chroma; (): all the model's (chroma: melody)
    objective_sources: Mapping[str, str] = dataclasses.field(default_factory=dict)  # metric networks' weights
    mesh: Mapping[str, int] = dataclasses.field(  # -1: the remaining devices
        default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1}
    )
    # entries replacing those of `sharding.LOGICAL_RULES`, e.g. (("embed", None),): MaxText's logical_axis_rules
    logical_axis_rules: tuple = ()
    melody: bool = False  # a melody model: conditioned on the chroma of each crop (a dataset of `prepare --chroma`)
    model: ModelSize = ModelSize()
    codebooks: Codebooks = Codebooks()

    def __post_init__(self):
        for name in ("eval_every", "generate_every", "objective_every", "data_parts", "seed", "sample_seed"):
            _check_int(name, getattr(self, name), 0, "a non-negative integer (0: never)")
        for name in (
            "total_steps",
            "batch_size",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
            "frames",
            "text_length",
            "objective_samples",
        ):
            _check_int(name, getattr(self, name), 1, "a positive integer")
        for name, value in dataclasses.asdict(self.model).items():
            _check_int(f"model.{name}", value, 1, "a positive integer")
        for name in ("n_q", "card"):
            _check_int(f"codebooks.{name}", getattr(self.codebooks, name), 0, "a non-negative integer (0: the data's)")
        for delay in self.codebooks.delays:
            _check_int("codebooks.delays", delay, 0, "a list of non-negative integers")
        unknown = [m for m in self.objective_metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"config.objective_metrics: unknown {', '.join(unknown)} (known: {', '.join(METRICS)})")
        networks = {f.name for f in dataclasses.fields(Sources)}
        if set(self.objective_sources) - networks:
            extra, known = ", ".join(sorted(set(self.objective_sources) - networks)), ", ".join(sorted(networks))
            raise ValueError(f"config.objective_sources: unknown networks {extra} (known: {known})")
        if not self.data_dir:
            raise ValueError(
                "config.data_dir is not set: --config.data_dir=DIR (a dataset made by "
                "`python -m musicgen_jax.data.prepare`)"
            )


def _check_int(name: str, value: Any, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"config.{name} must be {what}, got {value!r}")


def _defaults(cls) -> dict:
    """A dataclass's field defaults (those that have one)."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }


# StepConfig's settings that are top-level keys of the experiment config, under their own names
STEP_KEYS = (
    "cfg_dropout",
    "melody_dropout",
    "scan_layers",
    "remat",
    "compute_dtype",
    "lora_rank",
    "lora_text_projection",
)

# Where audiocraft's MusicGen recipe differs from a library default: bfloat16 compute on GPU / TPU (its
# `autocast`), T5 word dropout (`T5Conditioner`'s `word_dropout`) and the metadata text augmentation
# (`MusicDataset`'s `merge_text_p`, `drop_desc_p`, `drop_other_p`).
RECIPE = {"compute_dtype": "bfloat16", "word_dropout": 0.3, "text": dataclasses.asdict(AUDIOCRAFT_DEFAULTS)}


def default_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with its default: `RunConfig`'s, `StepConfig`'s (`optim`: `OptimConfig`'s but
    `total_steps`, the run's; `ema`: `ema_decay` and `ema_every`), `PipelineConfig`'s `word_dropout` and
    `text` (`TextAugmentation`), then `RECIPE`."""
    step = _defaults(StepConfig)
    config = {
        **_defaults(RunConfig),
        "model": dataclasses.asdict(ModelSize()),
        "codebooks": dataclasses.asdict(Codebooks()),
        "optim": {k: v for k, v in dataclasses.asdict(OptimConfig()).items() if k != "total_steps"},
        **{key: step[key] for key in STEP_KEYS},
        "ema": {"decay": step["ema_decay"], "every": step["ema_every"]},
        "word_dropout": _defaults(PipelineConfig)["word_dropout"],
        "text": dataclasses.asdict(TextAugmentation()),
        **RECIPE,
    }
    return ml_collections.ConfigDict(config)


def run_config(config: ml_collections.ConfigDict) -> RunConfig:
    """The run loop's settings of `config`; ValueError naming a bad one."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    values = {name: config[name] for name in names}
    values["model"] = ModelSize(**config.model)
    values["codebooks"] = Codebooks(**{**config.codebooks, "delays": tuple(config.codebooks.delays)})
    values["mesh"] = dict(config.mesh)
    values["sample_prompts"] = tuple(config.sample_prompts)
    values["objective_metrics"] = tuple(config.objective_metrics)
    values["objective_sources"] = dict(config.objective_sources)
    values["logical_axis_rules"] = tuple(tuple(rule) for rule in config.logical_axis_rules)
    return RunConfig(**values)


def step_config(config: ml_collections.ConfigDict, lm: LMConfig, t5: T5Config | None) -> StepConfig:
    """The train step of `config` for the LM `lm` (and T5 `t5`, None with precomputed text states)."""
    optim = OptimConfig(**config.optim, total_steps=config.total_steps)
    return StepConfig(
        lm,
        t5,
        optim,
        ema_decay=config.ema.decay,
        ema_every=config.ema.every,
        rules=override_rules(config.logical_axis_rules),
        **{key: config[key] for key in STEP_KEYS},
    )


def pipeline_config(config: ml_collections.ConfigDict, batch_size: int, chroma_frames: int) -> PipelineConfig:
    """A training pipeline of `config` with `batch_size` rows (one part's share of the global batch)."""
    return PipelineConfig(
        batch_size,
        config.frames,
        config.seed,
        TextAugmentation(**config.text),
        text_lengths=(config.text_length,),
        text_embeddings=config.text_embeddings,
        word_dropout=config.word_dropout,
        chroma_frames=chroma_frames,
    )
