"""The delay pattern (audiocraft's `DelayedPatternProvider`) for mono and stereo delay lists."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from musicgen_jax.lm import pattern

S = 2048


def test_layout_matches_spec_example():
    codes = np.arange(1, 17).reshape(1, 4, 4)  # c_{q,t} = 4q + t + 1
    seq = np.asarray(pattern.build(codes, (0, 1, 2, 3), S))
    expected = np.array(
        [
            [S, 1, 2, 3, 4, S, S, S],
            [S, S, 5, 6, 7, 8, S, S],
            [S, S, S, 9, 10, 11, 12, S],
            [S, S, S, S, 13, 14, 15, 16],
        ]
    )
    np.testing.assert_array_equal(seq[0], expected)
    np.testing.assert_array_equal(pattern.valid_mask(8, 4, (0, 1, 2, 3)), expected != S)


@pytest.mark.parametrize("delays", [(0, 1, 2, 3), (0, 0, 1, 1, 2, 2, 3, 3), (0, 2)])
def test_build_revert_round_trip_under_jit(delays):
    codes = np.random.default_rng(0).integers(0, 2048, (3, len(delays), 11))
    seq = jax.jit(pattern.build, static_argnums=(1, 2))(codes, delays, S)
    assert seq.shape == (3, len(delays), pattern.num_steps(11, delays)) == (3, len(delays), 11 + max(delays) + 1)
    assert (np.asarray(seq)[:, :, 0] == S).all()
    np.testing.assert_array_equal(np.asarray(jax.jit(pattern.revert, static_argnums=1)(seq, delays)), codes)
    assert pattern.num_frames(seq.shape[-1], delays) == 11


def test_stereo_pairs_share_delays():
    codes = np.random.default_rng(1).integers(0, 2048, (1, 8, 5))
    seq = np.asarray(pattern.build(codes, (0, 0, 1, 1, 2, 2, 3, 3), S))
    for k in range(0, 8, 2):
        np.testing.assert_array_equal(seq[0, k] == S, seq[0, k + 1] == S)
    np.testing.assert_array_equal(seq[0, 2, 2:7], codes[0, 2])  # L1 starts one step late
