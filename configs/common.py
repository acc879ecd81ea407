"""What every config has: `musicgen_jax.train.experiment.default_config()`, every key a run reads with its
default (audiocraft's MusicGen recipe, its `solver/musicgen/default.yaml`), each default and check kept
beside the typed config that consumes it."""

from musicgen_jax.train.experiment import default_config as base_config

__all__ = ["base_config"]
