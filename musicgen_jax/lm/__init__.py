"""The MusicGen language model: the transformer decoder, embeddings and heads, the delay pattern."""
