"""What the mesh runs (`sharded_run.py`, `multihost_run.py`) compute on: the tiny transformers MusicGen
of tests/lm/conftest.py (every parameter random, the text path scaled), converted, with the text states
of four prompts of different lengths and one random delay-pattern sequence for every row (so rows
differ by their text alone)."""

from __future__ import annotations

import jax
import numpy as np

from musicgen_jax.convert.pretrained import convert as convert_checkpoint

PROMPTS = [
    "calm piano",
    "Energetic rock song with electric guitars and drums!",
    "lofi hip hop beat, 90 bpm",
    "epic brass",
]


def load(directory: str):
    """(LM config, LM params, text [4, N, text_dim], mask [4, N], sequence [4, K, 12]) as numpy arrays."""
    components = convert_checkpoint(directory)
    config = components.lm_config
    text, mask = components.text_encoder(PROMPTS)
    sequence = np.random.default_rng(1).integers(0, config.card + 1, (1, config.num_codebooks, 12), np.int32)
    sequence = np.repeat(sequence, len(PROMPTS), axis=0)
    return config, jax.device_get(components.lm_params), np.asarray(text), np.asarray(mask), sequence


def differing(tokens) -> float:
    """The fraction of positions where rows 0 and 1 of greedy tokens `[2, K, T]` differ: only their
    texts differ, so this is 0 when the text has no effect."""
    tokens = np.asarray(tokens)
    return float((tokens[0] != tokens[1]).mean())
