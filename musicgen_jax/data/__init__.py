"""Training data: audio folders -> EnCodec token datasets (`prepare`), read back with `read_examples`,
and the per-host, resumable training pipeline (`train_batches`, `eval_batches`)."""

from musicgen_jax.data.metadata import AUDIOCRAFT_DEFAULTS, TextAugmentation
from musicgen_jax.data.pipeline import PipelineConfig, TrainBatches, eval_batches, load_host_examples, train_batches
from musicgen_jax.data.prepare import Settings, merge, prepare
from musicgen_jax.data.shards import read_examples

__all__ = [
    "AUDIOCRAFT_DEFAULTS",
    "PipelineConfig",
    "Settings",
    "TextAugmentation",
    "TrainBatches",
    "eval_batches",
    "load_host_examples",
    "merge",
    "prepare",
    "read_examples",
    "train_batches",
]
