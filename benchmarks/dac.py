"""Benchmark descript's DAC (44.1 kHz): the JAX port (`musicgen_jax.codec.dac`) against descript's `dac` package
in PyTorch, as a codec and as the encoder of a prepared dataset.

Both sides run the same random weights: descript's `DAC` built at the released 44.1 kHz size, `randomize`d as the
parity tests do (`tests/codec/test_dac.py`), written as descript's checkpoint file (`tests/codec/descript_api.py`)
and read into JAX by `load_codec`, the loader a user runs on a downloaded `weights_44khz_8kbps_0.0.1.pth`.
Codec: the codes and audio of both are compared, then encode and decode of the same input are timed in
alternation. Preparation: a temporary folder of music-like clips is prepared end to end twice by `prepare` (the
first run compiles), and read, cut and encoded by descript's `DAC` as `prepare` cuts it, nothing written; the
codes of both are compared.

    .venv/bin/python -m benchmarks.dac --write     # writes the two DAC sections of benchmarks/RESULTS.md
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np
import soundfile
import torch

from benchmarks.codec import rel_l2
from benchmarks.common import (
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    parser,
    publish,
    section,
    table,
    time_pair,
    usable_cores,
    with_min,
)
from benchmarks.data import measure_prepare, music_clip, prepare_table, reference_codes
from musicgen_jax.codec.dac import model as dac_model
from musicgen_jax.config import DAC_44KHZ, DacConfig
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.data import Settings
from tests.codec.descript_api import descript_checkpoint, descript_dac_class
from tests.codec.test_dac import music, randomize

SECTIONS = ("codec", "prepare")
# the released 44.1 kHz model, and a narrow one of the same strides for the test of this script
CONFIGS = {
    "44khz": DAC_44KHZ,
    "tiny": DacConfig(encoder_dim=4, decoder_dim=16, n_codebooks=2, codebook_size=16, codebook_dim=2),
}
SIZES = {"44khz": "real size", "tiny": "tiny test size"}


def titles(config_name: str) -> dict[str, str]:
    """The section titles of a config: the real-size ones are those of RESULTS.md."""
    size = SIZES[config_name]
    return {
        "codec": f"## DAC codec (44.1 kHz, {size}, random weights)",
        "prepare": f"## DAC data preparation (44.1 kHz, {size}, random weights)",
    }


def build_descript(config: DacConfig, seed: int, path: Path) -> torch.nn.Module:
    """descript's `DAC(**config)`, eval mode, `randomize`d with `seed` (torch's init seeded with it too), saved as
    descript's checkpoint file at `path` (what `dac.utils.load_model` reads)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # descript's WNConv1d uses torch's deprecated `weight_norm`
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = descript_dac_class()(**config.to_dict()).eval()
    randomize(model, seed)
    descript_checkpoint(model, path)
    return model


