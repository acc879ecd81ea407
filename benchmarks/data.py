"""Benchmark training-data preparation: `musicgen_jax.data.prepare` against a PyTorch reference.

Preparation section: both sides code the same audio with the real-size 32 kHz EnCodec (MusicGen's
codec, built as in `benchmarks.codec`: transformers' `EncodecModel` with a fixed seed, random weights)
on the SAME weights: the transformers model is saved with `save_pretrained` into a temporary directory,
which `prepare` loads with `load_codec`. The input is a temporary folder of music-like clips (notes
with harmonics and decaying envelopes, a bass line, noise bursts and a noise floor; deterministic
seeds), written with soundfile at mixed rates (32 kHz / 44.1 kHz), mono and stereo, WAV and FLAC.

- musicgen_jax: `prepare(Settings(folder, codec_dir, segment_seconds, valid_fraction=0.1), out,
  batch_size)` end to end (reading, resampling, encoding, writing the shards and the metadata). The
  first run includes JAX's compilations (one per distinct segment length); the second, into a fresh
  output folder in the same process, reuses them (the encoder is jitted at module level).
- PyTorch reference: the same files read with `musicgen_jax.audio.read_audio` at 32 kHz mono, cut
  with `segment_bounds` and encoded with transformers' `EncodecModel.encode` under
  `torch.inference_mode()`, segments grouped by equal length in batches of `batch_size` as `prepare`
  groups them (the last batch of a length is not padded); nothing is written.

The codes of the reference are compared with those read back from the prepared dataset
(`read_examples`, both splits, matched by (path, segment)). Throughput is audio seconds per wall second.

    .venv/bin/python -m benchmarks.data --write     # writes the data sections of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import soundfile
import torch
import transformers

from benchmarks.codec import build_hf_model
from benchmarks.common import (
    RESULTS,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    other_load,
    publish,
    usable_cores,
)
from musicgen_jax.audio import read_audio
from musicgen_jax.codec import model as codec_model
from musicgen_jax.config import DATASET_INFO_FILE
from musicgen_jax.data import Settings, prepare, read_examples
from musicgen_jax.data.prepare import segment_bounds
from musicgen_jax.data.shards import SPLITS
from musicgen_jax.data.sources import list_inputs

PREPARE_TITLE = "## Data preparation (EnCodec 32 kHz real size, random weights)"
PIPELINE_TITLE = "## Training pipeline (token crops at musicgen-small's training shape)"
SECTIONS = ("prepare", "pipeline")

# (sample rate, channels, format) of the clips, cycled over the files
CLIP_KINDS = [(32000, 1, "WAV"), (44100, 2, "WAV"), (44100, 1, "FLAC"), (32000, 2, "FLAC")]
SCALE = [0, 2, 4, 5, 7, 9, 11]  # major scale, semitones


def music_clip(seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """`[T, C]` float32 music-like audio: a melody of notes (4 harmonics, exponential decay), a bass
    line, short noise bursts on the beats and a noise floor; stereo channels pan them differently."""
    rng = np.random.default_rng(seed)
    samples = round(seconds * sample_rate)
    t = np.arange(samples) / sample_rate
    voices = np.zeros((3, samples))  # melody, bass, percussion
    root = rng.uniform(45, 57)  # MIDI note of the key
    beat = 60 / rng.uniform(80, 140)
    for voice, (octave, lengths) in enumerate([(12, (0.5, 1, 1, 2)), (-12, (2, 4))]):
        start = 0.0
        while start < seconds:
            length = beat * rng.choice(lengths)
            pitch = root + octave + SCALE[rng.integers(len(SCALE))] + 12 * rng.integers(0, 2) * (voice == 0)
            freq = 440 * 2 ** ((pitch - 69) / 12)
            a, b = round(start * sample_rate), min(round((start + length) * sample_rate), samples)
            local = t[a:b] - start
            tone = sum(np.sin(2 * np.pi * h * freq * local + rng.uniform(0, 2 * np.pi)) / h**1.5 for h in range(1, 5))
            voices[voice, a:b] += tone * np.exp(-local * rng.uniform(1.5, 4.0)) * np.minimum(local * 200, 1)
            start += length
    for hit in np.arange(0, seconds, beat / 2):
        a, b = round(hit * sample_rate), min(round((hit + 0.08) * sample_rate), samples)
        voices[2, a:b] += rng.standard_normal(b - a) * np.exp(-(t[a:b] - hit) * 60) * rng.uniform(0.3, 1)
    pans = rng.uniform(0.2, 0.8, size=(3, 1)) if channels == 2 else np.full((3, 1), 0.5)
    gains = np.array([[0.5], [0.35], [0.25]])
    left, right = ((gains * pans * voices).sum(0), (gains * (1 - pans) * voices).sum(0))
    mix = np.stack([left, right] if channels == 2 else [left + right], axis=1)
    mix += 0.005 * rng.standard_normal(mix.shape)
    return (0.5 * mix / np.abs(mix).max()).astype(np.float32)


def make_clips(folder: Path, files: int, seconds: float, seed: int = 0) -> list[dict]:
    """Write `files` clips of `seconds` into `folder` (kinds cycled from `CLIP_KINDS`); their descriptions."""
    clips = []
    for i in range(files):
        sample_rate, channels, fmt = CLIP_KINDS[i % len(CLIP_KINDS)]
        name = f"clip{i:03d}.{fmt.lower()}"
        soundfile.write(
            folder / name,
            music_clip(seconds, sample_rate, channels, seed + i),
            sample_rate,
            subtype="PCM_16",
            format=fmt,
        )
        clips.append({"path": name, "sample_rate": sample_rate, "channels": channels, "format": fmt})
    return clips


def save_hf_codec(directory: Path) -> transformers.EncodecModel:
    """`build_hf_model()` (real size, seed 0), saved with `save_pretrained` into `directory`; returns it."""
    model = build_hf_model()
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(directory)
    return model


def _compiled_encoders() -> int | None:
    """How many shapes the module-level jitted encoder has compiled so far (None if jax hides it)."""
    size = getattr(codec_model._encode, "_cache_size", None)
    return size() if callable(size) else None


def _timed_prepare(settings: Settings, out: Path, batch_size: int) -> dict:
    before, start = _compiled_encoders(), time.perf_counter()
    info = prepare(settings, out, batch_size=batch_size, progress=False)
    wall, after = time.perf_counter() - start, _compiled_encoders()
    if info is None:
        raise RuntimeError(f"prepare did not complete the dataset in {out}")
    return {
        "wall": wall,
        "audio": info["audio_hours"] * 3600,
        "info": info,
        "compiled": None if before is None or after is None else after - before,
    }


def torch_reference(model, root: Path, settings: Settings, batch_size: int) -> dict:
    """Read, cut and encode every file of `root` as `prepare` does, with transformers; nothing written.
    Returns the wall times (read: reading + resampling; encode), the audio seconds and the codes by
    (path, segment)."""
    sample_rate, hop = model.config.sampling_rate, int(np.prod(model.config.upsampling_ratios))
    frame_rate = round(sample_rate / hop)
    pending: dict[int, list] = {}
    codes, times = {}, {"read": 0.0, "encode": 0.0}
    audio = 0.0

    def encode(length: int) -> None:
        queue = pending.pop(length)
        batch = torch.from_numpy(np.stack([wav for _, wav in queue]))
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.encode(batch).audio_codes[0].numpy()  # [1 (chunks), B, K, T'] -> [B, K, T']
        times["encode"] += time.perf_counter() - start
        for row, (key, _) in enumerate(queue):
            codes[key] = out[row]

    start_all = time.perf_counter()
    for item in list_inputs(str(root))[1]:
        start = time.perf_counter()
        wav, _ = read_audio(item.file, sample_rate, 1)
        times["read"] += time.perf_counter() - start
        audio += wav.shape[-1] / sample_rate
        for index, (a, b) in enumerate(segment_bounds(wav.shape[-1], hop, frame_rate, settings)):
            queue = pending.setdefault(b - a, [])
            queue.append(((item.path, index), wav[:, a:b]))
            if len(queue) == batch_size:
                encode(b - a)
    for length in sorted(pending):
        encode(length)
    return {"wall": time.perf_counter() - start_all, "audio": audio, "codes": codes, **times}


def run_prepare(files: int, seconds: float, batch_size: int, segment_seconds: float) -> dict:
    """The preparation section's measurements (see the module docstring)."""
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    start = time.perf_counter()
    import tensorflow  # noqa: F401 - what writing the shards imports, kept out of the first run's time
    import tensorflow_datasets  # noqa: F401

    import_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, codec_dir = tmp / "audio", tmp / "codec"
        folder.mkdir()
        start = time.perf_counter()
        clips = make_clips(folder, files, seconds)
        model = save_hf_codec(codec_dir)
        setup_seconds = time.perf_counter() - start
        settings = Settings(str(folder), str(codec_dir), segment_seconds=segment_seconds, valid_fraction=0.1)
        print(
            f"{files} clips x {seconds:g} s, batch {batch_size}; jax {jax.__version__} on "
            f"{jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads",
            flush=True,
        )

        counters, start = cpu_counters(), time.perf_counter()
        print("musicgen_jax prepare, first run ...", flush=True)
        first = _timed_prepare(settings, tmp / "out1", batch_size)
        print("musicgen_jax prepare, second run ...", flush=True)
        second = _timed_prepare(settings, tmp / "out2", batch_size)
        print("PyTorch reference ...", flush=True)
        with torch.inference_mode():  # warm-up, 1 s
            model.encode(torch.zeros(1, 1, model.config.sampling_rate))
        ref = torch_reference(model, folder, settings, batch_size)
        others = other_load(counters, cpu_counters(), time.perf_counter() - start)

        prepared = {
            (ex["path"], ex["segment"]): ex["codes"] for split in SPLITS for ex in read_examples(tmp / "out2", split)
        }
        first_keys = {(ex["path"], ex["segment"]) for split in SPLITS for ex in read_examples(tmp / "out1", split)}
    if set(prepared) != set(ref["codes"]) or first_keys != set(prepared):
        raise RuntimeError(f"segments differ: prepared {sorted(prepared)}, reference {sorted(ref['codes'])}")
    equal = total = 0
    differing = []  # (path, segment, stage, frame) of the codes that differ
    for key, codes in ref["codes"].items():
        if prepared[key].shape != codes.shape:
            raise RuntimeError(f"{key}: prepared codes {prepared[key].shape}, reference {codes.shape}")
        same = prepared[key].astype(np.int64) == codes
        equal += int(same.sum())
        total += codes.size
        differing += [(*key, int(q), int(t)) for q, t in zip(*np.nonzero(~same))]
    lengths = {}
    for codes in ref["codes"].values():
        lengths[codes.shape[-1]] = lengths.get(codes.shape[-1], 0) + 1
    info = second["info"]
    return {
        "files": files,
        "seconds": seconds,
        "batch_size": batch_size,
        "segment_seconds": segment_seconds,
        "threads": threads,
        "load": (load_before, load_average()),
        "others": others,
        "clips": clips,
        "import_seconds": import_seconds,
        "setup_seconds": setup_seconds,
        "first": first,
        "second": second,
        "ref": {k: v for k, v in ref.items() if k != "codes"},
        "codes_equal": equal / total,
        "codes_total": total,
        "differing": differing,
        "lengths": lengths,
        "frame_rate": info["frame_rate"],
        "num_codebooks": info["num_codebooks"],
        "splits": {s: (v["files"], v["examples"]) for s, v in info["splits"].items()},
        "distinct_codes": len(np.unique(np.concatenate([c[0] for c in ref["codes"].values()]))),
    }


