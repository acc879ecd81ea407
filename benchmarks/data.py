"""Benchmark training data: preparation (`musicgen_jax.data.prepare`) against a PyTorch reference, and the
training pipeline's batches.

Preparation: a temporary folder of music-like clips (mixed rates, mono and stereo, WAV and FLAC) is prepared
end to end twice by `prepare` (the first run compiles the encoder), and read, cut and encoded by the same
32 kHz EnCodec in transformers (`benchmarks.codec.build_hf_model`, same weights), nothing written; the codes
of both are compared. Pipeline: `TrainBatches` over a prepared-layout dataset of random tokens with
audiocraft-style metadata, at musicgen-small's training crop.

    .venv/bin/python -m benchmarks.data --write     # writes the data sections of benchmarks/RESULTS.md
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from benchmarks.codec import build_hf_model
from benchmarks.common import (
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    other_load,
    parser,
    publish,
    section,
    table,
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


def compiled_count(jitted) -> int | None:
    """How many shapes the jitted function `jitted` has compiled so far (None if jax hides it)."""
    size = getattr(jitted, "_cache_size", None)
    return size() if callable(size) else None


def timed_prepare(settings: Settings, out: Path, batch_size: int, encoder=codec_model._encode) -> dict:
    """`prepare` end to end into `out`: wall seconds, audio seconds, its `dataset.json`, and how many shapes the
    codec's jitted `encoder` compiled meanwhile."""
    before, start = compiled_count(encoder), time.perf_counter()
    info = prepare(settings, out, batch_size=batch_size, progress=False)
    wall, after = time.perf_counter() - start, compiled_count(encoder)
    if info is None:
        raise RuntimeError(f"prepare did not complete the dataset in {out}")
    return {
        "wall": wall,
        "audio": info["audio_hours"] * 3600,
        "info": info,
        "compiled": None if before is None or after is None else after - before,
    }


def reference_codes(
    encode, root: Path, settings: Settings, batch_size: int, sample_rate: int, hop: int, frame_rate: float
) -> dict:
    """Read, cut and encode every file of `root` as `prepare` does (`read_audio` mono at `sample_rate`,
    `segment_bounds`, batches of up to `batch_size` segments of one length) with a PyTorch codec's
    `encode(batch [B, 1, T] tensor) -> codes [B, K, T'] numpy`; nothing written. Returns the wall times
    (read: reading + resampling; encode), the audio seconds and the codes by (path, segment)."""
    pending: dict[int, list] = {}
    codes, times, audio = {}, {"read": 0.0, "encode": 0.0}, 0.0

    def flush(length: int) -> None:
        queue = pending.pop(length)
        batch = torch.from_numpy(np.stack([wav for _, wav in queue]))
        start = time.perf_counter()
        with torch.inference_mode():
            out = encode(batch)
        times["encode"] += time.perf_counter() - start
        codes.update((key, out[row]) for row, (key, _) in enumerate(queue))

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
                flush(b - a)
    for length in sorted(pending):
        flush(length)
    return {"wall": time.perf_counter() - start_all, "audio": audio, "codes": codes, **times}


def torch_reference(model, root: Path, settings: Settings, batch_size: int) -> dict:
    """`reference_codes` with transformers' `EncodecModel` (its codes `[1 (chunks), B, K, T']`)."""
    sample_rate, hop = model.config.sampling_rate, int(np.prod(model.config.upsampling_ratios))
    encode = lambda batch: model.encode(batch).audio_codes[0].numpy()  # noqa: E731
    return reference_codes(encode, root, settings, batch_size, sample_rate, hop, round(sample_rate / hop))


