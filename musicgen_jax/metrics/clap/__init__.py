"""LAION-CLAP in Flax (HTSAT-base audio tower, RoBERTa text tower, their projections): the embeddings
audiocraft's `CLAPTextConsistencyMetric` compares. `weights.load_clap(source)` converts a transformers
`ClapModel` or a laion_clap `.pt` once (`musicgen_jax.metrics.networks`)."""

from musicgen_jax.metrics.clap.audio import AudioConfig
from musicgen_jax.metrics.clap.model import CLAP, CLAPConfig
from musicgen_jax.metrics.clap.text import RobertaTokenizer, TextConfig

__all__ = ["CLAP", "AudioConfig", "CLAPConfig", "RobertaTokenizer", "TextConfig"]
