"""Audio folders (or manifests) -> EnCodec token datasets: `python -m musicgen_jax.data.prepare`.

Audio is encoded once, so that training reads small token shards (`shards`) instead of audio. The work is
cut into units that are written whole and recorded, so a killed run resumes with the result of one
uninterrupted run and several processes share one output folder (`prepare`); the dataset is complete when
`dataset.json` exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time

import numpy as np
from etils import epath

from musicgen_jax import fileio, stems
from musicgen_jax.audio import AudioError, read_audio
from musicgen_jax.config import DATASET_INFO_FILE, ChromaConfig
from musicgen_jax.data import metadata, shards
from musicgen_jax.data.sources import AudioInput, list_inputs
from musicgen_jax.fileio import save_json

PLAN_FILE = "prepare.json"
UNITS_DIR = "units"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the prepared dataset depends on (a resumed or parallel run must repeat them)."""

    audio: str
    codec: str
    segment_seconds: float = 30.0
    valid_fraction: float = 0.05
    seed: int = 0
    files_per_shard: int = 64
    min_seconds: float = 1.0
    length_step: float = 1.0
    text_encoder: str | None = None
    chroma: bool = False  # store each segment's chroma bins (`ChromaConfig()`)
    melody_stems: bool = False  # of Demucs' melody stems instead of the mix (needs chroma)
    num_codebooks: int | None = None  # the codec's first so many (DAC's `set_num_codebooks`); None: all

    def __post_init__(self):
        checks = [
            ("segment_seconds", self.segment_seconds >= 0),
            ("valid_fraction", 0 <= self.valid_fraction <= 1),
            ("files_per_shard", self.files_per_shard >= 1),
            ("min_seconds", self.min_seconds >= 0),
            ("length_step", self.length_step > 0),
        ]
        for name, ok in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or not ok:
                raise ValueError(f"invalid {name}: {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"invalid seed: {self.seed!r} (an integer)")
        if self.text_encoder is not None and (not isinstance(self.text_encoder, str) or not self.text_encoder):
            raise ValueError(f"invalid text_encoder: {self.text_encoder!r} (a checkpoint, or None)")
        for name in ("chroma", "melody_stems"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"invalid {name}: {getattr(self, name)!r} (True or False)")
        if self.num_codebooks is not None and (
            isinstance(self.num_codebooks, bool) or not isinstance(self.num_codebooks, int) or self.num_codebooks < 1
        ):
            raise ValueError(f"invalid num_codebooks: {self.num_codebooks!r} (a positive integer, or None: all)")
        if self.melody_stems and not self.chroma:
            raise ValueError("melody_stems computes the chroma of Demucs' stems: --melody-stems requires --chroma")


def split_of(path: str, seed: int, valid_fraction: float) -> str:
    """The split of the file at `path`: `valid` when a hash of (seed, path) falls below `valid_fraction`, a
    deterministic draw independent of the other files (so a file never lands in both splits, and parts agree
    without talking)."""
    digest = hashlib.sha256(f"{seed}\0{path}".encode()).digest()
    return "valid" if int.from_bytes(digest[:8], "big") / 2**64 < valid_fraction else "train"


def _frames(seconds: float, frame_rate: float, what: str) -> int:
    """`seconds` in codec frames: exact at a whole frame rate (ValueError otherwise), the nearest number at a
    fractional one, where no whole second is a whole number of frames (DAC 44.1 kHz: 44100 / 512 per second)."""
    frames = round(seconds * frame_rate)
    if float(frame_rate).is_integer() and abs(frames - seconds * frame_rate) > 1e-6:
        raise ValueError(f"{what} = {seconds} s is not a whole number of codec frames ({frame_rate} per second)")
    if seconds and not frames:
        raise ValueError(f"{what} = {seconds} s is less than one codec frame (1 / {frame_rate:g} s)")
    return frames


def segment_lengths(settings: Settings, hop: int, frame_rate: float) -> tuple[int, int]:
    """`(segment, step)` in samples (segment 0: whole files), whole codec frames (`_frames`)."""
    return (
        _frames(settings.segment_seconds, frame_rate, "segment_seconds") * hop,
        _frames(settings.length_step, frame_rate, "length_step") * hop,
    )


def segment_bounds(num_samples: int, hop: int, frame_rate: float, settings: Settings) -> list[tuple[int, int]]:
    """`[(start, end)]` sample ranges of the segments of a file of `num_samples` samples; every length is a
    whole number of codec frames of `hop` samples. Consecutive segments of `segment_seconds` (0: whole
    files); the last is cut down to a multiple of `length_step` seconds (so that few distinct lengths, each
    compiled once, are encoded) and dropped when shorter than `min_seconds`. A file shorter than that has
    none (`prepare` skips it)."""
    segment, step = segment_lengths(settings, hop, frame_rate)
    bounds = [(start, start + segment) for start in range(0, num_samples - segment + 1, segment)] if segment else []
    tail_start = len(bounds) * segment
    tail = (num_samples - tail_start) // step * step
    if tail and tail >= settings.min_seconds * hop * frame_rate:
        bounds.append((tail_start, tail_start + tail))
    return bounds


def chroma_config(codec) -> ChromaConfig:
    """The chroma settings of `prepare --chroma` (the melody models', the default `ChromaConfig`); ValueError
    unless the codec runs at their sample rate. Each example then stores the argmax bins of the one-hot chroma
    (`musicgen_jax.chroma`) of exactly the waveform it encodes, downmixed to mono (`melody_source`): what
    melody models condition on in training (audiocraft's `ChromaStemConditioner` on `self_wav`)."""
    config = ChromaConfig()
    if codec.sample_rate != config.sample_rate:
        raise ValueError(
            f"--chroma needs a codec at {config.sample_rate} Hz, the melody models' chroma rate; "
            f"this codec runs at {codec.sample_rate} Hz"
        )
    return config


def chroma_info(settings: Settings) -> dict | None:
    """What `dataset.json` records about the stored chroma (None without)."""
    if not settings.chroma:
        return None
    config = ChromaConfig()
    return {
        "bins": config.bins,
        "n_fft": config.n_fft,
        "hop_length": config.hop_length,
        "sample_rate": config.sample_rate,
        "stems": settings.melody_stems,
    }


def chroma_bins(melody: np.ndarray, config: ChromaConfig) -> np.ndarray:
    """`[B, L]` mono waveforms -> uint8 `[B, 1 + max(L, n_fft) // hop]`: the argmax bin of each chroma frame."""
    from musicgen_jax.chroma import extract_chroma  # JAX: only when preparing (the data package imports lightly)

    return np.argmax(extract_chroma(melody, config), axis=-1).astype(np.uint8)


def melody_source(wav: np.ndarray, sample_rate: int, separate: bool) -> np.ndarray:
    """float32 `[T]`: what the chroma of a file `wav [C, T]` is computed from: its mono downmix (mean over
    channels), or with `separate` (`melody_stems`) the sum of Demucs' melody stems (`stems.melody_stems`, run
    once per file, before segmenting, as audiocraft separates the melody wav), cut or zero-padded to T
    samples."""
    if not separate:
        return wav.mean(axis=0, dtype=np.float32)
    mix = stems.melody_stems(wav, sample_rate, sample_rate)[: wav.shape[-1]]
    return np.pad(mix, (0, wav.shape[-1] - len(mix)))


class _BatchEncoder:
    """Encodes `[C, L]` segments in batches of equal length (`batch_size` rows, the last batch padded with
    silent rows, which changes no code), and with `chroma` the chroma bins of their `[L]` melody waveforms in
    the same batches (so chroma too is compiled once per length)."""

    def __init__(self, codec, batch_size: int, chroma: ChromaConfig | None = None):
        self.codec, self.batch_size, self.chroma = codec, batch_size, chroma
        self.pending: dict[int, list[tuple[object, np.ndarray, np.ndarray | None]]] = {}
        self.results: dict[object, dict[str, np.ndarray]] = {}

    def add(self, key, wav: np.ndarray, melody: np.ndarray | None = None) -> None:
        queue = self.pending.setdefault(wav.shape[-1], [])
        queue.append((key, wav.copy(), None if melody is None else melody.copy()))
        if len(queue) == self.batch_size:
            self._encode(wav.shape[-1])

    def flush(self) -> dict[object, dict[str, np.ndarray]]:
        """key -> `codes` int16 `[K, T]` (and `chroma` uint8 `[Fc]`) of every segment added."""
        for length in sorted(self.pending):
            self._encode(length)
        return self.results

    def _encode(self, length: int) -> None:
        queue = self.pending.pop(length)
        batch = np.zeros((self.batch_size, self.codec.channels, length), np.float32)
        for row, (_, wav, _) in enumerate(queue):
            batch[row] = wav
        codes = np.asarray(self.codec.encode(batch))
        for row, (key, _, _) in enumerate(queue):
            self.results[key] = {"codes": codes[row].astype(np.int16)}
        if self.chroma is not None:
            melodies = np.zeros((self.batch_size, length), np.float32)
            for row, (_, _, melody) in enumerate(queue):
                melodies[row] = melody
            bins = chroma_bins(melodies, self.chroma)
            for row, (key, _, _) in enumerate(queue):
                self.results[key]["chroma"] = bins[row]


def codec_info(codec, source: str) -> dict:
    """What `dataset.json` records about the codec the codes come from."""
    return {
        "source": source,
        "config": codec.config.to_dict(),
        "stereo": codec.stereo,
        "sample_rate": codec.sample_rate,
        "channels": codec.channels,
        "frame_rate": codec.frame_rate,
        "num_codebooks": codec.num_codebooks,
        "card": codec.config.codebook_size,
    }


def _unit_record_path(out: epath.Path, unit: int) -> epath.Path:
    return out / UNITS_DIR / f"unit-{unit:05d}.json"


def _text_embedding(text_encoder, description: str | None) -> np.ndarray:
    """float32 `[N, D]`: T5's hidden states of the description's N tokens (N = 0 without one), stored with
    `text_encoder` (a T5 or MusicGen checkpoint): T5 is frozen in MusicGen training, so the train step can skip
    it."""
    if description is None:
        return np.zeros((0, text_encoder.config.d_model), np.float32)
    hidden, mask = text_encoder([description])
    return np.asarray(hidden[0, : int(mask[0].sum())], np.float32)


def _prepare_unit(
    unit: int, inputs: list[AudioInput], plan: dict, codec, text_encoder, batch_size: int, out: epath.Path, report
) -> dict:
    """Encode the files of one unit, write its shards (one per split, `shards.shard_path`), then its record
    `units/unit-{i:05d}.json` (returned), each file through a temporary name renamed when complete. Audio is
    read at the codec's rate and channels (`audio.read_audio`); unreadable, empty and too short files (no
    `segment_bounds`) are skipped and listed with the reason."""
    settings = Settings(**plan["settings"])
    hop = codec.config.hop_length
    encoder = _BatchEncoder(codec, batch_size, chroma_config(codec) if settings.chroma else None)
    entries = {split: [] for split in shards.SPLITS}
    stats = {split: {"files": 0, "examples": 0, "frames": 0} for split in shards.SPLITS}
    skipped, audio_seconds = [], 0.0
    for item in inputs:
        reason = item.problem
        if reason is None:
            try:
                wav, _ = read_audio(item.file, codec.sample_rate, codec.channels)
            except AudioError as e:
                reason = str(e)
        if reason is None:
            audio_seconds += wav.shape[-1] / codec.sample_rate
            bounds = segment_bounds(wav.shape[-1], hop, codec.frame_rate, settings)
            if not bounds:
                reason = (
                    f"too short: {wav.shape[-1] / codec.sample_rate:.2f} s, a segment needs at least "
                    f"{max(settings.min_seconds, settings.length_step)} s"
                )
        if reason is not None:
            skipped.append({"path": item.path, "reason": reason})
            report(item, 0.0, reason)
            continue
        split = split_of(item.path, settings.seed, settings.valid_fraction)
        info = metadata.normalize(item.metadata)
        stats[split]["files"] += 1
        text = {} if text_encoder is None else {"text_embedding": _text_embedding(text_encoder, info["description"])}
        melody = melody_source(wav, codec.sample_rate, settings.melody_stems) if settings.chroma else None
        for index, (start, end) in enumerate(bounds):
            encoder.add((item.path, index), wav[:, start:end], None if melody is None else melody[start:end])
            entries[split].append({"path": item.path, "segment": index, "metadata": info, **text})
        report(item, wav.shape[-1] / codec.sample_rate, None)
    results = encoder.flush()
    shard_bytes = {}
    for split in shards.SPLITS:
        for entry in entries[split]:
            entry.update(results[(entry["path"], entry["segment"])])
            stats[split]["examples"] += 1
            stats[split]["frames"] += entry["codes"].shape[-1]
        path = shards.shard_path(out, split, unit, plan["units"])
        shard_bytes[split] = shards.write_shard(
            path, codec.num_codebooks, entries[split], _text_dim(text_encoder), settings.chroma
        )
    record = {
        "unit": unit,
        "plan": plan["fingerprint"],
        "codec": codec_info(codec, settings.codec),
        "text_encoder": None
        if text_encoder is None
        else {"source": settings.text_encoder, "d_model": _text_dim(text_encoder)},
        "chroma": chroma_info(settings),
        "splits": stats,
        "bytes": shard_bytes,
        "skipped": skipped,
        "audio_seconds": audio_seconds,
    }
    save_json(_unit_record_path(out, unit), record)
    return record


def _text_dim(text_encoder) -> int | None:
    return None if text_encoder is None else text_encoder.config.d_model


def _fingerprint(settings: Settings, inputs: list[AudioInput]) -> str:
    listing = list(zip([item.path for item in inputs], fileio.sizes([item.file for item in inputs]), strict=True))
    return hashlib.sha256(json.dumps([dataclasses.asdict(settings), listing]).encode()).hexdigest()


def make_plan(settings: Settings, inputs: list[AudioInput], out: epath.Path) -> dict:
    """The plan of `out` (units and settings), written by the first run; a later run must match it."""
    plan = {
        "settings": dataclasses.asdict(settings),
        "fingerprint": _fingerprint(settings, inputs),
        "files": len(inputs),
        "units": -(-len(inputs) // settings.files_per_shard),
    }
    path = out / PLAN_FILE
    if fileio.exists(path):
        previous = fileio.read_json(path)
        if previous != plan:
            changed = [k for k in plan["settings"] if plan["settings"][k] != previous.get("settings", {}).get(k)]
            what = f"different settings ({', '.join(changed)})" if changed else "a different set of audio files"
            raise ValueError(
                f"{out} was prepared with {what}: repeat the first command's arguments, or use a new --out"
            )
    else:
        save_json(path, plan)
    return plan


def _load_record(out: epath.Path, unit: int, plan: dict) -> dict | None:
    path = _unit_record_path(out, unit)
    if not fileio.exists(path):
        return None
    record = fileio.read_json(path)
    return record if record.get("plan") == plan["fingerprint"] else None


def merge(out: str | os.PathLike) -> dict:
    """Write the TFDS metadata and `dataset.json` of a dataset whose units are all done; returns the
    contents of `dataset.json`. Raises ValueError naming the units still missing."""
    out = fileio.path(out)
    if not fileio.exists(out / PLAN_FILE):
        raise ValueError(f"{out}: no {PLAN_FILE}; nothing was prepared there")
    plan = fileio.read_json(out / PLAN_FILE)
    records = [_load_record(out, unit, plan) for unit in range(plan["units"])]
    missing = [unit for unit, record in enumerate(records) if record is None]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ValueError(
            f"{out}: {len(missing)} of {plan['units']} units are not prepared yet ({shown}); "
            f"run the missing --part(s) again, then --merge"
        )
    skipped = [s for r in records for s in r["skipped"]]
    if not any(r["splits"][split]["examples"] for r in records for split in shards.SPLITS):
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise ValueError(f"none of the {plan['files']} files gave an example: {reasons}")
    codec = records[0]["codec"]
    splits = {}
    for split in shards.SPLITS:
        totals = {key: sum(r["splits"][split][key] for r in records) for key in ("files", "examples", "frames")}
        splits[split] = {
            "files": totals["files"],
            "examples": totals["examples"],
            "hours": totals["frames"] / codec["frame_rate"] / 3600,
        }
    shards.write_tfds_metadata(
        out,
        codec["num_codebooks"],
        {split: [r["splits"][split]["examples"] for r in records] for split in shards.SPLITS},
        {split: sum(r["bytes"][split] for r in records) for split in shards.SPLITS},
        description=f"EnCodec tokens of {plan['settings']['audio']} (musicgen_jax)",
        text_dim=records[0]["text_encoder"] and records[0]["text_encoder"]["d_model"],
        chroma=records[0]["chroma"] is not None,
    )
    info = {
        "format": shards.FORMAT,
        "version": 1,
        "codec": codec,
        "text_encoder": records[0]["text_encoder"],
        "chroma": records[0]["chroma"],
        "settings": plan["settings"],
        "frame_rate": codec["frame_rate"],
        "num_codebooks": codec["num_codebooks"],
        "card": codec["card"],
        "files": plan["files"],
        "splits": splits,
        "audio_hours": sum(r["audio_seconds"] for r in records) / 3600,
        "skipped": skipped,
    }
    save_json(out / DATASET_INFO_FILE, info)
    if not fileio.is_url(out):  # temporary files left by killed runs (an object store has none)
        for stale in [*out.glob(".*.tmp"), *(out / UNITS_DIR).glob(".*.tmp")]:
            stale.unlink()
    return info


class _Progress:
    """A tqdm bar over files with audio hours per wall hour; skipped files are reported on stderr."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="file", desc="preparing", disable=not enabled, file=sys.stderr)
        self.start, self.seconds = time.perf_counter(), 0.0

    def __call__(self, item: AudioInput, seconds: float, reason: str | None) -> None:
        if reason is not None:
            self.bar.write(f"skipped {item.path}: {reason}", file=sys.stderr)
        self.seconds += seconds
        wall = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.seconds / 3600:.2f} h audio, {self.seconds / wall:.1f} audio h/wall h")
        self.bar.update()

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.start


def prepare(
    settings: Settings,
    out: str | os.PathLike,
    batch_size: int = 8,
    part: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> dict | None:
    """Prepare (or resume) part `part = (I, N)` of the dataset of `settings` in `out`; returns the contents
    of `dataset.json` when this completed the dataset, else None (other parts are still missing).

    The sorted inputs are cut into work units of `files_per_shard` files (`_prepare_unit`). A unit whose
    record exists is done, so re-running the same command resumes where a killed run stopped, and the result
    is that of one uninterrupted run; part (I, N) takes the units `u` with `u % N == I`, so N processes or
    machines share the work over one output folder. When every unit is done (after the last part, or with
    `merge`), the TFDS metadata and `dataset.json` are written."""
    from musicgen_jax.convert.codec_loader import load_codec  # JAX and transformers: only when preparing
    from musicgen_jax.text.encoder import T5TextEncoder

    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"invalid part {index}/{count}: expected I/N with 0 <= I < N")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"invalid batch_size: {batch_size!r}")
    out = fileio.make_dirs(out)
    _, inputs = list_inputs(settings.audio)
    plan = make_plan(settings, inputs, out)
    units = [u for u in range(index, plan["units"], count) if _load_record(out, u, plan) is None]
    if units:
        codec = load_codec(settings.codec, num_codebooks=settings.num_codebooks)
        segment_lengths(settings, codec.config.hop_length, codec.frame_rate)  # checked before any work
        if settings.chroma:
            chroma_config(codec)
        if settings.melody_stems:
            stems._demucs()  # a missing Demucs is one error here, not one per file
        text_encoder = settings.text_encoder and T5TextEncoder.from_pretrained(settings.text_encoder)
        size = settings.files_per_shard
        work = {unit: inputs[unit * size : (unit + 1) * size] for unit in units}
        files = sum(map(len, work.values()))
        bar = _Progress(files, progress)
        for unit, unit_inputs in work.items():
            _prepare_unit(unit, unit_inputs, plan, codec, text_encoder, batch_size, out, bar)
        wall = bar.close()
        print(
            f"part {index}/{count}: {files} files, "
            f"{bar.seconds / 3600:.3f} h of audio in {wall:.1f} s ({bar.seconds / max(wall, 1e-9):.1f}x real time)",
            file=sys.stderr,
        )
    if all(_load_record(out, u, plan) is not None for u in range(plan["units"])):
        return merge(out)
    return None


if __name__ == "__main__":  # the command of earlier releases
    from musicgen_jax.cli.prepare import main

    sys.exit(main())
