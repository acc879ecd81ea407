"""`musicgen-metrics` / `python -m musicgen_jax.metrics`: objective metrics of a folder of generated clips,
as audiocraft computes them (FAD, KLD, CLAP text consistency, melody chroma cosine), printed and written as
JSON with each metric's bootstrap 95% interval and per-clip values (`musicgen_jax.metrics.suite`).

    musicgen-metrics --generated out/ --reference data/audio/ --descriptions prompts.jsonl --out metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys

from musicgen_jax.metrics import METRICS, NEEDS, ROUNDS


def add_source_arguments(parser) -> None:
    """The metric networks' weights (`suite.Sources`), as options."""
    released = "default: the released checkpoint audiocraft uses"
    parser.add_argument("--vggish", help=f"torchvggish checkpoint (FAD; {released})")
    parser.add_argument("--passt", help=f"hear21passt 20 s checkpoint (KLD; {released})")
    parser.add_argument("--clap", help=f"laion_clap .pt or transformers ClapModel (CLAP text consistency; {released})")
    parser.add_argument("--clap-tokenizer", help="RoBERTa tokenizer files for a laion_clap .pt (default: roberta-base)")


def sources(args):
    """`suite.Sources` of the options given (the released checkpoints for the others)."""
    from musicgen_jax.metrics import suite

    given = {name: getattr(args, name) for name in ("vggish", "passt", "clap", "clap_tokenizer")}
    return suite.Sources(**{name: value for name, value in given.items() if value is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.metrics",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--generated", required=True, help="folder of generated clips (a path or gs:// URL)")
    parser.add_argument("--reference", help="folder of reference clips of the same names (FAD, KLD)")
    parser.add_argument(
        "--descriptions",
        help="text of each clip (CLAP): a .jsonl of {name, description}, a text file of one line per clip in "
        "name order; default: each generated clip's sidecar .json",
    )
    parser.add_argument("--melody", help="folder of the melodies of the same names (chroma cosine)")
    parser.add_argument(
        "--metrics",
        help=f"comma-separated, of {','.join(METRICS)}; default: those whose inputs are given",
    )
    add_source_arguments(parser)
    parser.add_argument("--bootstrap", type=int, default=ROUNDS, help="draws for the 95%% intervals (0: no intervals)")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from musicgen_jax.fileio import save_json

    if args.bootstrap < 0:
        parser.error("--bootstrap must be 0 or more")
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            parser.error(f"unknown metrics {', '.join(unknown)} (known: {', '.join(METRICS)})")
    else:
        given = {"reference": args.reference, "melody": args.melody, "descriptions": args.descriptions}
        metrics = [m for m in METRICS if given[NEEDS[m]] is not None]
        if not metrics:
            parser.error("no metric has its inputs: give --reference, --melody or --descriptions (or --metrics)")
    from musicgen_jax.metrics import suite

    try:
        run = suite.Run(args.generated, args.reference, args.descriptions, args.melody, sources(args), args.bootstrap)
        result = run.compute(metrics)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        save_json(args.out, result)
    return 0
