"""Teacher-forced LM logits against transformers' `MusicgenForConditionalGeneration` (float32).

Tolerance: max abs difference / max abs logit < 1e-4. Both layer layouts: unrolled `layers_{i}` and
one scan over stacked layers (`scan_layers=True`, parameters through `stack_layers`).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musicgen_jax.checkpoint.files import read_hf_weights
from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import LMModel, cache_length, init_cache, stack_layers, unstack_layers
from musicgen_jax.lm.transformer import CACHE_BLOCK, cache_blocks
from musicgen_jax.lm.weights import lm_config_from_hf, lm_params_from_hf_state_dict
from musicgen_jax.text.encoder import encode_ids
from musicgen_jax.text.weights import load_t5
from tests.lm.conftest import TEXT_VOCAB


def inputs(seed: int = 0, frames: int = 12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, TEXT_VOCAB, (2, 7)).astype(np.int32)
    mask = np.ones((2, 7), np.int32)
    mask[1, 4:] = 0  # the second prompt is shorter
    ids[1, 4:] = 0
    codes = rng.integers(0, 2048, (2, 4, frames)).astype(np.int32)
    return ids, mask, np.asarray(pattern.build(codes, (0, 1, 2, 3), 2048))


def hf_logits(model, ids, mask, sequence):
    b, k, s = sequence.shape
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            decoder_input_ids=torch.from_numpy(np.array(sequence).reshape(b * k, s)).long(),
        )
    return out.logits.reshape(b, k, s, -1).numpy()


def load(directory, scan: bool = False):
    config = lm_config_from_hf(json.loads((directory / "config.json").read_text()))
    params = lm_params_from_hf_state_dict(read_hf_weights(directory), config, str(directory))
    return config, stack_layers(params) if scan else params


def jax_logits(directory, ids, mask, sequence, scan: bool = False):
    t5_config, t5_params = load_t5(directory)
    text = encode_ids(t5_config, t5_params, ids, mask)
    config, params = load(directory, scan)
    return np.asarray(LMModel(config, scan).apply(params, sequence, text, mask))


def rel_max(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_teacher_forced_logits_match_transformers(hf_musicgen, scan):
    model, directory = hf_musicgen
    ids, mask, sequence = inputs()
    expected = hf_logits(model, ids, mask, sequence)
    logits = jax_logits(directory, ids, mask, sequence, scan)
    assert logits.shape == expected.shape == (2, 4, 16, 2048)
    assert rel_max(logits, expected) < 1e-4


def test_text_changes_the_logits(hf_musicgen):
    """Guards the parity test: the prompt must matter in this tiny model."""
    model, directory = hf_musicgen
    ids, mask, sequence = inputs()
    other = ids.copy()
    other[0, :4] = (other[0, :4] + 5) % TEXT_VOCAB
    a, b = jax_logits(directory, ids, mask, sequence), jax_logits(directory, other, mask, sequence)
    assert rel_max(a[0], b[0]) > 0.05
    np.testing.assert_array_equal(a[1], b[1])  # row 1 unchanged: no dependence on the rest of the batch


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("block", [CACHE_BLOCK, 4])
def test_kv_cache_decoding_equals_teacher_forcing(hf_musicgen, scan, block):
    """Prefill of 5 positions (static start), then one compiled step per position (traced start): with
    a first block of 4 (blocks 4, 4, 8, 14) the prefill spans two blocks and steps skip the blocks after theirs."""
    _, directory = hf_musicgen
    ids, mask, sequence = inputs(1)
    t5_config, t5_params = load_t5(directory)
    text = encode_ids(t5_config, t5_params, ids, mask)
    config, params = load(directory, scan)
    model = LMModel(config, scan)
    full = np.asarray(model.apply(params, sequence, text, mask))
    context = model.apply(params, text, mask, method=LMModel.condition)
    cache = init_cache(config, 2, 30, scan_layers=scan, block=block)
    assert cache_length(cache, scan) == 30
    assert cache_blocks(30, block) == ([30] if block == CACHE_BLOCK else [4, 4, 8, 14])
    assert rel_max(cached_logits(model, params, sequence, context, cache), full) < 1e-5


def cached_logits(model, params, sequence, context, cache, prefix: bool = False) -> np.ndarray:
    """Logits `[B, K, S, card]` of `sequence [B, K, S]` through the KV cache: the first 5 positions (and,
    with `prefix`, a melody model's prefix) in one prefill call, then one compiled step per position."""
    prefill, cache = model.apply(params, sequence[:, :, :5], context, 0, cache, prefix, method=LMModel.decode)
    decode = jax.jit(lambda column, t, cache: model.apply(params, column, context, t, cache, method=LMModel.decode))
    steps = [prefill]
    for t in range(5, sequence.shape[-1]):
        step, cache = decode(sequence[:, :, t : t + 1], jnp.int32(t), cache)
        steps.append(step)
    return np.concatenate(steps, axis=2)


def test_stack_layers_round_trip(hf_musicgen):
    config, params = load(hf_musicgen[1])
    stacked = stack_layers(params)
    assert "layers_0" not in stacked["params"]
    assert stacked["params"]["layers"]["fc1"]["kernel"].shape == (config.num_layers, config.ffn_dim, config.dim)
    back = unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)
    broken = {"params": {k: v for k, v in params["params"].items() if k != "layers_0"}}
    with pytest.raises(ValueError, match="expected layers_0..layers_N-1"):
        stack_layers(broken)
