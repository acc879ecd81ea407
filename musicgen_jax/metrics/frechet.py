"""The Frechet Audio Distance between sets of embeddings, as Google's `frechet_audio_distance` computes it
(the tool audiocraft's `FrechetAudioDistanceMetric` runs): each set's Gaussian is the mean and the
unbiased covariance of all its clips' embeddings pooled (`ComputeMeanAndCovariance`), and the distance is
`|mu_g - mu_r|^2 + Tr(S_g) + Tr(S_r) - 2 Tr(sqrtm(S_g S_r))` (`fad_utils.frechet_distance`: scipy's
`sqrtm`, retried with 1e-7 on the diagonals when the product is singular). Everything in float64.

Per clip (fadtk's per-song FAD): the distance of one generated clip's Gaussian (its windows) to the
reference set's, to see which clips pull the score. Bootstrap: the distance over clips drawn with
replacement from each set.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

EPS = 1e-7  # fad_utils._stable_trace_sqrt_product


def gaussian(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[N, D]` embeddings (N >= 2) -> (mean `[D]`, unbiased covariance `[D, D]`), float64."""
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"a Gaussian needs at least 2 embeddings [N, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # "singular matrix" warnings: the result is checked below, as Google does
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)


def _trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    product = _sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(product).all():
        offset = np.eye(sigma_a.shape[0]) * EPS
        product = _sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if not np.allclose(np.diagonal(product).imag, 0, atol=1e-3):
        raise ValueError("the square root of the covariances' product has large imaginary parts")
    return float(np.trace(product.real))


def frechet_distance(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray) -> float:
    """The Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b) (`[D]`, `[D, D]`)."""
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(f"Gaussians of different shapes: {mu_a.shape} {sigma_a.shape}, {mu_b.shape} {sigma_b.shape}")
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * _trace_sqrt_product(sigma_a, sigma_b))


def fad(generated: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """FAD between two sets of clips, each clip's embeddings `[E_i, D]`, pooled per set."""
    return frechet_distance(*gaussian(np.concatenate(generated)), *gaussian(np.concatenate(reference)))


def per_clip(generated: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    """`[N]`: each generated clip's FAD to the whole reference set (NaN for a clip with under 2 windows)."""
    stats = gaussian(np.concatenate(reference))
    return np.array([frechet_distance(*gaussian(e), *stats) if len(e) >= 2 else np.nan for e in generated])


def bootstrap(
    generated: list[np.ndarray], reference: list[np.ndarray], rounds: int = 200, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile interval of the FAD over `rounds` draws, with replacement, of each set's clips."""
    rng = np.random.default_rng(seed)
    values = [
        fad(
            [generated[i] for i in rng.integers(len(generated), size=len(generated))],
            [reference[i] for i in rng.integers(len(reference), size=len(reference))],
        )
        for _ in range(rounds)
    ]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