def measure_prepare(settings: Settings, tmp: Path, batch_size: int, encoder, warm_up, reference) -> dict:
    """`prepare` of `settings` timed twice (into `tmp`/out1, then out2: `timed_prepare` with the codec's jitted
    `encoder`), then `warm_up()` and `reference()` (a PyTorch codec's `reference_codes`); the codes of both
    compared segment by segment. RuntimeError when the two cut different segments or shapes."""
    counters = cpu_counters()
    print("musicgen_jax prepare, first run ...", flush=True)
    first = timed_prepare(settings, tmp / "out1", batch_size, encoder)
    print("musicgen_jax prepare, second run ...", flush=True)
    second = timed_prepare(settings, tmp / "out2", batch_size, encoder)
    print("PyTorch reference ...", flush=True)
    warm_up()
    ref = reference()
    others = other_load(counters)
    prepared = {
        (ex["path"], ex["segment"]): ex["codes"] for split in SPLITS for ex in read_examples(tmp / "out2", split)
    }
    first_keys = {(ex["path"], ex["segment"]) for split in SPLITS for ex in read_examples(tmp / "out1", split)}
    if set(prepared) != set(ref["codes"]) or first_keys != set(prepared):
        raise RuntimeError(f"segments differ: prepared {sorted(prepared)}, reference {sorted(ref['codes'])}")
    equal = total = 0
    differing = []  # (path, segment, stage, frame) of the codes that differ
    lengths: dict[int, int] = {}
    for key, codes in ref["codes"].items():
        if prepared[key].shape != codes.shape:
            raise RuntimeError(f"{key}: prepared codes {prepared[key].shape}, reference {codes.shape}")
        same = prepared[key].astype(np.int64) == codes
        equal += int(same.sum())
        total += codes.size
        differing += [(*key, int(q), int(t)) for q, t in zip(*np.nonzero(~same))]
        lengths[codes.shape[-1]] = lengths.get(codes.shape[-1], 0) + 1
    info = second["info"]
    return {
        "others": others,
        "first": first,
        "second": second,
        "ref": {k: v for k, v in ref.items() if k != "codes"},
        "codes_equal": equal / total,
        "codes_total": total,
        "differing": differing,
        "lengths": lengths,
        "frame_rate": info["frame_rate"],
        "splits": {s: (v["files"], v["examples"]) for s, v in info["splits"].items()},
        "distinct_codes": len(np.unique(np.concatenate([c[0] for c in ref["codes"].values()]))),
    }


def run_prepare(files: int, seconds: float, batch_size: int, segment_seconds: float) -> dict:
    """The preparation section's measurements (see the module docstring)."""
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    import tensorflow  # noqa: F401 - what writing the shards imports, kept out of the first run's time
    import tensorflow_datasets  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, codec_dir = tmp / "audio", tmp / "codec"
        folder.mkdir()
        clips = make_clips(folder, files, seconds)
        model = build_hf_model()
        model.save_pretrained(codec_dir)
        settings = Settings(str(folder), str(codec_dir), segment_seconds=segment_seconds, valid_fraction=0.1)

        def warm_up():  # 1 s
            with torch.inference_mode():
                model.encode(torch.zeros(1, 1, model.config.sampling_rate))

        measured = measure_prepare(
            settings,
            tmp,
            batch_size,
            codec_model._encode,
            warm_up,
            lambda: torch_reference(model, folder, settings, batch_size),
        )
    return {
        "files": files,
        "seconds": seconds,
        "batch_size": batch_size,
        "segment_seconds": segment_seconds,
        "threads": threads,
        "load": (load_before, load_average()),
        "clips": clips,
        **measured,
    }


PREPARE_NOTES = (
    "- Codec: transformers `EncodecModel`, MusicGen's 32 kHz architecture at real size (`benchmarks.codec."
    "build_hf_model`, seed 0), `save_pretrained` into a temporary directory that `prepare` loads with `load_codec`; "
    "the PyTorch reference uses the same model object\n"
    "- Timing: one run each, in this order, in one process: musicgen_jax `prepare` end to end (list, read, resample, "
    "encode, write the TFRecord shards, the TFDS metadata and `dataset.json`) into a fresh output folder, twice; then "
    "the PyTorch reference (after a 1 s warm-up encode); tensorflow imported and clips and codec built and saved "
    "before the timing"
)


def prepare_table(res: dict, reference: str) -> str:
    """`measure_prepare`'s three runs (both of `prepare`, then `reference`'s) as a table of throughputs."""
    runs = [
        ("musicgen_jax `prepare`, first run (compile+run)", res["first"]),
        ("musicgen_jax `prepare`, second run (compiled)", res["second"]),
        (f"{reference} (read + encode, no writing)", res["ref"]),
    ]
    columns = {
        "run": "{}",
        "audio s": "{:.1f}",
        "wall s": "{:.2f}",
        "audio s per wall s": "{:.2f}",
        "real-time factor": "{:.4f}",
    }
    return table(
        columns, [(name, r["audio"], r["wall"], r["audio"] / r["wall"], r["wall"] / r["audio"]) for name, r in runs]
    )


