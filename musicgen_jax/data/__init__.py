"""Training data: audio folders -> EnCodec token datasets (`prepare`), read back with `read_examples`."""

from musicgen_jax.data.prepare import Settings, merge, prepare
from musicgen_jax.data.shards import read_examples

__all__ = ["Settings", "merge", "prepare", "read_examples"]
