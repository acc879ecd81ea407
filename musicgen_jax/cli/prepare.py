"""`musicgen-prepare` / `python -m musicgen_jax.data.prepare`: audio files -> a token dataset
(`musicgen_jax.data.prepare`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from musicgen_jax.audio import AudioError
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.config import DATASET_INFO_FILE
from musicgen_jax.data.prepare import Settings, merge, prepare
from musicgen_jax.extras import MissingExtraError
from musicgen_jax.fileio import path

# the module (its docstring describes the command): `musicgen_jax.data.prepare` as an attribute is the
# package's `prepare` function
preparing = importlib.import_module("musicgen_jax.data.prepare")


def summary(info: dict, out) -> str:
    """One line about a completed dataset."""
    splits = ", ".join(
        f"{s} {v['examples']} examples / {v['files']} files / {v['hours']:.3f} h" for s, v in info["splits"].items()
    )
    return f"{out}: {splits}; {len(info['skipped'])} of {info['files']} files skipped (see {DATASET_INFO_FILE})"


def _part(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m musicgen_jax.data.prepare",
        description=preparing.__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--audio",
        help="folder of wav/flac/mp3/ogg files (recursive; sidecar .json metadata) "
        "or an audiocraft-style .jsonl / .jsonl.gz manifest",
    )
    p.add_argument(
        "--codec",
        help="codec source: anything load_codec takes (an EnCodec, DAC or MusicGen checkpoint, hub id or path; "
        "dac_44khz, dac_24khz, dac_16khz; audiocraft's //pretrained/NAME; stereo MusicGen checkpoints code stereo)",
    )
    p.add_argument("--out", help="output dataset folder or URL (re-running the same command resumes)")
    p.add_argument("--merge", metavar="DATA_DIR", help="only write the metadata of DATA_DIR, whose parts are all done")
    defaults = Settings("", "")
    p.add_argument(
        "--segment-seconds",
        type=float,
        default=defaults.segment_seconds,
        help="cut files into segments of this length (0: whole files)",
    )
    p.add_argument(
        "--valid-fraction", type=float, default=defaults.valid_fraction, help="fraction of files in the valid split"
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the train / valid split")
    p.add_argument(
        "--files-per-shard",
        type=int,
        default=defaults.files_per_shard,
        help="files per work unit (one shard per split)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=defaults.min_seconds,
        help="drop last segments (and skip files) shorter than this",
    )
    p.add_argument(
        "--length-step",
        type=float,
        default=defaults.length_step,
        help="last segments are cut down to a multiple of this (one compiled encoder per length)",
    )
    p.add_argument(
        "--text-encoder",
        metavar="SRC",
        help="also store the frozen T5's hidden states of each description (a T5 or MusicGen checkpoint)",
    )
    p.add_argument(
        "--chroma",
        action="store_true",
        help="also store each segment's chroma (argmax bins) for melody models (needs a 32 kHz codec)",
    )
    p.add_argument(
        "--melody-stems",
        action="store_true",
        help="with --chroma: the chroma of Demucs' vocals + other stems, as audiocraft's melody models "
        "(needs the melody extra)",
    )
    p.add_argument(
        "--num-codebooks",
        type=int,
        default=None,
        help="code with the codec's first N codebooks (DAC; audiocraft's set_num_codebooks; default: all)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="segments per encoder call")
    p.add_argument(
        "--part",
        type=_part,
        default=(0, 1),
        metavar="I/N",
        help="prepare the I-th (0-based) of N disjoint parts; the last to finish writes the metadata",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge is not None:
        if args.audio or args.codec or args.out:
            parser.error("--merge DATA_DIR takes no --audio, --codec or --out")
    elif not (args.audio and args.codec and args.out):
        parser.error("--audio, --codec and --out are required (or --merge DATA_DIR)")
    try:
        if args.merge is not None:
            info, out = merge(args.merge), args.merge
        else:
            settings = Settings(
                str(path(args.audio)),
                args.codec,
                args.segment_seconds,
                args.valid_fraction,
                args.seed,
                args.files_per_shard,
                args.min_seconds,
                args.length_step,
                args.text_encoder,
                args.chroma,
                args.melody_stems,
                args.num_codebooks,
            )
            info, out = prepare(settings, args.out, args.batch_size, args.part, not args.no_progress), args.out
    except (ValueError, CheckpointError, AudioError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if info is None:
        print(
            f"part {args.part[0]}/{args.part[1]} done; the dataset is complete when every part is "
            f"(then the last part, or --merge {out}, writes its metadata)"
        )
    else:
        print(summary(info, out))
    return 0
