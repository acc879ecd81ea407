"""The debug model learns: on two clips bound to two prompts its loss falls by more than half, and each
prompt then generates (greedy, with guidance) tokens closer to its own clip than to the other."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from musicgen_jax.data import shards
from musicgen_jax.fileio import save_json
from tests.train.test_run import REPO, command

FRAMES = 24
PROMPTS = ("calm piano melody", "energetic rock song with electric guitars and drums")


def clip(which: int) -> np.ndarray:
    """Two distinct, learnable 4-codebook clips of 24 frames."""
    t, k = np.arange(FRAMES)[None, :], np.arange(4)[:, None]
    return ((t * 3 + k) % 40 + 10 if which == 0 else (t * 5 + 2 * k) % 60 + 700).astype(np.int16)


@pytest.mark.e2e
def test_the_debug_model_learns_two_clips_and_follows_its_text(inputs, tmp_path):
    data = tmp_path / "data"
    empty = {name: None for name in ("title", "artist", "key", "bpm", "genre", "moods", "keywords", "instrument")}
    examples = [
        {"codes": clip(i), "path": f"clip{i}.wav", "segment": 0, "metadata": {**empty, "description": p}}
        for i, p in enumerate(PROMPTS)
    ]
    shards.write_shard(shards.shard_path(data, "train", 0, 1), 4, examples)
    shards.write_shard(shards.shard_path(data, "valid", 0, 1), 4, [])
    shards.write_tfds_metadata(data, 4, {"train": [2], "valid": [0]}, {"train": 0, "valid": 0}, "two clips")
    codec = json.loads((inputs[0] / "dataset.json").read_text())["codec"]
    save_json(
        data / "dataset.json",
        {
            "num_codebooks": 4,
            "card": 2048,
            "codec": codec,
            "splits": {"train": {"examples": 2}, "valid": {"examples": 0}},
        },
    )
    workdir = tmp_path / "run"
    subprocess.run(
        command(
            (data, inputs[1]),
            workdir,
            "--config.total_steps=150",
            "--config.eval_every=0",
            "--config.word_dropout=0",
            "--config.checkpoint_every=150",
            "--config.log_every=10",
        ),
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] / 2, losses

    from musicgen_jax.musicgen import MusicGen

    model = MusicGen.get_pretrained(str(workdir))
    model.set_generation_params(use_sampling=False, duration=FRAMES / 50, cfg_coef=3.0)
    tokens = np.asarray(model.generate_tokens(list(PROMPTS)))
    assert tokens.shape == (2, 4, FRAMES)
    for i in range(2):
        own, other = (float(np.mean(tokens[i] == clip(j))) for j in (i, 1 - i))
        assert own > other + 0.3, (i, own, other)
