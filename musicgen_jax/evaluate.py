"""Cross-entropy and perplexity per codebook of a model on a split of a prepared token dataset, or (with
`--objective`) audiocraft's objective metrics of clips the model generates for the split's examples, as JSON:

    python -m musicgen_jax.evaluate --model facebook/musicgen-small --data data/mymusic [--split valid]
    python -m musicgen_jax.evaluate --model RUN --data data/mymusic --objective --num-samples 100

`--model`: anything `MusicGen.get_pretrained` takes (hub id, transformers or audiocraft directory,
converted directory, a `train.py` run: its EMA weights). The numbers are the trainer's evaluation
(`train.loop.Evaluation`): the first `--frames` frames of every example with its plain description, the
loss masked and averaged as in training (`train.loss`), each codebook's mean over the whole split.
"""

from __future__ import annotations

import sys

EVAL_FRAMES = 1500  # 30 s, the training crops
OBJECTIVE_SAMPLES = 16


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


def objective(
    model: str,
    data_dir: str,
    out: str,
    split: str = "valid",
    num_samples: int = OBJECTIVE_SAMPLES,
    metrics: list[str] | None = None,
    sources=None,
    batch_size: int = 8,
    fmt: str = "auto",
    progress: bool = False,
    seed: int = 0,
    rounds: int | None = None,
    musicgen=None,
) -> dict:
    """audiocraft's objective metrics of `model` (anything `MusicGen.get_pretrained` takes; `musicgen`: an
    already loaded one) on the first `num_samples` examples of `split` (`train.objective.score`), with
    "model" added."""
    from musicgen_jax.musicgen import MusicGen
    from musicgen_jax.train.objective import score

    musicgen = musicgen or MusicGen.get_pretrained(model, fmt)
    result = score(musicgen, data_dir, out, split, num_samples, metrics, sources, batch_size, seed, rounds, progress)
    return {"model": model, **result}


if __name__ == "__main__":
    from musicgen_jax.cli.evaluate import main

    sys.exit(main())