def report_prepare(res: dict, command: str) -> str:
    """The preparation section: provenance, the work, the agreement of the codes, one row per run."""
    import tensorflow

    kinds = dict.fromkeys((c["sample_rate"], c["channels"], c["format"]) for c in res["clips"])
    kinds_text = ", ".join(f"{'mono' if ch == 1 else 'stereo'} {fmt} at {sr / 1000:g} kHz" for sr, ch, fmt in kinds)
    lengths, batch = sorted(res["lengths"].items(), reverse=True), res["batch_size"]
    segments = ", ".join(f"{n} of {t / res['frame_rate']:g} s" for t, n in lengths)
    splits = ", ".join(f"{s} {files} files / {examples} examples" for s, (files, examples) in res["splits"].items())
    compiled = [res[r]["compiled"] for r in ("first", "second")]
    differing = sorted({f"{path} segment {segment} frame {frame}" for path, segment, _, frame in res["differing"]})
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            f", tensorflow {tensorflow.__version__}, soundfile {soundfile.__version__}",
            torch_mode="`torch.inference_mode()`",
            others=res["others"],
        ),
        f"- Input: {res['files']} music-like clips of {res['seconds']:g} s ({kinds_text}, cycled), read at 32 kHz "
        "mono (`read_audio`)",
        f"- Work: `Settings(segment_seconds={res['segment_seconds']:g}, valid_fraction=0.1)`, batch size {batch}: "
        f"{sum(res['lengths'].values())} segments ({segments}) in {sum(-(-n // batch) for _, n in lengths)} encoder "
        f"calls, {sum(-n % batch for _, n in lengths)} padded rows in musicgen_jax's batches; {splits}; JAX encoder "
        f"compilations: {'n/a' if None in compiled else ' and '.join(map(str, compiled))} (first and second run)",
        PREPARE_NOTES,
        f"- PyTorch reference: reading + resampling {res['ref']['read']:.2f} s, encoding {res['ref']['encode']:.2f} s",
        f"- Same computation: {100 * res['codes_equal']:.4f}% of the {res['codes_total']} codes of the prepared "
        f"dataset (`read_examples`, both splits) equal the PyTorch reference's ({res['distinct_codes']} distinct "
        f"first-stage codes)" + (f"; the differing ones in {', '.join(differing[:4])}" if differing else ""),
    ]
    footnote = (
        f"JAX second run / PyTorch reference throughput: {res['ref']['wall'] / res['second']['wall']:.2f}. "
        "Real-time factor: wall time / audio duration (below 1 is faster than real time)."
    )
    return section(PREPARE_TITLE, command, facts, prepare_table(res, "PyTorch reference"), footnote)


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


def token_dataset(directory: Path, examples: int) -> None:
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


def pipeline_tokenizer(directory: Path):
    """The pipeline's T5 tokenizer: a small sentencepiece model trained on the dataset's texts, saved in
    `directory` (local)."""
    from benchmarks.text import write_spiece
    from musicgen_jax.text.tokenizer import T5Tokenizer

    metadata = "key: c minor. bpm: 120.0. genre: jazz. moods: calm, warm. keywords: piano"
    write_spiece(directory, (PIPELINE_DESCRIPTIONS + [metadata]) * 50, vocab_size=150)
    return T5Tokenizer.from_pretrained(directory)


def pipeline_config(batch_size: int):
    """The `PipelineConfig` of the timed pipelines: musicgen-small's crop, audiocraft's text augmentation."""
    from musicgen_jax.data import AUDIOCRAFT_DEFAULTS, PipelineConfig

    return PipelineConfig(batch_size, PIPELINE_FRAMES, seed=0, text=AUDIOCRAFT_DEFAULTS)


def load_examples(data_dir) -> tuple:
    """(the train split read into memory by one host, `load_host_examples`, seconds it took); `data_dir` a
    local path or a URL."""
    from musicgen_jax.data import load_host_examples

    started = time.perf_counter()
    host = load_host_examples(data_dir, "train", 0, 1)
    return host, time.perf_counter() - started


def batch_seconds(stream, batches: int) -> float:
    """Mean seconds of `next(stream)` over `batches` batches."""
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return (time.perf_counter() - started) / batches


