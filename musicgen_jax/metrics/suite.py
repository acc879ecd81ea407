"""The objective metrics over folders of clips (what `python -m musicgen_jax.metrics` runs).

Clips pair by name, as audiocraft's evaluation pairs each sample with its reference: a clip's name is its
path below its folder without the suffix, and a generated clip's reference, melody and description are
those of the same name. Each clip is read, mixed to mono and resampled with julius' filter (audiocraft's
`convert_audio`) to each network's rate. Every metric reports its value as audiocraft computes it, the
number of clips it covers, a bootstrap 95% interval over clips and its per-clip values. A clip a metric
cannot use (silent, or shorter than its network needs) is skipped for that metric and listed with the
reason; any other problem (a missing partner, an unreadable file, a missing description) is one error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np

from musicgen_jax import audio, fileio
from musicgen_jax.metrics import NEEDS, ROUNDS, chroma_cosine, clap_score, frechet, kld
from musicgen_jax.metrics.clap.model import DEFAULT_SOURCE as CLAP_RELEASED
from musicgen_jax.metrics.clap.weights import load_clap
from musicgen_jax.metrics.networks import local_mesh
from musicgen_jax.metrics.passt.weights import PASST_20SEC_URL, load_passt
from musicgen_jax.metrics.resample import resample_frac
from musicgen_jax.metrics.vggish import model as vggish_model
from musicgen_jax.metrics.vggish.weights import RELEASED as VGGISH_RELEASED
from musicgen_jax.metrics.vggish.weights import load_vggish


class MetricsError(ValueError):
    """Inputs the metrics cannot be computed on (named in the message)."""


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where each metric network's weights come from (any source `metrics.networks` resolves)."""

    vggish: str = VGGISH_RELEASED
    passt: str = PASST_20SEC_URL
    clap: str = CLAP_RELEASED
    clap_tokenizer: str | None = None  # RoBERTa's tokenizer files for a laion_clap .pt (None: roberta-base)


def list_clips(folder: str | os.PathLike) -> dict[str, fileio.epath.Path]:
    """`{name: path}` of the audio files under `folder` (recursively), names sorted."""
    root = fileio.path(folder)
    with fileio.reporting(root):
        if not root.is_dir():
            raise MetricsError(f"{root} is not a folder")
    clips = {}
    for file in fileio.walk_files(root):
        if file.name.lower().endswith(audio.READ_SUFFIXES):
            name = file.relative_to(root).as_posix().rsplit(".", 1)[0]
            if name in clips:
                raise MetricsError(f"{root}: two files for clip {name!r}: {clips[name].name}, {file.name}")
            clips[name] = file
    if not clips:
        raise MetricsError(f"no audio files ({', '.join(audio.READ_SUFFIXES)}) in {root}")
    return dict(sorted(clips.items()))


def _pair(names: list[str], other: dict, what: str, folder) -> None:
    missing, extra = sorted(set(names) - set(other)), sorted(set(other) - set(names))
    if missing or extra:
        lines = [f"the generated clips and the {what} in {folder} do not pair by name:"]
        if missing:
            lines.append(
                f"  no {what} for ({len(missing)}): {', '.join(missing[:10])}" + (" ..." * (len(missing) > 10))
            )
        if extra:
            lines.append(f"  {what} without a generated clip ({len(extra)}): {', '.join(extra[:10])}")
        raise MetricsError("\n".join(lines))


def read_descriptions(source: str | os.PathLike | None, clips: dict) -> dict[str, str]:
    """`{name: description}` for every clip: from a `.jsonl` file (objects with "name" and "description"),
    a text file (one description per line, in the clips' name order), or None: each clip's sidecar
    `.json` (audiocraft's `{"description": ...}`)."""
    if source is None:
        out = {}
        for name, path in clips.items():
            sidecar = path.parent / (path.name.rsplit(".", 1)[0] + ".json")
            if not fileio.exists(sidecar):
                raise MetricsError(f"no description for clip {name!r}: {sidecar} is missing (or pass --descriptions)")
            out[name] = _description(fileio.read_json(sidecar), sidecar)
        return out
    text = fileio.read_text(source)
    if os.fspath(source).endswith(".jsonl"):
        out = {}
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MetricsError(f"{source}:{number}: not JSON: {e}") from e
                if not isinstance(row, dict) or "name" not in row:
                    raise MetricsError(f'{source}:{number}: a line needs a "name" and a "description"')
                name = str(row["name"])
                name = name.rsplit(".", 1)[0] if name.lower().endswith(audio.READ_SUFFIXES) else name
                out[name] = _description(row, f"{source}:{number}")
        _pair(list(clips), out, "descriptions", source)
        return out
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != len(clips):
        raise MetricsError(f"{source} has {len(lines)} descriptions for {len(clips)} clips (one line per clip)")
    return dict(zip(clips, lines))


