"""`musicgen-export` / `python -m musicgen_jax.export`: a run or model in transformers' or audiocraft's format
(`musicgen_jax.export.export`)."""

from __future__ import annotations

import argparse
import sys

from musicgen_jax import export as exporting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.export",
        description=exporting.__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a train.py run, a converted directory, a hub id or PyTorch checkpoint directory",
    )
    parser.add_argument("--to", required=True, choices=exporting.TARGETS, help="the format to write")
    parser.add_argument(
        "--format", default="auto", choices=("auto", "hf", "audiocraft"), help="of a PyTorch --checkpoint"
    )
    parser.add_argument(
        "--max-shard-size", default="5GB", help="--to hf: safetensors shard size (transformers' default)"
    )
    parser.add_argument("out", help="the output directory (replaced if it exists)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = exporting.export(args.checkpoint, args.to, args.out, args.format, args.max_shard_size)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
