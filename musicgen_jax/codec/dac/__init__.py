"""Descript's DAC audio codec: `DacCodec` (parameters + compiled encode/decode) over the `DacModel` module;
weights from descript's `dac` package checkpoints or transformers' `DacModel` (`codec.dac.weights`)."""

from musicgen_jax.codec.dac.model import DacCodec, DacModel

__all__ = ["DacCodec", "DacModel"]
