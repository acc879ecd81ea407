"""The training loss against transformers' `MusicgenForConditionalGeneration(labels=...)` (the reference:
per-codebook cross-entropy over its delay pattern, labels at the pad id or -100 ignored) on the same
weights and batch; 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_jax.lm.model import LMModel
from musicgen_jax.text.encoder import encode_ids
from musicgen_jax.text.weights import load_t5
from musicgen_jax.train.loss import cross_entropy, training_sequences
from musicgen_jax.train.trainer import Batch, StepConfig, loss_fn, melody_condition
from tests.lm.conftest import TEXT_VOCAB
from tests.lm.test_parity import load

DELAYS = (0, 1, 2, 3)


def batch(seed: int = 0, frames: int = 10):
    """Text, random codes and a crop mask whose rows end after 10, 7 and 4 frames."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, TEXT_VOCAB, (3, 6)).astype(np.int32)
    text_mask = np.ones((3, 6), np.int32)
    text_mask[1, 3:] = 0
    text_mask[2] = 0  # the null condition
    codes = rng.integers(0, 2048, (3, 4, frames)).astype(np.int32)
    mask = np.ones((3, 4, frames), bool)
    mask[1, :, 7:] = False
    mask[2, :, 4:] = False
    return ids, text_mask, codes, mask


def reference_loss(model, ids, text_mask, codes, mask, chroma=None) -> float:
    """transformers' loss with labels = the delay-pattern targets, -100 at padded frames (melody models:
    with the one-hot `chroma` as `input_features`)."""
    _, targets, valid = (np.asarray(a) for a in training_sequences(codes, mask, DELAYS, 2048))
    labels = np.where(valid, targets, -100).transpose(0, 2, 1)  # [B, S - 1, K]
    labels = torch.from_numpy(labels).long()
    # transformers 5's MusicgenForConditionalGeneration reads a decoder_start_token_id its decoder config
    # lacks; its own shift (`prepare_decoder_input_ids_from_labels`, start = bos = pad = 2048) does the same
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    melody = {} if chroma is None else {"input_features": torch.from_numpy(chroma)}
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(text_mask).long(),
            decoder_input_ids=decoder_input_ids.reshape(-1, labels.shape[1]),
            labels=labels,
            **melody,
        )
    return float(out.loss)


def jax_loss(directory, ids, text_mask, codes, mask):
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    inputs, targets, valid = training_sequences(codes, mask, DELAYS, config.card)
    text = encode_ids(t5_config, t5_params, ids, text_mask)
    logits = LMModel(config).apply(params, inputs, text, text_mask)
    return cross_entropy(logits, targets, valid)


def test_loss_equals_transformers(hf_musicgen):
    model, directory = hf_musicgen
    ids, text_mask, codes, mask = batch()
    loss, ce = jax_loss(directory, ids, text_mask, codes, mask)
    expected = reference_loss(model, ids, text_mask, codes, mask)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(np.mean(ce)) == pytest.approx(float(loss), rel=1e-6) and ce.shape == (4,)


def test_the_crop_mask_matters(hf_musicgen):
    """Guards the parity test: counting the padded frames gives another loss."""
    model, directory = hf_musicgen
    ids, text_mask, codes, mask = batch()
    full = np.ones_like(mask)
    assert (
        abs(
            float(jax_loss(directory, ids, text_mask, codes, full)[0])
            - float(jax_loss(directory, ids, text_mask, codes, mask)[0])
        )
        > 1e-3
    )


def test_training_sequences_layout():
    """Inputs are the pattern's steps 0..S-2, targets 1..S-1; padded frames become the special token and
    are not counted; a codebook with no valid target has ce 0."""
    codes = np.arange(1, 13).reshape(1, 2, 6)
    mask = np.ones((1, 2, 6), bool)
    mask[:, :, 4:] = False
    inputs, targets, valid = (np.asarray(a) for a in training_sequences(codes, mask, (0, 1), 99))
    np.testing.assert_array_equal(inputs[0], [[99, 1, 2, 3, 4, 99, 99], [99, 99, 7, 8, 9, 10, 99]])
    np.testing.assert_array_equal(targets[0], [[1, 2, 3, 4, 99, 99, 99], [99, 7, 8, 9, 10, 99, 99]])
    np.testing.assert_array_equal(valid[0], [[1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0, 0]])
    logits = np.zeros((1, 2, 7, 100), np.float32)
    loss, ce = cross_entropy(logits, targets, valid & np.array([[True], [False]]))
    np.testing.assert_allclose(ce, [np.log(100), 0.0], rtol=1e-6)


def test_melody_loss_equals_transformers(hf_musicgen_melody):
    """The train step's loss of a melody model (`trainer.loss_fn` with `melody_condition` of the batch's
    chroma bins) against `MusicgenMelodyForConditionalGeneration(labels=..., input_features=...)`; the
    melody moves it (its null chroma gives another loss)."""
    model, directory = hf_musicgen_melody
    ids, text_mask, codes, mask = batch(1)
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    bins = np.random.default_rng(2).integers(0, config.chroma_bins, (3, config.chroma_frames)).astype(np.int32)
    step = StepConfig(config)
    data = {"codes": codes, "mask": mask, "text_mask": text_mask, "chroma": bins}
    text = encode_ids(t5_config, t5_params, ids, text_mask)

    def loss(drop: bool) -> float:
        rows = Batch(**data)
        return float(loss_fn(params, step, rows, text, text_mask, melody_condition(step, rows, drop))[0])

    expected = reference_loss(model, ids, text_mask, codes, mask, np.eye(config.chroma_bins, dtype=np.float32)[bins])
    assert loss(False) == pytest.approx(expected, rel=1e-5)
    assert abs(loss(True) - loss(False)) > 1e-3
