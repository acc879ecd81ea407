"""The tiny transformers MusicGen checkpoints of the LM tests, shared with the training tests."""

from tests.lm.conftest import hf_musicgen, hf_musicgen_melody  # noqa: F401 (fixtures)
