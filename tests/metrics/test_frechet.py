"""The Frechet distance and FAD's Gaussians against direct computations: the closed form for Gaussians with
commuting covariances, numpy's `cov` and scipy's `sqrtm` written out, and the singular case Google's
`fad_utils` retries with 1e-7 on the diagonals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from musicgen_jax.metrics import frechet


def test_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.standard_normal(16), rng.standard_normal(16)
    var_a, var_b = rng.uniform(0.1, 2, 16), rng.uniform(0.1, 2, 16)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet.frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_closed_form_for_rotated_gaussians():
    """Covariances sharing eigenvectors: Tr sqrt(S_a S_b) = sum sqrt(l_a l_b)."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    l_a, l_b = rng.uniform(0.1, 3, 12), rng.uniform(0.1, 3, 12)
    sigma_a, sigma_b = q @ np.diag(l_a) @ q.T, q @ np.diag(l_b) @ q.T
    expected = 4.0 + np.sum(l_a) + np.sum(l_b) - 2 * np.sum(np.sqrt(l_a * l_b))
    mu = np.zeros(12)
    got = frechet.frechet_distance(mu, sigma_a, mu + np.eye(12)[0] * 2.0, sigma_b)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fad_pools_the_clips_of_each_set():
    rng = np.random.default_rng(2)
    generated = [rng.standard_normal((n, 8)) + 0.5 for n in (5, 9, 3)]
    reference = [rng.standard_normal((n, 8)) * 1.5 for n in (7, 4)]
    a, b = np.concatenate(generated), np.concatenate(reference)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a = (a - mu_a).T @ (a - mu_a) / (len(a) - 1)
    sigma_b = (b - mu_b).T @ (b - mu_b) / (len(b) - 1)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * linalg.sqrtm(sigma_a @ sigma_b).real)
    assert frechet.fad(generated, reference) == pytest.approx(expected, rel=1e-9)
    per_clip = frechet.per_clip(generated, reference)
    assert per_clip[1] == pytest.approx(frechet.fad([generated[1]], reference), rel=1e-12)
    low, high = frechet.bootstrap(generated, reference, rounds=50)
    assert low <= high and low > 0


def test_rank_deficient_covariances_as_google_computes_them():
    """Fewer embeddings than dimensions (a clip's own windows): scipy's sqrtm of the singular product as it is
    (finite, so no retry), as `fad_utils._stable_trace_sqrt_product`."""
    rng = np.random.default_rng(3)
    (mu_a, sigma_a), (mu_b, sigma_b) = (
        frechet.gaussian(rng.standard_normal((3, 6))),
        frechet.gaussian(rng.standard_normal((4, 6))),
    )
    root = linalg.sqrtm(sigma_a @ sigma_b)
    direct = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(root.real)
    assert frechet.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(direct, rel=1e-12)


def test_a_non_finite_root_is_retried_with_an_offset(monkeypatch):
    rng = np.random.default_rng(4)
    (mu_a, sigma_a), (mu_b, sigma_b) = (
        frechet.gaussian(rng.standard_normal((9, 6))),
        frechet.gaussian(rng.standard_normal((8, 6))),
    )
    sqrtm, calls = linalg.sqrtm, []

    def failing_once(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else sqrtm(matrix)

    monkeypatch.setattr(frechet.linalg, "sqrtm", failing_once)
    got = frechet.frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    offset = np.eye(6) * frechet.EPS
    np.testing.assert_allclose(calls[1], (sigma_a + offset) @ (sigma_b + offset), rtol=1e-15)
    root = sqrtm((sigma_a + offset) @ (sigma_b + offset)).real
    direct = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(root)
    assert got == pytest.approx(direct, rel=1e-12)


def test_bad_shapes():
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        frechet.gaussian(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="different shapes"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
