"""Synthetic token datasets laid out as `prepare` writes them, for the pipeline and training tests.

Codes are distinct per (example, codebook, frame) (`code_value`), so that a crop tells where it came from;
the recorded codec runs at `SAMPLE_RATE` with `FRAME_RATE` frames per second (640 samples a frame, the
32 kHz EnCodec's), and chroma, when asked for, has the default `ChromaConfig`'s frames of a segment.
"""

from __future__ import annotations

import numpy as np

from musicgen_jax.chroma import num_frames
from musicgen_jax.config import DATASET_INFO_FILE, ChromaConfig
from musicgen_jax.data import shards
from musicgen_jax.data.prepare import Settings, chroma_info
from musicgen_jax.fileio import save_json

K = 4
DESCRIPTION = "calm piano melody"
SAMPLE_RATE, FRAME_RATE = 32000, 50
CHROMA = ChromaConfig()


def code_value(example: int, k: int, t: np.ndarray) -> np.ndarray:
    """Distinct codes per (example, codebook, frame), so that a crop tells where it came from."""
    return (example * 89 + k * 2003 + t * 7) % 2048


def chroma_frames(code_frames: int) -> int:
    """Chroma frames of a segment of `code_frames` code frames."""
    return num_frames(code_frames * SAMPLE_RATE // FRAME_RATE, CHROMA)


def write_dataset(directory, lengths, text_dim=None, valid=0, codec=None, chroma=False, stereo=False) -> list[dict]:
    """A token dataset as `prepare` lays it out: 3 train shards (one empty), metadata on every third
    (with `text_dim`, random "T5 states" of 2 + i % 7 tokens for those, none for the others); the last
    `valid` examples form the valid split (one shard); `codec`: the source recorded as its codec; with
    `chroma`, random chroma bins (uint8 `[chroma_frames(T)]`) per example and dataset.json's chroma record;
    `stereo`: 2 K interleaved codebooks of a stereo codec.
    Returns the examples (dicts as `shards.write_shard` takes them), train then valid."""
    examples, k_total = [], 2 * K if stereo else K
    for i, n in enumerate(lengths):
        codes = np.stack([code_value(i, k, np.arange(n)) for k in range(k_total)]).astype(np.int16)
        meta = {
            name: None
            for name in ("title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "instrument")
        }
        if i % 3 == 0:
            meta.update(description=DESCRIPTION, genre="jazz", bpm=90.0, moods=["calm"], key="c minor")
        examples.append({"codes": codes, "path": f"f{i:02d}.wav", "segment": 0, "metadata": meta})
        if text_dim:
            rows = 2 + i % 7 if meta["description"] else 0
            examples[-1]["text_embedding"] = np.random.default_rng(i).standard_normal((rows, text_dim), np.float32)
        if chroma:
            bins = np.random.default_rng([i, 1]).integers(0, CHROMA.bins, chroma_frames(n))
            examples[-1]["chroma"] = bins.astype(np.uint8)
    train, held_out = examples[: len(examples) - valid], examples[len(examples) - valid :]
    groups = [train[:10], [], train[10:]]
    for i, group in enumerate(groups):
        shards.write_shard(shards.shard_path(directory, "train", i, 3), k_total, group, text_dim, chroma)
        shards.write_shard(
            shards.shard_path(directory, "valid", i, 3), k_total, held_out if i == 0 else [], text_dim, chroma
        )
    shards.write_tfds_metadata(
        directory,
        k_total,
        {"train": [len(g) for g in groups], "valid": [len(held_out), 0, 0]},
        {"train": 0, "valid": 0},
        "test",
        text_dim,
        chroma,
    )
    save_json(
        directory / DATASET_INFO_FILE,
        {
            "num_codebooks": k_total,
            "card": 2048,
            "splits": {"train": {"examples": len(train)}, "valid": {"examples": len(held_out)}},
            "codec": {
                "source": codec and str(codec),
                "stereo": stereo,
                "sample_rate": SAMPLE_RATE,
                "frame_rate": FRAME_RATE,
            },
            "chroma": chroma_info(Settings("", "", chroma=chroma)),
        },
    )
    return examples