def _description(row, where) -> str:
    description = row.get("description") if isinstance(row, dict) else None
    if not isinstance(description, str) or not description.strip():
        raise MetricsError(f'{where}: no "description" text')
    return description


def read(path) -> tuple[np.ndarray, int]:
    """`([C, T], rate)` of a clip; unreadable files raise MetricsError."""
    try:
        return audio.read_audio(path)
    except audio.AudioError as e:
        raise MetricsError(str(e)) from e


def to_mono(wav: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """`[T]` float32: a clip mixed to mono (channel mean) and resampled to `sample_rate` with julius' filter."""
    return np.asarray(resample_frac(audio.convert_channels(wav, 1)[0], rate, sample_rate))


def _interval(values: np.ndarray, weights: np.ndarray | None = None, rounds: int = ROUNDS) -> list[float] | None:
    """The 95% percentile bootstrap interval of the (weighted) mean of per-clip `values` (None: no rounds)."""
    if rounds == 0:
        return None
    rng = np.random.default_rng(0)
    draws = rng.integers(len(values), size=(rounds, len(values)))
    weights = np.ones_like(values) if weights is None else weights
    means = (values * weights)[draws].sum(axis=1) / weights[draws].sum(axis=1)
    return [float(v) for v in np.percentile(means, [2.5, 97.5])]


def _result(value: float, interval, per_clip: dict[str, float]) -> dict:
    return {"value": float(value), "interval": interval, "clips": len(per_clip), "per_clip": per_clip}


_LOADERS = {  # each network's batches split over this process's devices
    "fad": lambda sources: dataclasses.replace(load_vggish(sources.vggish), mesh=local_mesh()),
    "kld": lambda sources: load_passt(sources.passt, mesh=local_mesh()),
    "clap": lambda sources: load_clap(sources.clap, sources.clap_tokenizer, mesh=local_mesh()),
}


def load_networks(metrics: list[str], sources: Sources = Sources()) -> dict:
    """`{metric: network}` of the networks `metrics` need, loaded (converted on first use): a source that
    cannot be read fails here, before any clip is generated or read."""
    return {metric: _LOADERS[metric](sources) for metric in metrics if metric in _LOADERS}


class Run:
    """One evaluation: the paired clips and the networks (`networks`: already loaded ones, by metric; the
    others are loaded from `sources` when their metric runs)."""

    def __init__(
        self,
        generated,
        reference=None,
        descriptions=None,
        melody=None,
        sources: Sources = Sources(),
        rounds: int = ROUNDS,
        networks: dict | None = None,
    ):
        self.generated = list_clips(generated)
        self.reference = self.melody = None
        names = list(self.generated)
        if reference is not None:
            self.reference = list_clips(reference)
            _pair(names, self.reference, "reference clips", reference)
        if melody is not None:
            self.melody = list_clips(melody)
            _pair(names, self.melody, "melodies", melody)
        self.descriptions_source = descriptions
        self.sources = sources
        self.rounds = rounds
        self.networks = dict(networks or {})
        self.skipped: list[dict] = []
        self._decoded: dict = {}
        self._audio: dict = {}

    def network(self, metric: str):
        """The network of `metric`, loaded once."""
        if metric not in self.networks:
            self.networks[metric] = _LOADERS[metric](self.sources)
        return self.networks[metric]

    def clips(self, which: str, sample_rate: int) -> dict[str, np.ndarray]:
        """`{name: [T] mono clip at sample_rate}` of the generated clips or the `which` partners (read once
        per rate)."""
        if which not in self._decoded:  # each file decoded once, whatever rates the metrics need
            paths = {"generated": self.generated, "reference": self.reference, "melody": self.melody}[which]
            self._decoded[which] = {name: read(path) for name, path in paths.items()}
        key = (which, sample_rate)
        if key not in self._audio:
            decoded = self._decoded[which]
            self._audio[key] = {name: to_mono(wav, rate, sample_rate) for name, (wav, rate) in decoded.items()}
        return self._audio[key]

    def _usable(self, metric: str, groups: list[dict[str, np.ndarray]], min_samples: int = 1) -> list[str]:
        """The names every group has a usable clip for; the others are listed as skipped for `metric`."""
        usable = []
        for name in self.generated:
            reasons = []
            for group in groups:
                wav = group[name]
                if not np.any(wav):
                    reasons.append("silent")
                elif wav.shape[0] < min_samples:
                    reasons.append(f"{wav.shape[0]} samples, under the {min_samples} it needs")
            if reasons:
                self.skipped.append({"name": name, "metric": metric, "reason": "; ".join(sorted(set(reasons)))})
            else:
                usable.append(name)
        if not usable:
            raise MetricsError(f"{metric}: no clip can be used (see the skipped clips: {self.skipped[-3:]})")
        return usable

    def fad(self) -> dict:
        """FAD (VGGish at 16 kHz) of the generated set against the reference set, as audiocraft runs Google's
        tool on them: each clip peak-normalized and written as 16-bit PCM (`audio_write(strategy="peak")`)."""
        vggish = self.network("fad")
        rate = vggish_model.SAMPLE_RATE
        groups = [self.clips("generated", rate), self.clips("reference", rate)]
        names = self._usable("fad", groups, vggish_model.FAD_WINDOW)
        embeddings = [_vggish_embeddings(vggish, [group[n] for n in names]) for group in groups]
        value = frechet.fad(*embeddings)
        per_clip = dict(zip(names, frechet.per_clip(*embeddings).tolist()))
        interval = list(frechet.bootstrap(*embeddings, rounds=self.rounds)) if self.rounds else None
        return _result(value, interval, per_clip)

    def kld(self) -> dict:
        """The KL divergence of PaSST's AudioSet labels (32 kHz, 20 s segments) of each reference clip from its
        generated clip's ("kld", audiocraft's `kld_pq`), and the reverse and sum over all segments."""
        model = self.network("kld")
        rate, config = model.config.sample_rate, model.config
        generated, reference = self.clips("generated", rate), self.clips("reference", rate)
        names = self._usable("kld", [generated, reference], config.min_samples + 1)
        result = kld.passt_kld(model, [generated[n] for n in names], [reference[n] for n in names], rate)
        means = result.mean()
        interval = _interval(result.kld_pq.astype(np.float64), result.segments.astype(np.float64), self.rounds)
        per_clip = dict(zip(names, result.kld_pq.tolist()))
        return {**_result(means["kld"], interval, per_clip), "kld_qp": means["kld_qp"], "kld_both": means["kld_both"]}

    def clap(self) -> dict:
        """CLAP text consistency (48 kHz): the cosine of each generated clip's audio embedding with its
        description's text embedding, averaged over the clips (audiocraft's `CLAPTextConsistencyMetric`)."""
        descriptions = read_descriptions(self.descriptions_source, self.generated)  # checked before any loading
        model = self.network("clap")
        rate = model.config.audio.sample_rate
        generated = self.clips("generated", rate)
        names = self._usable("clap", [generated])
        cosines = clap_score.text_consistency(
            model, [generated[n] for n in names], [descriptions[n] for n in names], rate
        )
        per_clip = dict(zip(names, cosines.tolist()))
        return _result(float(np.mean(cosines)), _interval(cosines.astype(np.float64), rounds=self.rounds), per_clip)

    def chroma(self) -> dict:
        """The chroma cosine similarity of each generated clip with its melody (both cut to the shorter)."""
        rate = chroma_cosine.ChromaConfig().sample_rate
        generated, melody = self.clips("generated", rate), self.clips("melody", rate)
        names = self._usable("chroma", [generated, melody])
        cosines = []
        for name in names:
            length = min(generated[name].shape[0], melody[name].shape[0])
            cosines.append(chroma_cosine.frame_cosines(generated[name][:length], melody[name][:length]))
        sums, counts = np.array([c.sum() for c in cosines]), np.array([c.size for c in cosines], np.float64)
        per_clip = {n: float(s / c) for n, s, c in zip(names, sums, counts)}
        return _result(sums.sum() / counts.sum(), _interval(sums / counts, counts, self.rounds), per_clip)

    def compute(self, metrics: list[str]) -> dict:
        """`{metric: result}` for `metrics` and the run's description (inputs, skipped clips)."""
        runners: dict[str, Callable[[], dict]] = {
            "fad": self.fad,
            "kld": self.kld,
            "clap": self.clap,
            "chroma": self.chroma,
        }
        inputs = {"reference": self.reference, "melody": self.melody, "descriptions": True}
        out = {}
        for metric in metrics:
            if metric in NEEDS and inputs[NEEDS[metric]] is None:
                raise MetricsError(f"{metric} needs --{NEEDS[metric]}")
            if metric not in runners:
                raise MetricsError(f"metric {metric!r} is not available (available: {', '.join(runners)})")
            out[metric] = runners[metric]()
        return {"clips": len(self.generated), "metrics": out, "skipped": self.skipped}


def _vggish_embeddings(vggish, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Each 16 kHz clip's `[E, 128]` FAD embeddings. Clips of one length run as one batch."""
    out: list[np.ndarray | None] = [None] * len(clips)
    by_length: dict[int, list[int]] = {}
    for i, clip in enumerate(clips):
        by_length.setdefault(clip.shape[0], []).append(i)
    for indices in by_length.values():
        batch = np.stack([_pcm16(clips[i]) for i in indices])
        for i, embeddings in zip(indices, vggish.embed(batch)):
            out[i] = embeddings
    return out


def _pcm16(wav: np.ndarray) -> np.ndarray:
    """A clip as the 16-bit samples audiocraft writes for Google's FAD (peak-normalized to -1 dBFS, then
    PCM), as float32 sample values: Google's `AudioSetModel` divides them by their maximum."""
    return audio.to_pcm16(audio.normalize_audio(wav, vggish_model.SAMPLE_RATE, "peak")).astype(np.float32)
