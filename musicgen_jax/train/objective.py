"""audiocraft's objective metrics of a model on a token dataset's split (what `evaluate --objective` runs, and
`config.objective_every` during training): for each of the split's first examples, a clip generated with
audiocraft's evaluation settings (its generation defaults: sampling, top-k 250, guidance 3; the example's
length and description; melody models follow the chroma of the example's audio, as audiocraft conditions
on the reference), scored against the example's audio (`metrics.suite`): its source file's stretch where the
dataset's audio folder still has it, else its codes decoded, said in "reference_audio".

The clips, their references and descriptions are written under `out` (`generated/`, `reference/`,
`descriptions.jsonl`), which `python -m musicgen_jax.metrics` reads again. On a mesh of several processes
all of them generate (the model is split over them) and process 0 writes and scores.
"""

from __future__ import annotations

import itertools
import json
import os

import jax
import numpy as np
from tqdm import tqdm

from musicgen_jax import audio, fileio
from musicgen_jax.data import shards
from musicgen_jax.metrics import METRICS, ROUNDS, suite
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.train.samples import EMAModel

OBJECTIVE = "objective"


def default_metrics(melody: bool) -> list[str]:
    """Every metric of a model's evaluation: the chroma cosine only for melody models."""
    return [m for m in METRICS if m != "chroma" or melody]


def reference_audio(info: dict, example: dict, seconds: float) -> tuple[np.ndarray, int] | None:
    """`([C, T], rate)` of an example's stretch of its source file, or None when the dataset's audio folder
    (`settings.audio` of its dataset.json) no longer has the file."""
    settings = info.get("settings") or {}
    if not settings.get("audio"):
        return None
    file = fileio.path(settings["audio"]) / example["path"]
    if not fileio.exists(file):
        return None
    wav, rate = audio.read_audio(file)
    start, length = round(example["segment"] * settings["segment_seconds"] * rate), round(seconds * rate)
    clip = wav[:, start : start + length]
    return (clip, rate) if clip.shape[-1] == length else None


def score(
    musicgen: MusicGen,
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "valid",
    num_samples: int = 16,
    metrics: list[str] | None = None,
    sources: suite.Sources | None = None,
    batch_size: int = 8,
    seed: int = 0,
    rounds: int | None = None,
    progress: bool = False,
    networks: dict | None = None,
) -> dict | None:
    """`{"data", "split", "reference_audio", "out", "clips", "metrics", "skipped"}` (`suite.Run.compute`) of
    `musicgen` on the first `num_samples` examples of `split`; None on processes other than 0. `metrics`:
    None for all the model's (chroma only for melody models). `networks`: metric networks already loaded
    (`suite.load_networks`); the others are loaded first, so that a bad source fails before generating."""
    info = shards.dataset_info(data_dir)
    examples = list(itertools.islice(shards.read_examples(data_dir, split), num_samples))
    if not examples:
        raise ValueError(f"{data_dir}: the {split} split has no examples")
    writer, sources = jax.process_index() == 0, sources or suite.Sources()
    melodic = musicgen.lm_config.melody
    metrics = default_metrics(melodic) if metrics is None else metrics
    if writer:
        networks = {
            **suite.load_networks([m for m in metrics if m not in (networks or {})], sources),
            **(networks or {}),
        }
    frame_rate, out = info["codec"]["frame_rate"], fileio.path(out)
    names = [f"{i:05d}_{fileio.slug(e['path'], 30)}_{e['segment']}" for i, e in enumerate(examples)]
    descriptions = [e["metadata"].get("description") or "" for e in examples]
    references, decoded = [], 0
    for example in examples:
        found = reference_audio(info, example, example["codes"].shape[-1] / frame_rate)
        if found is None:  # every process decodes: the codec may be split over them
            found = musicgen.generate_audio(example["codes"][None].astype(np.int32))[0], musicgen.sample_rate
            decoded += 1
        references.append(found)
    generated = _generate(musicgen, examples, descriptions, references, frame_rate, batch_size, seed, progress)
    if not writer:
        return None
    for name, (wav, rate), clip in zip(names, references, generated):
        audio.write_audio(out / "reference" / f"{name}.wav", wav, rate, strategy="none")
        audio.write_audio(out / "generated" / f"{name}.wav", clip, musicgen.sample_rate, strategy="none")
    lines = [json.dumps({"name": n, "description": d}) + "\n" for n, d in zip(names, descriptions)]
    fileio.write_text(out / "descriptions.jsonl", "".join(lines))
    melody = out / "reference" if melodic else None
    rounds = ROUNDS if rounds is None else rounds
    run = suite.Run(out / "generated", out / "reference", out / "descriptions.jsonl", melody, sources, rounds, networks)
    return {
        "data": str(data_dir),
        "split": split,
        "reference_audio": f"codes decoded ({decoded} of {len(examples)})" if decoded else "source files",
        "out": str(out),
        **run.compute(metrics),
    }


def _generate(musicgen, examples, descriptions, references, frame_rate, batch_size, seed, progress) -> list:
    """One clip `[C, T]` per example, batched by length; seeds `seed + index`."""
    clips: list = [None] * len(examples)
    by_length: dict[int, list[int]] = {}
    for i, example in enumerate(examples):
        by_length.setdefault(example["codes"].shape[-1], []).append(i)
    bar = tqdm(total=len(examples), desc="generating", unit="clip", disable=not progress)
    for frames, indices in sorted(by_length.items()):
        musicgen.set_generation_params(duration=frames / frame_rate)
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            texts, seeds = [descriptions[i] or None for i in batch], [seed + i for i in batch]
            if musicgen.lm_config.melody:
                melodies = [audio.resample(references[i][0], references[i][1], musicgen.sample_rate) for i in batch]
                wavs = musicgen.generate_with_chroma(texts, melodies, musicgen.sample_rate, seed=seeds)
            else:
                wavs = musicgen.generate(texts, seed=seeds)
            for i, wav in zip(batch, wavs):
                clips[i] = wav
            bar.update(len(batch))
    bar.close()
    return clips


class Objective:
    """`__call__(step, ema) -> {"objective_fad": ..., ...}`: the metrics (their values) of the EMA weights at
    `step` on the valid split, the clips kept in `WORKDIR/objective/STEP/` ({} on processes other than 0)."""

    def __init__(self, model: EMAModel, data_dir, workdir, num_samples: int, metrics, sources, seed: int):
        self.model, self.data_dir, self.root = model, data_dir, fileio.path(workdir) / OBJECTIVE
        self.metrics = default_metrics(model.lm_config.melody) if metrics is None else metrics
        self.num_samples, self.sources, self.seed = num_samples, sources, seed
        # loaded once, at the start of the run (a bad source fails before training), by the process that scores
        self.networks = suite.load_networks(self.metrics, sources) if jax.process_index() == 0 else {}

    def __call__(self, step: int, ema) -> dict:
        folder = self.root / str(step)
        fileio.remove_tree(folder)  # what a run killed while scoring this step left
        result = score(
            self.model(step, ema),
            self.data_dir,
            folder,
            "valid",
            self.num_samples,
            self.metrics,
            self.sources,
            seed=self.seed,
            rounds=0,
        )
        if result is None:
            return {}
        fileio.save_json(folder / "metrics.json", result)
        return {f"objective_{name}": value["value"] for name, value in result["metrics"].items()}
