"""The tiny random MusicGen models of tests/lm/conftest.py, for the web demo's tests."""

from tests.lm.conftest import converted, converted_melody, hf_musicgen, hf_musicgen_melody

__all__ = ["converted", "converted_melody", "hf_musicgen", "hf_musicgen_melody"]
