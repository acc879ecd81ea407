"""Half-precision inference (`MusicGen.get_pretrained(..., dtype=...)`, `lm.model.cast_params`) on the tiny
random MusicGen (tests/lm/conftest.py), against the float32 LM (itself equal to transformers', test_parity):
teacher-forced logits over 50 frames, greedy tokens, the bytes the parameters take on the device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import LMModel, cast_params, compute_dtype
from musicgen_jax.musicgen import MusicGen, default_dtype

PROMPTS = ["calm piano melody", "Energetic rock song with electric guitars and drums!"]


def _bytes(tree, matrices: bool) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree) if (x.ndim >= 2) == matrices)


@pytest.fixture(scope="module")
def models(converted):
    return {dtype: MusicGen.get_pretrained(str(converted), dtype=dtype) for dtype in ("float32", "bfloat16", "float16")}


def test_default_and_parameter_bytes(models, converted):
    expected = "float32" if jax.default_backend() == "cpu" else "bfloat16"  # a GPU or TPU: the suite runs there too
    assert default_dtype() == expected and MusicGen.get_pretrained(str(converted)).dtype == expected
    full = models["float32"].lm_params
    for dtype in ("bfloat16", "float16"):
        half = models[dtype].lm_params
        assert {x.dtype for x in jax.tree.leaves(half) if x.ndim >= 2} == {jnp.dtype(dtype)}
        assert {x.dtype for x in jax.tree.leaves(half) if x.ndim < 2} == {jnp.dtype("float32")}  # norms, biases
        assert _bytes(half, True) * 2 == _bytes(full, True) and _bytes(half, False) == _bytes(full, False)
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(half))  # on the device
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        cast_params(full, "int4")


# |logit - float32 logit| over 50 teacher-forced frames of both prompts, relative to the float32 logits'
# standard deviation (0.54): (root mean square, max); measured bfloat16 (0.020, 0.39), float16 (0.0023, 0.041)
TOLERANCE = {"bfloat16": (0.04, 0.6), "float16": (0.005, 0.08)}
ARGMAX = {"bfloat16": 0.95, "float16": 0.99}  # the share of positions with float32's argmax (0.965, 0.995)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_teacher_forced_logits(models, dtype):
    model = models["float32"]
    config = model.lm_config
    codes = np.random.default_rng(0).integers(0, config.card, (2, config.num_codebooks, 50))
    sequence = pattern.build(jnp.asarray(codes), config.delays, config.special_token)
    text, mask = model.text_encoder(PROMPTS)

    def logits(params):
        return np.asarray(LMModel(config, dtype=compute_dtype(params)).apply(params, sequence, text, mask))

    full, half = logits(model.lm_params), logits(models[dtype].lm_params)
    assert half.dtype == np.float32  # the logits in float32
    rms, worst = np.sqrt(((half - full) ** 2).mean()) / full.std(), np.abs(half - full).max() / full.std()
    assert rms < TOLERANCE[dtype][0] and worst < TOLERANCE[dtype][1], (rms, worst)
    assert (half.argmax(-1) == full.argmax(-1)).mean() > ARGMAX[dtype]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_greedy_tokens(models, dtype):
    """The first greedy frames (no guidance) equal float32's for both prompts. The tiny random LM's logits are
    nearly flat (near-ties over 2048 tokens), so a rounding flips an argmax within a few frames (measured:
    the first at frame 8 in bfloat16, 4 in float16) and the sequences part from there."""
    tokens = {}
    for name in ("float32", dtype):
        models[name].set_generation_params(top_k=1, duration=0.2, cfg_coef=1.0)
        tokens[name] = models[name].generate_tokens(PROMPTS)
    np.testing.assert_array_equal(tokens[dtype][:, :, :3], tokens["float32"][:, :, :3])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_decode_loop_computes_in_the_dtype(models, dtype):
    """The sampling loop's model runs in the parameters' dtype: its KV cache (the keys and values the layers'
    products give) is held in it; the logits it samples from stay float32 (checked above)."""
    from musicgen_jax.sampling import Conditions, Decoder, SamplingParams, row_keys

    model = models[dtype]
    text, mask = model.text_encoder(PROMPTS)
    decoder = Decoder(model.lm_config, SamplingParams())
    state = decoder.start(model.lm_params, Conditions.of(model.lm_config, text, mask), row_keys([0, 1]), 10)
    assert {x.dtype for x in jax.tree.leaves(state.cache)} == {jnp.dtype(dtype)}
