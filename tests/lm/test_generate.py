"""Greedy generation against transformers' `MusicgenForConditionalGeneration.generate`
(`do_sample=True, top_k=1, guidance_scale=3`): identical tokens."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import torch

from musicgen_jax.lm.model import stack_layers
from musicgen_jax.sampling import (
    PROGRESS_EVERY,
    SamplingParams,
    generate_tokens,
    row_keys,
    sample_next,
    stream_tokens,
    top_k_mask,
)
from musicgen_jax.text.encoder import encode_ids
from musicgen_jax.text.weights import load_t5
from tests.lm.test_parity import load

FRAMES = 50


def hf_generate_codes(model, ids, mask, frames, **inputs):
    """The codes `[B, K, frames]` transformers generates greedily (`top_k=1`, guidance 3), captured where it
    hands them to the codec: once (mono), or once per channel (stereo: interleaved back to [L0, R0, L1, ...]).
    `inputs`: more numpy inputs of `generate`, e.g. `input_values [B, C, T]` (an audio prompt, whose codes
    start the output) or `input_features [B, F, 12]` (a melody model's chroma)."""
    captured = []
    decode = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured.append(codes[0].numpy())
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    inputs = {name: torch.from_numpy(np.array(value, np.float32)) for name, value in inputs.items()}
    length = (
        frames + model.decoder.num_codebooks // model.config.decoder.audio_channels
    )  # transformers' `build_delay_pattern_mask`: T + delays + 1
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            model.generate(
                input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(mask).long(),
                do_sample=True,
                top_k=1,
                guidance_scale=3.0,
                max_length=length,
                **inputs,
            )
    finally:
        model.audio_encoder.decode = decode
    if len(captured) == 1:
        return captured[0]
    left, right = captured
    codes = np.empty((left.shape[0], 2 * left.shape[1], left.shape[2]), left.dtype)
    codes[:, 0::2], codes[:, 1::2] = left, right
    return codes


@pytest.mark.parametrize("prompt", [[5, 17, 33, 2, 1], [40, 41, 1]])
def test_greedy_tokens_equal_transformers(hf_musicgen, prompt):
    model, directory = hf_musicgen
    ids = np.array([prompt], np.int32)
    mask = np.ones_like(ids)
    expected = hf_generate_codes(model, ids, mask, FRAMES)
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    text = encode_ids(t5_config, t5_params, ids, mask)
    codes = np.asarray(
        generate_tokens(config, params, text, mask, row_keys([0]), FRAMES, SamplingParams(top_k=1, cfg_coef=3.0))
    )
    assert codes.shape == expected.shape == (1, 4, FRAMES)
    assert len(np.unique(expected)) > 20  # not a degenerate constant sequence
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_top_k_mask_equals_lax_top_k(scale):
    """The bisection threshold keeps exactly `x >= lax.top_k(x, k)[0][..., -1]`: ties (rounded values),
    signed zeros, -inf and the most negative float included; every k from 1 to n; compiled, as in the loop."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 37)) * scale).astype(np.float32)
    x[1] = np.round(x[1] / scale)  # ties
    x[2, :4] = [-0.0, 0.0, -np.inf, np.finfo(np.float32).min]
    mask = jax.jit(top_k_mask, static_argnums=1)
    for k in range(1, 38):
        expected = x >= np.asarray(jax.lax.top_k(x, k)[0])[..., -1:]
        np.testing.assert_array_equal(np.asarray(mask(x, k)), expected, err_msg=f"k={k}")
    assert np.asarray(mask(x, 50)).all()  # k > n keeps everything


def test_batch_invariance_and_seed_determinism(hf_musicgen):
    """A prompt's tokens do not depend on the other prompts in its batch; a key fixes the samples, whichever
    `top_k_method` finds the threshold and whether the layers are unrolled or scanned."""
    _, directory = hf_musicgen
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    ids = np.array([[5, 17, 33, 2, 1], [40, 41, 1, 0, 0]], np.int32)
    mask = (np.arange(5) < np.array([[5], [3]])).astype(np.int32)
    text = encode_ids(t5_config, t5_params, ids, mask)
    sampling = SamplingParams(top_k=50, cfg_coef=3.0)
    together = np.asarray(generate_tokens(config, params, text, mask, row_keys([1, 2]), 20, sampling))
    alone = np.asarray(generate_tokens(config, params, text[1:, :3], mask[1:, :3], row_keys([2]), 20, sampling))
    np.testing.assert_array_equal(alone[0], together[1])  # sampled, not only greedy: per-row keys
    again = np.asarray(generate_tokens(config, params, text, mask, row_keys([1, 2]), 20, sampling))
    other = np.asarray(generate_tokens(config, params, text, mask, row_keys([3, 4]), 20, sampling))
    np.testing.assert_array_equal(together, again)
    assert (together != other).mean() > 0.5
    lax_top_k = dataclasses.replace(sampling, top_k_method="top_k")
    logits = np.zeros((2, 4, 64), np.float32)
    assert "top_k" in str(jax.make_jaxpr(lambda x: sample_next(jax.random.key(0), x, lax_top_k))(logits))
    np.testing.assert_array_equal(
        np.asarray(generate_tokens(config, params, text, mask, row_keys([1, 2]), 20, lax_top_k)), together
    )
    stacked = stack_layers(params)  # training's layout, decoded by one scanned layer
    np.testing.assert_array_equal(
        np.asarray(generate_tokens(config, stacked, text, mask, row_keys([1, 2]), 20, sampling)), together
    )


def test_streaming_progress_and_continuation_equal_generation(hf_musicgen):
    """The same tokens from one call of the decode loop, from calls of PROGRESS_EVERY steps with progress
    reported after each (27 steps: 10, 10, 7), from one step a call (streaming), with and without a prompt."""
    _, directory = hf_musicgen
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    ids = np.array([[5, 17, 33, 2, 1]], np.int32)
    mask = np.ones_like(ids)
    text = encode_ids(t5_config, t5_params, ids, mask)
    sampling = SamplingParams(top_k=40)
    full = np.asarray(generate_tokens(config, params, text, mask, row_keys([7]), 24, sampling))
    reported = []
    chunked = np.asarray(
        generate_tokens(config, params, text, mask, row_keys([7]), 24, sampling, progress=reported.append)
    )
    assert reported == [PROGRESS_EVERY, PROGRESS_EVERY, 7]  # steps 0..26 produce positions 1..27 of 24 + 4
    np.testing.assert_array_equal(chunked, full)
    streamed = list(stream_tokens(config, params, text, mask, row_keys([7]), 24, sampling))
    assert len(streamed) == 24 and streamed[0].shape == (1, 4, 1)
    np.testing.assert_array_equal(np.concatenate(streamed, axis=-1), full)
    prompt = full[:, :, :9]
    greedy = SamplingParams(top_k=1)
    continued = np.asarray(generate_tokens(config, params, text, mask, row_keys([7]), 24, greedy, prompt))
    np.testing.assert_array_equal(continued[:, :, :9], prompt)
    tail = list(stream_tokens(config, params, text, mask, row_keys([7]), 24, greedy, prompt))
    assert len(tail) == 15
    np.testing.assert_array_equal(np.concatenate(tail, axis=-1), continued[:, :, 9:])
    with pytest.raises(ValueError, match="longer than the generation"):
        generate_tokens(config, params, text, mask, row_keys([7]), 8, greedy, prompt)


def test_lengths_in_one_bucket_share_a_compilation(hf_musicgen):
    """Frame counts in one 250-frame bucket and text lengths in one 8-token bucket: no new compilation."""
    from musicgen_jax.sampling import _run_steps_jit, _start_jit, frame_bucket, lower_generate

    _, directory = hf_musicgen
    config, params = load(directory)
    text, mask = np.zeros((1, 3, 32), np.float32), np.zeros((1, 3), np.int32)
    greedy = SamplingParams(top_k=1, cfg_coef=1.0)
    long = np.asarray(generate_tokens(config, params, text, mask, row_keys([0]), 30, greedy))
    compiled = _run_steps_jit._cache_size(), _start_jit._cache_size()
    short = np.asarray(generate_tokens(config, params, text, mask, row_keys([0]), 12, greedy))
    longer_text = np.zeros((1, 7, 32), np.float32), np.zeros((1, 7), np.int32)  # 3 and 7 tokens: bucket 8
    generate_tokens(config, params, *longer_text, row_keys([0]), 12, greedy)
    assert (_run_steps_jit._cache_size(), _start_jit._cache_size()) == compiled
    assert frame_bucket(12) == frame_bucket(30) == 250
    lowered = {
        n: lower_generate(
            config, params, jax.ShapeDtypeStruct(text.shape, text.dtype), mask, row_keys([0]), n, greedy
        ).as_text()
        for n in (12, 30, 260)
    }
    assert lowered[12] == lowered[30] != lowered[260]  # one program per length bucket
    assert short.shape == (1, 4, 12)
    # greedy and causal: the first frames agree, except the last max_delay frames of the short run,
    # whose later codebooks were cut off by the end of its pattern
    np.testing.assert_array_equal(short[:, 0], long[:, 0, :12])
