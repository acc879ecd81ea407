"""Export a model to the format other libraries load:

    python -m musicgen_jax.export --checkpoint runs/mymodel --to hf exported/mymodel
    python -m musicgen_jax.export --checkpoint runs/mymodel --to audiocraft exported/mymodel-audiocraft

`--checkpoint`: a `train.py` run (its latest checkpoint's EMA weights, LoRA adapters merged into the
kernels), a converted directory, or anything else `MusicGen.get_pretrained` takes. `--to hf`: the
directory transformers' `MusicgenForConditionalGeneration.from_pretrained` (melody models:
`MusicgenMelodyForConditionalGeneration`) loads (`convert.hf_export`). `--to audiocraft`: `state_dict.bin`
and `compression_state_dict.bin` for audiocraft's `MusicGen.get_pretrained` (`convert.audiocraft_export`;
needs torch). Written atomically: OUT is either the whole export or left as it was.
"""

from __future__ import annotations

import argparse
import sys

TARGETS = ("hf", "audiocraft")


def export(checkpoint: str, to: str, out: str, fmt: str = "auto", max_shard_size: str | None = None):
    """Write `checkpoint` in format `to` to `out`; returns the output directory."""
    from musicgen_jax.convert import audiocraft_export, hf_export
    from musicgen_jax.musicgen import load_components

    if to not in TARGETS:
        raise ValueError(f"unknown export format {to!r}: one of {', '.join(TARGETS)}")
    components = load_components(checkpoint, fmt)
    if to == "audiocraft":
        return audiocraft_export.export_audiocraft(components, out)
    return hf_export.export_hf(components, out, max_shard_size or hf_export.MAX_SHARD_SIZE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a train.py run, a converted directory, a hub id or PyTorch checkpoint directory",
    )
    parser.add_argument("--to", required=True, choices=TARGETS, help="the format to write")
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
        out = export(args.checkpoint, args.to, args.out, args.format, args.max_shard_size)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
