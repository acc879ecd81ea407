"""Text conditioning: the T5 encoder and its tokenizer."""

from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.text.tokenizer import T5Tokenizer

__all__ = ["T5TextEncoder", "T5Tokenizer"]
