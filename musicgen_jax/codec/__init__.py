"""EnCodec audio codec: `Codec` (parameters + compiled encode/decode) over the `EncodecModel` module."""

from musicgen_jax.codec.model import Codec, EncodecModel

__all__ = ["Codec", "EncodecModel"]
