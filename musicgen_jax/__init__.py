"""musicgen-jax: MusicGen (text- and melody-to-music) in JAX/Flax."""

__version__ = "0.1.0"