def descript_encode(model: torch.nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """Codes `[B, K, T']` of `wav [B, 1, T]` as descript's `DAC.compress` computes them for one unchunked window
    (less its loudness normalization): `preprocess` (zero-pad on the right to whole frames), then `encode` (encoder
    and residual quantizer; it also returns z, the projected latents and the two losses, which descript always
    computes)."""
    with torch.inference_mode():
        return model.encode(model.preprocess(wav, model.sample_rate))[1]


def descript_decode(model: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Audio `[B, 1, T' * hop]` of `codes [B, K, T']`: `quantizer.from_codes` then `decode` (descript's
    `decompress` for one chunk, audiocraft's `DAC.decode`)."""
    with torch.inference_mode():
        return model.decode(model.quantizer.from_codes(codes)[0])


def dac_version() -> str:
    """The extra versions text of `machine_lines`: ", descript-audio-codec <version>"."""
    return f", descript-audio-codec {importlib.metadata.version('descript-audio-codec')}"


# --- codec --------------------------------------------------------------------------------------------


def run_codec(config: DacConfig, seconds: float, runs: int, seed: int = 0) -> dict:
    """Build both models on the same weights, then time encode and decode of `seconds` of `music` (batch 1) in
    alternation (`time_pair`), and compare the codes and the decoded audio of both."""
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_descript(config, seed, Path(tmp) / "weights.pth")
        codec = load_codec(Path(tmp) / "weights.pth")
    sample_rate = codec.sample_rate
    wav = music(round(seconds * sample_rate), sample_rate, seed)
    wav_torch = torch.from_numpy(wav)
    print(f"input [1, 1, {wav.shape[-1]}] ({seconds:g} s at {sample_rate} Hz)", flush=True)

    print("encode ...", flush=True)
    counters = cpu_counters()
    encode = time_pair(
        lambda: jax.block_until_ready(codec.encode(wav)), lambda: descript_encode(model, wav_torch), runs
    )
    codes_torch = encode["torch_out"]
    codes_ref, codes_jax = codes_torch.numpy(), np.asarray(encode["jax_out"])
    print("decode ...", flush=True)
    decode = time_pair(
        lambda: jax.block_until_ready(codec.decode(codes_ref)), lambda: descript_decode(model, codes_torch), runs
    )
    others = other_load(counters)
    audio_ref, audio_jax = decode["torch_out"].numpy(), np.asarray(decode["jax_out"])
    if codes_jax.shape != codes_ref.shape or audio_jax.shape != audio_ref.shape:
        raise RuntimeError(
            f"shape mismatch: codes {codes_jax.shape} vs {codes_ref.shape}, "
            f"audio {audio_jax.shape} vs {audio_ref.shape}"
        )
    return {
        "config": config,
        "params": sum(int(np.size(x)) for x in jax.tree.leaves(codec.params)),
        "seconds": seconds,
        "samples": wav.shape[-1],
        "runs": runs,
        "threads": threads,
        "load": (load_before, load_average()),
        "others": others,
        "times": {"encode": encode, "decode": decode},
        "codes_equal": float(np.mean(codes_jax == codes_ref)),
        "codes_shape": codes_ref.shape,
        "distinct_codes": len(np.unique(codes_ref[:, 0])),
        "audio_rel_l2": rel_l2(audio_jax, audio_ref),
        "audio_shape": audio_ref.shape,
    }


CODEC_NOTES = (
    "- Timed, encode: JAX `DacCodec.encode(wav)` (numpy in, zero-pad to whole frames, encoder, {k} quantizer "
    "stages, `block_until_ready` on the codes) against descript's `model.encode(model.preprocess(wav, 44100))` "
    "(the same pad, encoder and quantizer, whose `encode` also returns z, the projected latents and the two losses; "
    "weight norm recomputed from `weight_g` / `weight_v` at each call, as descript's model runs; JAX folds it into "
    "the kernels when loading)\n"
    "- Timed, decode: codes to audio, JAX `DacCodec.decode(codes)` against descript's "
    "`model.decode(model.quantizer.from_codes(codes)[0])` (descript's `decompress` without its chunking, audiocraft's "
    "`DAC.decode`); both decode the PyTorch codes. descript's `compress` / `decompress` (audiotools signals, loudness "
    "normalization, 1 s windows) are not used\n"
    "- Timing: median (min) over {runs} runs, JAX and PyTorch alternating, after a first call (JAX: compile+run, "
    "reported apart; PyTorch: warm-up, under `torch.inference_mode()`)"
)
COLUMNS = {
    "direction": "{}",
    "JAX median s": with_min(3),
    "JAX compile+run s": "{:.3f}",
    "PyTorch median s": with_min(3),
    "speed ratio (PyTorch/JAX)": "{:.2f}",
    "JAX real-time factor": "{:.4f}",
    "PyTorch real-time factor": "{:.4f}",
}


def verdict(ratios: dict[str, float]) -> str:
    """One plain sentence on the target, JAX at least as fast as descript's `dac`, from {direction: ratio}."""
    slower = [f"{d} ({r:.2f})" for d, r in ratios.items() if r < 1]
    if not slower:
        return "Target (JAX at least as fast as descript's `dac` on this CPU): met in both directions."
    return (
        "Target (JAX at least as fast as descript's `dac` on this CPU): not met, JAX is slower than descript's "
        f"PyTorch at {' and '.join(slower)} (speed ratio PyTorch/JAX below 1)."
    )


def report_codec(res: dict, command: str, title: str) -> str:
    """The codec section: provenance, what is timed, the agreement of both sides, one row per direction."""
    rows, ratios = [], {}
    for direction in ("encode", "decode"):
        first, jax_times = res["times"][direction]["jax"]
        jax_t, torch_t = median_min(jax_times), median_min(res["times"][direction]["torch"][1])
        ratios[direction] = torch_t[0] / jax_t[0]
        audio = res["seconds"]
        rows.append((direction, jax_t, first, torch_t, ratios[direction], jax_t[0] / audio, torch_t[0] / audio))
    config, (b, k, t) = res["config"], res["codes_shape"]
    kind = "the released 44.1 kHz model's" if config == DAC_44KHZ else "a narrow model's"
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            dac_version(),
            torch_mode="`torch.inference_mode()`",
            others=res["others"],
        ),
        f"- Codec: descript's `DAC` (`dac` package, imported through `tests/codec/descript_api.py`) with {kind} "
        f"arguments ({config.encoder_dim} / {config.decoder_dim} channels, {config.n_codebooks} codebooks of "
        f"{config.codebook_size}; {res['params'] / 1e6:.1f}M parameters once weight norm is folded), random "
        "weights (`randomize` of `tests/codec/test_dac.py`, seed 0), saved as descript's checkpoint file and read "
        "into JAX with `load_codec`",
        f"- Input: batch 1 x {res['seconds']:g} s mono at 44.1 kHz ({res['samples']} samples of `music`, notes and "
        f"noise); codes [{b}, {k}, {t}] (zero-padded to {t} whole frames of {config.hop_length}); decoded audio "
        f"{list(res['audio_shape'])}",
        CODEC_NOTES.format(k=k, runs=res["runs"]),
        f"- Same computation: {100 * res['codes_equal']:.4f}% of JAX codes equal PyTorch's ({res['distinct_codes']} "
        f"distinct first-stage codes); decoded audio relative L2 {res['audio_rel_l2']:.2e}",
    ]
    footnote = (
        f"{verdict(ratios)} Real-time factor: processing time / audio duration (below 1 is faster than real time)."
    )
    return section(title, command, facts, table(COLUMNS, rows), footnote)


# --- preparation --------------------------------------------------------------------------------------


def make_clips(folder: Path, files: int, seconds: float, sample_rate: int, seed: int = 0) -> list[str]:
    """Write `files` mono 16-bit WAV clips of `seconds` of `benchmarks.data.music_clip` at `sample_rate` into
    `folder` (DAC codes 44.1 kHz mono, so no resampling or down-mixing enters the time); their names."""
    names = []
    for i in range(files):
        names.append(f"clip{i:03d}.wav")
        soundfile.write(folder / names[-1], music_clip(seconds, sample_rate, 1, seed + i), sample_rate, "PCM_16")
    return names


def descript_reference(model: torch.nn.Module, config: DacConfig, settings: Settings, batch_size: int) -> dict:
    """`benchmarks.data.reference_codes` with descript's `DAC` (`descript_encode`), at DAC's fractional frame
    rate (`benchmarks.data.torch_reference` speaks transformers' `EncodecModel`)."""
    encode = lambda batch: descript_encode(model, batch).numpy()  # noqa: E731
    args = (config.sample_rate, config.hop_length, config.frame_rate)
    return reference_codes(encode, Path(settings.audio), settings, batch_size, *args)


def run_prepare(
    config: DacConfig,
    files: int,
    seconds: float,
    batch_size: int,
    segment_seconds: float,
    length_step: float = 1.0,
    seed: int = 0,
) -> dict:
    """The preparation section's measurements (see the module docstring). `length_step` is also the shortest
    segment kept (`Settings.min_seconds`; both 1 s by default)."""
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    import tensorflow  # noqa: F401 - what writing the shards imports, kept out of the first run's time
    import tensorflow_datasets  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, checkpoint = tmp / "audio", tmp / "weights.pth"
        folder.mkdir()
        clips = make_clips(folder, files, seconds, config.sample_rate, seed)
        model = build_descript(config, seed, checkpoint)
        settings = Settings(
            str(folder),
            str(checkpoint),
            segment_seconds=segment_seconds,
            valid_fraction=0.1,
            length_step=length_step,
            min_seconds=length_step,
        )
        measured = measure_prepare(
            settings,
            tmp,
            batch_size,
            dac_model._encode,
            lambda: descript_encode(model, torch.zeros(1, 1, config.sample_rate)),  # warm-up, 1 s
            lambda: descript_reference(model, config, settings, batch_size),
        )
    return {
        "config": config,
        "files": files,
        "seconds": seconds,
        "clips": clips,
        "batch_size": batch_size,
        "segment_seconds": segment_seconds,
        "length_step": length_step,
        "threads": threads,
        "load": (load_before, load_average()),
        **measured,
    }


PREPARE_NOTES = (
    "- Codec: descript's `DAC` as in the codec section (random weights, seed 0), its checkpoint file in a temporary "
    "folder is `Settings.codec` (`prepare` loads it with `load_codec`); the reference uses the same model object\n"
    "- Timing: one run each, in this order, in one process: musicgen_jax `prepare` end to end (list, read, encode, "
    "write the TFRecord shards, the TFDS metadata and `dataset.json`) into a fresh output folder, twice; then the "
    "descript reference (after a 1 s warm-up encode): `read_audio`, `segment_bounds` and descript's "
    "`model.encode(model.preprocess(batch, 44100))` under `torch.inference_mode()`, batched by length as `prepare` "
    "batches, nothing written (`benchmarks.data.torch_reference` is transformers' EnCodec only); tensorflow imported "
    "and clips and checkpoint written before the timing"
)


def report_prepare(res: dict, command: str, title: str) -> str:
    """The preparation section: provenance, the work, the agreement of the codes, one row per run."""
    import tensorflow

    lengths, batch = sorted(res["lengths"].items(), reverse=True), res["batch_size"]
    segments = ", ".join(f"{n} of {t} frames ({t / res['frame_rate']:.3f} s)" for t, n in lengths)
    splits = ", ".join(f"{s} {files} files / {examples} examples" for s, (files, examples) in res["splits"].items())
    compiled = [res[r]["compiled"] for r in ("first", "second")]
    step = res["length_step"]
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            f"{dac_version()}, tensorflow {tensorflow.__version__}, soundfile {soundfile.__version__}",
            torch_mode="`torch.inference_mode()`",
            others=res["others"],
        ),
        f"- Input: {res['files']} music-like clips of {res['seconds']:g} s (`benchmarks.data.music_clip`), mono "
        "16-bit WAV at 44.1 kHz, read at 44.1 kHz mono (`read_audio`: no resampling)",
        f"- Work: `Settings(segment_seconds={res['segment_seconds']:g}, length_step={step:g}, min_seconds={step:g}, "
        f"valid_fraction=0.1)`, batch size {batch}: {sum(res['lengths'].values())} segments: {segments} (the frame "
        f"rate {res['frame_rate']:.4f} is fractional, so lengths round to whole frames of "
        f"{res['config'].hop_length} samples), in {sum(-(-n // batch) for _, n in lengths)} encoder calls, "
        f"{sum(-n % batch for _, n in lengths)} padded rows in musicgen_jax's batches; {splits}; JAX encoder "
        f"compilations: {'n/a' if None in compiled else ' and '.join(map(str, compiled))} (first and second run)",
        PREPARE_NOTES,
        f"- descript reference: reading {res['ref']['read']:.2f} s, encoding {res['ref']['encode']:.2f} s",
        f"- Same computation: {100 * res['codes_equal']:.4f}% of the {res['codes_total']} codes of the prepared "
        f"dataset (`read_examples`, both splits) equal the descript reference's ({res['distinct_codes']} distinct "
        "first-stage codes)",
    ]
    footnote = (
        f"JAX second run / descript reference throughput: {res['ref']['wall'] / res['second']['wall']:.2f} (the JAX "
        "runs also write the dataset). Real-time factor: wall time / audio duration (below 1 is faster than real time)."
    )
    return section(title, command, facts, prepare_table(res, "descript `dac` reference"), footnote)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.dac", __doc__)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to measure")
    p.add_argument("--config", choices=CONFIGS, default="44khz", help="the DAC size (tiny: the test's; no --write)")
    p.add_argument("--seconds", type=float, default=10.0, help="codec: input length in seconds")
    p.add_argument("--runs", type=int, default=3, help="codec: timed runs per direction and framework")
    p.add_argument("--files", type=int, default=3, help="preparation: number of clips")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="preparation: length of each clip, seconds")
    p.add_argument("--batch-size", type=int, default=3, help="preparation: segments per encoder call")
    p.add_argument("--segment-seconds", type=float, default=5.0, help="preparation: segment length, seconds")
    p.add_argument("--length-step", type=float, default=1.0, help="preparation: last segment's length unit, seconds")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or args.files < 1 or args.clip_seconds <= 0 or args.batch_size < 1:
        p.error("--seconds and --clip-seconds must be > 0, --runs, --files and --batch-size >= 1")
    if args.segment_seconds < 0 or args.length_step <= 0:
        p.error("--segment-seconds must be >= 0, --length-step > 0")
    if args.write and args.config != "44khz":
        p.error("--write records the real-size model only (--config 44khz)")
    config, title, command = CONFIGS[args.config], titles(args.config), command_line("benchmarks.dac", argv)
    if "codec" in args.sections:
        res = run_codec(config, args.seconds, args.runs)
        publish(report_codec(res, command, title["codec"]), args.write)
    if "prepare" in args.sections:
        res = run_prepare(
            config, args.files, args.clip_seconds, args.batch_size, args.segment_seconds, args.length_step
        )
        publish(report_prepare(res, command, title["prepare"]), args.write)


if __name__ == "__main__":
    main()
