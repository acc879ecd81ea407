"""`musicgen-evaluate` / `python -m musicgen_jax.evaluate`: a model's cross-entropy and perplexity per codebook
on a split of a prepared token dataset, as JSON (`musicgen_jax.evaluate.evaluate`).

    musicgen-evaluate --model facebook/musicgen-small --data data/mymusic [--split valid]
"""

from __future__ import annotations

import argparse
import json
import sys

from musicgen_jax import evaluate as evaluation
from musicgen_jax.cli import metrics as metrics_cli
from musicgen_jax.extras import MissingExtraError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.evaluate",
        description=evaluation.__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="hub id, PyTorch / converted checkpoint directory, or run")
    parser.add_argument("--data", required=True, help="a dataset of `python -m musicgen_jax.data.prepare`")
    parser.add_argument("--split", default="valid", choices=("train", "valid"))
    parser.add_argument("--format", default="auto", choices=("auto", "hf", "audiocraft"), help="of a PyTorch --model")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (divisible by the devices)")
    parser.add_argument(
        "--frames", type=int, default=evaluation.EVAL_FRAMES, help="frames of each example (50 per second)"
    )
    parser.add_argument("--text-length", type=int, default=128, help="T5 tokens per text (longer: truncated)")
    parser.add_argument("--out", help="write the JSON here (atomically) instead of printing it")
    objective = parser.add_argument_group("objective metrics (audiocraft's FAD, KLD, CLAP, chroma cosine)")
    objective.add_argument(
        "--objective", action="store_true", help="generate for the split's examples and score the clips"
    )
    objective.add_argument("--num-samples", type=int, default=evaluation.OBJECTIVE_SAMPLES, help="examples to use")
    objective.add_argument("--metrics", help="comma-separated (default: all the model's: chroma for melody models)")
    objective.add_argument("--clips", help="keep the generated and reference clips here (default: a temporary folder)")
    objective.add_argument("--seed", type=int, default=0, help="of the first example's sampling (then +1 each)")
    objective.add_argument("--bootstrap", type=int, default=200, help="draws for the 95%% intervals (0: none)")
    metrics_cli.add_source_arguments(objective)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from musicgen_jax.fileio import save_json

    for name in ("batch_size", "frames", "text_length", "num_samples"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        if args.objective:
            result = _objective(args)
        else:
            result = evaluation.evaluate(
                args.model,
                args.data,
                args.split,
                args.batch_size,
                args.frames,
                args.text_length,
                args.format,
                progress=not args.no_progress,
            )
    except (OSError, ValueError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        save_json(args.out, result)
    else:
        print(json.dumps(result, indent=2))
    return 0


def _objective(args) -> dict:
    import tempfile

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    with tempfile.TemporaryDirectory(prefix="musicgen-objective-") as tmp:
        return evaluation.objective(
            args.model,
            args.data,
            args.clips or tmp,
            args.split,
            args.num_samples,
            metrics,
            metrics_cli.sources(args),
            args.batch_size,
            args.format,
            progress=not args.no_progress,
            seed=args.seed,
            rounds=args.bootstrap,
        )
