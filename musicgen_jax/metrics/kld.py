"""KL divergence between PaSST label distributions of generated and reference clips, as audiocraft's
`PasstKLDivergenceMetric` (pretrained_length 20: hear21passt's `base20sec`) computes it.

Each clip of a pair is cut to the pair's size, converted to 32 kHz (julius' `resample_frac`, per channel) then
to mono (the channel mean), and split into 20 s segments; segments of at most 0.15 s are dropped. Each segment
gets its own label distribution (softmax of its logits) and its own KL terms; audiocraft's `compute()` averages
them over all segments of all clips. Per clip, `passt_kld` returns the mean over that clip's segments and the
segment count, so `KLDResult.mean()` gives audiocraft's numbers and a caller can bootstrap over clips.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from musicgen_jax.metrics.passt.model import PaSST
from musicgen_jax.metrics.resample import convert_audio

EPSILON = 1e-6  # audiocraft's `kl_divergence` default


def kl_divergence(pred_probs: np.ndarray, target_probs: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """`[N, L]`, `[N, L]` -> `[N]`: audiocraft's `kl_divergence`, i.e. torch's `kl_div((pred + eps).log(), target)`
    summed over labels: sum target * (log target - log(pred + eps)), a zero target contributing zero."""
    pred, target = np.asarray(pred_probs, np.float32), np.asarray(target_probs, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        target_log_target = np.where(target > 0, target * np.log(target), np.float32(0))
    return (target_log_target - target * np.log(pred + np.float32(epsilon))).sum(-1)


def segments(wav: np.ndarray, max_samples: int, min_samples: int) -> list[np.ndarray]:
    """`[T]` -> consecutive `max_samples` pieces (the last one shorter), those of at most `min_samples` dropped
    (`PasstKLDivergenceMetric._process_audio`)."""
    pieces = [wav[start : start + max_samples] for start in range(0, len(wav), max_samples)]
    return [p for p in pieces if len(p) > min_samples]


def label_distributions(model: PaSST, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`[T]` 32 kHz mono clips -> per clip a `[S, L]` array: the label probabilities of each of its S segments.
    Segments of equal length go through the network together (one compilation per length)."""
    c = model.config
    per_clip = [segments(wav, c.max_samples, c.min_samples) for wav in clips]
    by_length = defaultdict(list)
    for i, pieces in enumerate(per_clip):
        for j, piece in enumerate(pieces):
            by_length[len(piece)].append((i, j))
    out = [np.zeros((len(pieces), c.num_classes), np.float32) for pieces in per_clip]
    for index in by_length.values():
        probs = model.probabilities(np.stack([per_clip[i][j] for i, j in index]))
        for (i, j), p in zip(index, probs):
            out[i][j] = p
    return out


@dataclasses.dataclass(frozen=True)
class KLDResult:
    """Per clip (`[N]` float32, NaN for a clip without a segment over 0.15 s): the mean over its segments of
    `kld_pq` (KL of the reference labels from the generated ones: audiocraft's `kl_divergence(preds, targets)`),
    `kld_qp` (the reverse) and `kld_both` (their sum); `segments` `[N]` int: how many segments each clip has."""

    kld_pq: np.ndarray
    kld_qp: np.ndarray
    kld_both: np.ndarray
    segments: np.ndarray

    def mean(self) -> dict[str, float]:
        """audiocraft's `KLDivergenceMetric.compute()`: each score averaged over all segments of all clips."""
        weight = self.segments.sum()
        if weight == 0:
            raise ValueError("no clip has a segment longer than the metric's minimum duration")
        valid = self.segments > 0
        pq = float((self.kld_pq[valid] * self.segments[valid]).sum() / weight)
        qp = float((self.kld_qp[valid] * self.segments[valid]).sum() / weight)
        return {"kld": pq, "kld_pq": pq, "kld_qp": qp, "kld_both": pq + qp}


def passt_kld(
    model: PaSST,
    generated: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    sample_rate: int,
    sizes: Sequence[int] | None = None,
) -> KLDResult:
    """KLD of each pair of `[C, T]` (or `[T]`) float32 clips at `sample_rate` (generated[i] against reference[i]).

    `sizes[i]`: the samples of pair i that count (audiocraft's `sizes`: both clips of the pair are cut to it);
    by default the shorter clip's length. Every segment of the two clips is scored against its counterpart."""
    if len(generated) != len(reference):
        raise ValueError(f"{len(generated)} generated clips but {len(reference)} reference clips")
    if sizes is None:
        sizes = [min(np.shape(g)[-1], np.shape(r)[-1]) for g, r in zip(generated, reference)]
    rate = model.config.sample_rate

    def prepare(clips):
        out = []
        for wav, size in zip(clips, sizes):
            wav = np.atleast_2d(np.asarray(wav, np.float32))[:, :size]
            wav = np.pad(wav, ((0, 0), (0, size - wav.shape[-1])))  # audiocraft's batches are zero-padded
            out.append(convert_audio(wav, sample_rate, rate))
        return out

    preds = label_distributions(model, prepare(generated))
    targets = label_distributions(model, prepare(reference))
    pq, qp, counts = [], [], []
    for p, q in zip(preds, targets):
        counts.append(len(p))
        pq.append(kl_divergence(p, q).mean() if len(p) else np.nan)
        qp.append(kl_divergence(q, p).mean() if len(p) else np.nan)
    pq, qp = np.asarray(pq, np.float32), np.asarray(qp, np.float32)
    return KLDResult(pq, qp, pq + qp, np.asarray(counts, np.int64))