def run_pipeline(examples: int, batches: int) -> dict:
    """Batches per second of `TrainBatches` (tf.data, 2 threads, prefetch 2) and of the bare assembly, at
    per-host batch sizes PIPELINE_BATCHES with audiocraft's text augmentation; load and restore times."""
    from musicgen_jax.data import TrainBatches

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        token_dataset(tmp, examples)
        write_seconds = time.perf_counter() - started
        tokenizer = pipeline_tokenizer(tmp)
        load, before = load_average(), cpu_counters()
        host, load_seconds = load_examples(tmp)
        rows = []
        for batch_size in PIPELINE_BATCHES:
            config = pipeline_config(batch_size)
            stream = TrainBatches(host, config, tokenizer)
            next(stream)  # tf.data start-up
            piped = batch_seconds(stream, batches)
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
        others = other_load(before)
    return {
        "examples": examples,
        "batches": batches,
        "rows": rows,
        "load_seconds": load_seconds,
        "write_seconds": write_seconds,
        "load": (load, load_average()),
        "others": others,
    }


PIPELINE_NOTES = (
    "- Batches: crops of {frames} frames, text from the metadata with audiocraft's augmentation "
    "(`AUDIOCRAFT_DEFAULTS`), T5 tokens from a sentencepiece model trained at start-up, padded to the length buckets\n"
    "- Timing: {batches} batches per row after the first: `next(TrainBatches)` (tf.data, 2 threads, prefetch 2) and "
    "the bare assembly (`TrainBatches.batch(step)`, one thread); restore: building the pipeline from a saved state "
    "and taking its first batch, at step 1 and at step 10^9\n"
    "- No PyTorch row (audiocraft's loader runs the codec for every batch: the preparation section). The last column "
    "is an estimate, not a measurement: the step rate the pipeline must feed on a TPU v4 host (4 chips, 275 TFLOP/s "
    "bf16 each) at {mfu:.0f}% of peak, 6 x {params:.0f}M parameters x batch x {frames} positions FLOPs per step"
)
PIPELINE_COLUMNS = {
    "batch per host": "{}",
    "batches/s (tf.data)": "{:.1f}",
    "examples/s": "{:.0f}",
    "batches/s (bare, 1 thread)": "{:.1f}",
    "restore at step 1, s": "{:.3f}",
    "restore at step 10^9, s": "{:.3f}",
    "train steps/s to feed (TPU v4 host, estimate)": "{:.1f}",
}


def report_pipeline(res: dict, command: str) -> str:
    """The pipeline section: provenance, one row per batch size."""
    import tensorflow

    rows = [
        (r["batch_size"], 1 / r["piped"], r["batch_size"] / r["piped"], 1 / r["bare"], r["restore"][1])
        + (r["restore"][10**9], _tpu_steps_per_second(r["batch_size"]))
        for r in res["rows"]
    ]
    facts = [
        *machine_lines(None, res["load"], f", tensorflow {tensorflow.__version__}", others=res["others"]),
        f"- Data: {res['examples']} random 4-codebook examples (90% of {PIPELINE_FRAMES} frames, the rest shorter) "
        f"with audiocraft-style metadata, in the layout `prepare` writes (written in {res['write_seconds']:.1f} s); "
        f"one host reads them into memory in {res['load_seconds']:.1f} s (`load_host_examples`)",
        PIPELINE_NOTES.format(
            frames=PIPELINE_FRAMES, batches=res["batches"], mfu=100 * TPU_MFU, params=SMALL_PARAMS / 1e6
        ),
    ]
    return section(PIPELINE_TITLE, command, facts, table(PIPELINE_COLUMNS, rows))


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.data", __doc__)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to measure")
    p.add_argument("--files", type=int, default=8, help="preparation: number of clips")
    p.add_argument("--seconds", type=float, default=40.0, help="preparation: length of each clip, seconds")
    p.add_argument("--batch-size", type=int, default=8, help="preparation: segments per encoder call")
    p.add_argument("--segment-seconds", type=float, default=30.0, help="preparation: segment length, seconds")
    p.add_argument("--examples", type=int, default=2000, help="pipeline: examples in the token dataset")
    p.add_argument("--batches", type=int, default=40, help="pipeline: batches timed per configuration")
    args = p.parse_args(argv)
    if args.files < 1 or args.seconds <= 0 or args.batch_size < 1 or args.segment_seconds < 0:
        p.error("--files and --batch-size must be >= 1, --seconds > 0, --segment-seconds >= 0")
    command = command_line("benchmarks.data", argv)
    if "prepare" in args.sections:
        res = run_prepare(args.files, args.seconds, args.batch_size, args.segment_seconds)
        publish(report_prepare(res, command), args.write)
    if "pipeline" in args.sections:
        publish(report_pipeline(run_pipeline(args.examples, args.batches), command), args.write)


if __name__ == "__main__":
    main()
