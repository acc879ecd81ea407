"""The train step's condition dropout, seen in what one AdamW step (no weight decay: a parameter moves
only where its gradient is nonzero) changes: classifier-free guidance dropout nulls the text and the
melody of the whole batch, melody dropout (melody models) the melody alone."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from musicgen_jax.config import LMConfig
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import Batch, OptimConfig, StepConfig, compile_step, init_state

MELODY = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, card=16, text_dim=8, chroma_bins=12, chroma_frames=6)


def step(cfg_dropout: float, melody_dropout: float):
    """(metrics, chroma projection kernel [D, 12] before / after, text projection kernel before / after)."""
    config = StepConfig(
        MELODY,
        None,
        OptimConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, total_steps=4),
        cfg_dropout=cfg_dropout,
        melody_dropout=melody_dropout,
    )
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(config, 0, mesh)
    before = jax.device_get(state.params["params"])
    rng = np.random.default_rng(0)
    batch = {
        "codes": rng.integers(0, MELODY.card, (2, 4, 8)).astype(np.int32),
        "mask": np.ones((2, 4, 8), bool),
        "text_embeddings": rng.normal(size=(2, 3, MELODY.text_dim)).astype(np.float32),
        "text_mask": np.ones((2, 3), np.int32),
        "chroma": np.tile(np.arange(1, 7, dtype=np.int32), (2, 1)),
    }  # bins 1..6, never 0
    state, metrics = compile_step(config, mesh)(state, Batch(**batch), {})
    after = jax.device_get(state.params["params"])
    return (
        jax.device_get(metrics),
        before["chroma_projection"]["kernel"],
        after["chroma_projection"]["kernel"],
        before["text_projection"]["kernel"],
        after["text_projection"]["kernel"],
    )


def moved(a, b) -> np.ndarray:
    """Per column (input feature): whether any weight changed."""
    return (a != b).any(axis=0)


def test_melody_dropout_gives_the_null_chroma():
    metrics, chroma0, chroma1, text0, text1 = step(0.0, 1.0)
    assert bool(metrics["null_melody"]) and not bool(metrics["null_text"])
    assert moved(chroma0, chroma1).tolist() == [True] + [False] * 11  # only bin 0, the null chroma, was seen
    assert moved(text0, text1).all()


def test_no_dropout_conditions_on_the_batch():
    metrics, chroma0, chroma1, text0, text1 = step(0.0, 0.0)
    assert not bool(metrics["null_melody"]) and not bool(metrics["null_text"])
    assert moved(chroma0, chroma1).tolist() == [False] + [True] * 6 + [False] * 5  # the batch's bins 1..6
    assert moved(text0, text1).all()


@pytest.mark.parametrize("melody_dropout", [0.0, 1.0])
def test_guidance_dropout_nulls_text_and_melody(melody_dropout):
    metrics, chroma0, chroma1, text0, text1 = step(1.0, melody_dropout)
    assert bool(metrics["null_text"]) and bool(metrics["null_melody"])
    assert moved(chroma0, chroma1).tolist() == [True] + [False] * 11
    assert not moved(text0, text1).any()  # the projected text is zeroed by the null mask: no gradient
