"""Cross-entropy and perplexity per codebook of a model on a split of a prepared token dataset, as JSON:

    python -m musicgen_jax.evaluate --model facebook/musicgen-small --data data/mymusic [--split valid]

`--model`: anything `MusicGen.get_pretrained` takes (hub id, transformers or audiocraft directory,
converted directory, a `train.py` run: its EMA weights). The numbers are the trainer's evaluation
(`train.loop.Evaluation`): the first `--frames` frames of every example with its plain description, the
loss masked and averaged as in training (`train.loss`), each codebook's mean over the whole split.
"""

from __future__ import annotations

import argparse
import json
import sys

EVAL_FRAMES = 1500  # 30 s, the training crops


def evaluate(
    model: str,
    data_dir: str,
    split: str = "valid",
    batch_size: int = 8,
    frames: int = EVAL_FRAMES,
    text_length: int = 128,
    fmt: str = "auto",
    progress: bool = False,
) -> dict:
    """{"model", "data", "split", "examples", "frames", "eval_loss", "eval_ppl_k"...} of `model` on `split`."""
    from musicgen_jax.data import shards
    from musicgen_jax.musicgen import load_components
    from musicgen_jax.sharding import make_mesh
    from musicgen_jax.train.loop import Evaluation, check_dataset
    from musicgen_jax.train.trainer import StepConfig

    info = shards.dataset_info(data_dir)
    components = load_components(model, fmt)
    check_dataset(components, info, model, data_dir)
    if components.lm_config.num_codebooks != info["num_codebooks"]:
        raise ValueError(
            f"{model} predicts {components.lm_config.num_codebooks} codebooks, the dataset {data_dir} "
            f"holds {info['num_codebooks']} (mono and stereo)"
        )
    step_config = StepConfig(components.lm_config, components.text_encoder.config)
    text = components.text_encoder
    evaluation = Evaluation(
        data_dir, split, step_config, make_mesh(), text.tokenizer, text.params, batch_size, frames, (text_length,)
    )
    metrics = evaluation(components.lm_params, progress)
    return {
        "model": components.source,
        "data": str(data_dir),
        "split": split,
        "examples": info["splits"][split]["examples"],
        "frames": frames,
        **metrics,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="hub id, PyTorch / converted checkpoint directory, or run")
    parser.add_argument("--data", required=True, help="a dataset of `python -m musicgen_jax.data.prepare`")
    parser.add_argument("--split", default="valid", choices=("train", "valid"))
    parser.add_argument("--format", default="auto", choices=("auto", "hf", "audiocraft"), help="of a PyTorch --model")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (divisible by the devices)")
    parser.add_argument("--frames", type=int, default=EVAL_FRAMES, help="frames of each example (50 per second)")
    parser.add_argument("--text-length", type=int, default=128, help="T5 tokens per text (longer: truncated)")
    parser.add_argument("--out", help="write the JSON here (atomically) instead of printing it")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from musicgen_jax.fileio import save_json

    for name in ("batch_size", "frames", "text_length"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        result = evaluate(
            args.model,
            args.data,
            args.split,
            args.batch_size,
            args.frames,
            args.text_length,
            args.format,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        save_json(args.out, result)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
