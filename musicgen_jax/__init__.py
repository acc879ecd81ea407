"""musicgen-jax: MusicGen (text- and melody-to-music) in JAX/Flax."""

__version__ = "0.1.0"
__all__ = ["MusicGen"]


def __getattr__(name):
    # `from musicgen_jax import MusicGen` without importing JAX for light modules such as `audio`.
    if name == "MusicGen":
        from musicgen_jax.musicgen import MusicGen

        return MusicGen
    raise AttributeError(f"module 'musicgen_jax' has no attribute {name!r}")