def _differing_text(differing: list[tuple]) -> str:
    """Where the codes that differ are: "" when none does."""
    if not differing:
        return ""
    frames = sorted({(path, segment, frame) for path, segment, _, frame in differing})
    stages = sorted({stage for *_, stage, _ in differing})
    shown = "; ".join(f"{path} segment {segment} frame {frame}" for path, segment, frame in frames[:4])
    more = f" and {len(frames) - 4} more" if len(frames) > 4 else ""
    return (
        f"; the {len(differing)} differing codes lie in {len(frames)} frame{'s' * (len(frames) != 1)} "
        f"({shown}{more}), stages {', '.join(map(str, stages))} (0: first)"
    )


def report_prepare(res: dict, command: str) -> str:
    """The preparation section (title, provenance, correctness, table)."""
    import tensorflow

    rows = []
    for name, run in [
        ("musicgen_jax `prepare`, first run (compile+run)", res["first"]),
        ("musicgen_jax `prepare`, second run (compiled)", res["second"]),
        ("PyTorch reference (read + encode, no writing)", res["ref"]),
    ]:
        rows.append(
            f"| {name} | {run['audio']:.1f} | {run['wall']:.2f} | {run['audio'] / run['wall']:.2f} "
            f"| {run['wall'] / run['audio']:.4f} |"
        )
    kinds = list(dict.fromkeys((c["sample_rate"], c["channels"], c["format"]) for c in res["clips"]))
    kinds_text = ", ".join(f"{'mono' if ch == 1 else 'stereo'} {fmt} at {sr / 1000:g} kHz" for sr, ch, fmt in kinds)
    frame_rate, batch = res["frame_rate"], res["batch_size"]
    lengths = sorted(res["lengths"].items(), reverse=True)
    segments = ", ".join(f"{n} of {t / frame_rate:g} s" for t, n in lengths)
    padded = sum(-n % batch for _, n in lengths)
    calls = sum(-(-n // batch) for _, n in lengths)
    splits = ", ".join(
        f"{s} {files} file{'s' * (files != 1)} / {examples} example{'s' * (examples != 1)}"
        for s, (files, examples) in res["splits"].items()
    )
    compiled = [res[r]["compiled"] for r in ("first", "second")]
    compiled_text = "n/a" if None in compiled else f"{compiled[0]} in the first run, {compiled[1]} in the second"
    ref = res["ref"]
    lines = [
        PREPARE_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(
            res["threads"],
            res["load"],
            f", tensorflow {tensorflow.__version__}, soundfile {soundfile.__version__}",
            torch_mode="`torch.inference_mode()`",
        ),
        f"- During the run: other processes used {res['others']} of the machine's CPU time during the timed runs "
        "(from /proc/stat; near 0% means undisturbed timings)",
        "- Codec: transformers `EncodecModel`, MusicGen's 32 kHz architecture at real size (`benchmarks.codec."
        "build_hf_model`, seed 0), `save_pretrained` into a temporary directory that `prepare` loads with "
        "`load_codec`; the PyTorch reference uses the same model object",
        f"- Input: {res['files']} music-like clips of {res['seconds']:g} s (notes with harmonics, bass, noise "
        f"bursts, noise floor; 16-bit PCM, {kinds_text}, cycled), read at 32 kHz mono (stereo mixed down, "
        "44.1 kHz resampled with soxr HQ: `read_audio`)",
        f"- Work: `Settings(segment_seconds={res['segment_seconds']:g}, valid_fraction=0.1)`, batch size {batch}: "
        f"{sum(res['lengths'].values())} segments ({segments}) in {calls} encoder calls, {padded} padded "
        f"(silent) rows in musicgen_jax's batches (the reference does not pad); {splits}; JAX encoder "
        f"compilations: {compiled_text}",
        "- Timing: one run each, in this order, in one process: musicgen_jax `prepare` end to end (list, read, "
        "resample, encode, write the TFRecord shards, the TFDS metadata and `dataset.json`) into a fresh output "
        "folder, twice; then the PyTorch reference (after a 1 s warm-up encode). tensorflow and "
        f"tensorflow_datasets were imported before the timing ({res['import_seconds']:.1f} s), clips and codec "
        f"built and saved before it ({res['setup_seconds']:.1f} s). PyTorch reference: reading + resampling "
        f"{ref['read']:.2f} s, encoding {ref['encode']:.2f} s",
        f"- Same computation: {100 * res['codes_equal']:.4f}% of the {res['codes_total']} codes of the prepared "
        f"dataset (`read_examples`, both splits, matched by (path, segment)) equal the PyTorch reference's "
        f"({res['distinct_codes']} distinct first-stage codes){_differing_text(res['differing'])}",
        "",
        "| run | audio s | wall s | audio s per wall s | real-time factor |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"JAX second run / PyTorch reference throughput: {res['ref']['wall'] / res['second']['wall']:.2f}. "
        "Real-time factor: wall time / audio duration (below 1 is faster than real time).",
        "",
    ]
    return "\n".join(lines)


PIPELINE_DESCRIPTIONS = [
    "lofi hip hop beat with a mellow jazzy piano",
    "epic orchestral film score with brass",
    "energetic rock song with electric guitars and drums",
    "calm ambient pads and field recordings",
    "80s synthwave with arpeggiated synths",
    "acoustic folk ballad with a fingerpicked guitar",
]
PIPELINE_FRAMES = 1500  # audiocraft's 30 s training segments at 50 Hz
PIPELINE_BATCHES = (24, 192)  # per host: global 192 (musicgen-small's recipe) over 8 hosts, and on one host


SMALL_PARAMS = 300e6  # musicgen-small's transformer
TPU_HOST_FLOPS = 4 * 275e12  # a TPU v4 host: 4 chips, bf16 peak
TPU_MFU = 0.4


def _tpu_steps_per_second(batch_size: int) -> float:
    """Train steps/s of musicgen-small at `batch_size` crops per TPU v4 host (6 N D FLOPs at TPU_MFU)."""
    return TPU_HOST_FLOPS * TPU_MFU / (6 * SMALL_PARAMS * batch_size * PIPELINE_FRAMES)


def _token_dataset(directory: Path, examples: int) -> None:
    """A prepared-dataset layout of `examples` random 4-codebook examples (90% of 30 s, 10% shorter) with
    audiocraft-style metadata, written through `musicgen_jax.data.shards` as `prepare` writes it."""
    from musicgen_jax.data import shards
    from musicgen_jax.fileio import save_json

    rng = np.random.default_rng(0)
    units = [list(range(start, min(start + 250, examples))) for start in range(0, examples, 250)]
    for unit, indices in enumerate(units):
        rows = []
        for i in indices:
            frames = PIPELINE_FRAMES if rng.random() < 0.9 else int(rng.integers(500, PIPELINE_FRAMES))
            rows.append(
                {
                    "codes": rng.integers(0, 2048, (4, frames), dtype=np.int16),
                    "path": f"song{i:05d}.wav",
                    "segment": 0,
                    "metadata": {
                        "description": PIPELINE_DESCRIPTIONS[i % len(PIPELINE_DESCRIPTIONS)],
                        "genre": ("jazz", "rock", "ambient")[i % 3],
                        "bpm": float(70 + i % 80),
                        "key": "c minor",
                        "moods": ["calm", "warm"],
                        "keywords": ["piano"],
                        "instrument": "piano",
                    },
                }
            )
        shards.write_shard(shards.shard_path(directory, "train", unit, len(units)), 4, rows)
        shards.write_shard(shards.shard_path(directory, "valid", unit, len(units)), 4, [])
    shards.write_tfds_metadata(
        directory,
        4,
        {"train": [len(u) for u in units], "valid": [0] * len(units)},
        {"train": 0, "valid": 0},
        "pipeline benchmark",
    )
    save_json(
        directory / DATASET_INFO_FILE,
        {"num_codebooks": 4, "splits": {"train": {"examples": examples}, "valid": {"examples": 0}}},
    )


def _spiece_tokenizer(directory: Path):
    """A T5-style sentencepiece tokenizer trained on the descriptions (the real one needs the hub)."""
    import io

    import sentencepiece

    from musicgen_jax.text.tokenizer import T5Tokenizer

    lines = PIPELINE_DESCRIPTIONS + ["key: c minor. bpm: 120.0. genre: jazz. moods: calm, warm. keywords: piano"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 50),
        model_writer=model,
        vocab_size=150,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (directory / "spiece.model").write_bytes(model.getvalue())
    return T5Tokenizer.from_pretrained(directory)


def run_pipeline(examples: int, batches: int) -> dict:
    """Batches per second of `TrainBatches` (tf.data, 2 threads, prefetch 2) and of the bare assembly, at
    per-host batch sizes PIPELINE_BATCHES with audiocraft's text augmentation; load and restore times."""
    from musicgen_jax.data import AUDIOCRAFT_DEFAULTS, PipelineConfig, TrainBatches, load_host_examples

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        _token_dataset(tmp, examples)
        write_seconds = time.perf_counter() - started
        tokenizer = _spiece_tokenizer(tmp)
        load = load_average()
        before = cpu_counters()
        wall_start = time.perf_counter()
        started = time.perf_counter()
        host = load_host_examples(tmp, "train", 0, 1)
        load_seconds = time.perf_counter() - started
        rows = []
        for batch_size in PIPELINE_BATCHES:
            config = PipelineConfig(batch_size, PIPELINE_FRAMES, seed=0, text=AUDIOCRAFT_DEFAULTS)
            stream = TrainBatches(host, config, tokenizer)
            next(stream)  # tf.data start-up
            started = time.perf_counter()
            for _ in range(batches):
                next(stream)
            piped = (time.perf_counter() - started) / batches
            started = time.perf_counter()
            for step in range(batches):
                stream.batch(step)
            bare = (time.perf_counter() - started) / batches
            restore = {}
            for step in (1, 10**9):
                started = time.perf_counter()
                next(TrainBatches(host, config, tokenizer, state={**stream.state(), "step": step}))
                restore[step] = time.perf_counter() - started
            rows.append({"batch_size": batch_size, "piped": piped, "bare": bare, "restore": restore})
        others = other_load(before, cpu_counters(), time.perf_counter() - wall_start)
    return {
        "examples": examples,
        "batches": batches,
        "rows": rows,
        "load_seconds": load_seconds,
        "write_seconds": write_seconds,
        "load": (load, load_average()),
        "others": others,
    }


def report_pipeline(res: dict, command: str) -> str:
    """The pipeline section (title, provenance, table)."""
    import tensorflow

    table = [
        f"| {r['batch_size']} | {1 / r['piped']:.1f} | {r['batch_size'] / r['piped']:.0f} | {1 / r['bare']:.1f} "
        f"| {r['restore'][1]:.3f} | {r['restore'][10**9]:.3f} | {_tpu_steps_per_second(r['batch_size']):.1f} |"
        for r in res["rows"]
    ]
    lines = [
        PIPELINE_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(None, res["load"], f", tensorflow {tensorflow.__version__}"),
        f"- During the run: other processes used {res['others']} of the machine's CPU time (from /proc/stat)",
        f"- Data: {res['examples']} random 4-codebook examples (90% of 30 s = {PIPELINE_FRAMES} frames, the rest "
        f"shorter: padded and masked) with audiocraft-style metadata, in the layout `prepare` writes "
        f"(written in {res['write_seconds']:.1f} s); one host reads them into memory in {res['load_seconds']:.1f} s "
        "(`load_host_examples`)",
        f"- Batches: crops of {PIPELINE_FRAMES} frames, text from the metadata with audiocraft's augmentation "
        "(`AUDIOCRAFT_DEFAULTS`: merge 0.25, drop description 0.5, drop other 0.5), T5 tokens from a "
        "sentencepiece model trained at start-up, padded to the length buckets (32, 64, 128, 256)",
        f"- Timing: {res['batches']} batches per row after the first: `next(TrainBatches)` (tf.data, 2 threads, "
        "prefetch 2) and the bare assembly (`TrainBatches.batch(step)`, one thread); restore: building the "
        "pipeline from a saved state and taking its first batch, at step 1 and at step 10^9",
        "- No PyTorch row: audiocraft's loader decodes audio and runs the codec for every batch (the codec's "
        "cost is in the preparation section), so there is no token-level reference to set beside it. The "
        "trainer's measured step time, to compare with, comes with the trainer (issue 13); until then, the "
        "last column is the step rate the pipeline must feed on a TPU v4 host (4 chips, 275 TFLOP/s bf16 each) "
        f"at {100 * TPU_MFU:.0f}% of peak: 6 x {SMALL_PARAMS / 1e6:.0f}M parameters x batch x {PIPELINE_FRAMES} "
        "positions FLOPs per step (an estimate, not a measurement)",
        "",
        "| batch per host | batches/s (tf.data) | examples/s | batches/s (bare, 1 thread) | restore at step 1, s "
        "| restore at step 10^9, s | train steps/s to feed (TPU v4 host, estimate) |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which sections to measure (each is published on its own)",
    )
    parser.add_argument("--files", type=int, default=8, help="preparation: number of clips")
    parser.add_argument("--seconds", type=float, default=40.0, help="preparation: length of each clip, seconds")
    parser.add_argument("--batch-size", type=int, default=8, help="preparation: segments per encoder call")
    parser.add_argument("--segment-seconds", type=float, default=30.0, help="preparation: segment length, seconds")
    parser.add_argument("--examples", type=int, default=2000, help="pipeline: examples in the token dataset")
    parser.add_argument("--batches", type=int, default=40, help="pipeline: batches timed per configuration")
    parser.add_argument("--write", action="store_true", help=f"write the measured sections of {RESULTS}")
    args = parser.parse_args(argv)
    if args.files < 1 or args.seconds <= 0 or args.batch_size < 1 or args.segment_seconds < 0:
        parser.error("--files and --batch-size must be >= 1, --seconds > 0, --segment-seconds >= 0")
    command = command_line("benchmarks.data", argv)
    if "prepare" in args.sections:
        res = run_prepare(args.files, args.seconds, args.batch_size, args.segment_seconds)
        publish(report_prepare(res, command), args.write)
    if "pipeline" in args.sections:
        res = run_pipeline(args.examples, args.batches)
        publish(report_pipeline(res, command), args.write)


if __name__ == "__main__":
    main()
