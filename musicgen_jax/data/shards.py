"""The on-disk token dataset: TFRecord shards with TFDS metadata, and reading it back.

A prepared `DATA_DIR` is a TFDS dataset (`tfds.builder_from_directory(DATA_DIR)` loads it) plus this
project's `dataset.json`, so that any tf.data / TFDS reader can use it. One example is one audio segment:
its codes and music metadata (`features` lists the fields), written by `prepare` (`write_shard`) and read
back by the training pipeline (`read_examples`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
from etils import epath

from musicgen_jax.config import DATASET_INFO_FILE
from musicgen_jax.data.metadata import FIELDS
from musicgen_jax.extras import require
from musicgen_jax.fileio import atomic_file, path, read_json, reporting

DATASET_NAME = "musicgen_tokens"
SPLITS = ("train", "valid")
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
FORMAT = "musicgen_jax.tokens"
LIST_FIELDS = ("moods", "keywords")
FLOAT_FIELDS = ("bpm",)


def host_tensorflow():
    """TensorFlow, kept off the accelerators (as big_vision does): tf.data and TFDS run on the host CPU,
    the GPUs / TPUs belong to JAX."""
    tf = require("tensorflow", "train", "token datasets (tf.data)")
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialized (by an earlier call or the user): leave it as it is
        pass
    return tf


def features(num_codebooks: int, text_dim: int | None = None, chroma: bool = False):
    """The TFDS `FeaturesDict` of one example with `num_codebooks` codebooks (and T5 hidden states of
    width `text_dim`, when given; and chroma bins with `chroma`):

    - `codes` int16 `[K, T]`: the codec's codes of the segment (K codebooks, stereo interleaved
      [L0, R0, L1, R1, ...]);
    - `path` (the file, relative to the audio root) and `segment` (its index in the file);
    - the music metadata fields of `metadata.FIELDS`, normalized as audiocraft's `MusicInfo`: strings
      (`""` when missing), `bpm` float64 (NaN when missing), `moods` / `keywords` string lists;
    - with precomputed text (`prepare --text-encoder`), `text_embedding` float32 `[N, D]`: the frozen T5's
      hidden states of the description's N tokens (N = 0 without a description);
    - with chroma (`prepare --chroma`), `chroma` uint8 `[Fc]`: the argmax bin of each frame of the segment's
      one-hot chroma (`musicgen_jax.chroma`, Fc = 1 + max(samples, n_fft) // hop), what melody models are
      conditioned on in training (`dataset.json`'s `chroma` records its settings).
    """
    tfds = require("tensorflow_datasets", "train", "token datasets (TFDS)")

    spec = {
        "codes": tfds.features.Tensor(shape=(num_codebooks, None), dtype=np.int16),
        "path": tfds.features.Text(),
        "segment": tfds.features.Scalar(dtype=np.int32),
    }
    for name in FIELDS:
        if name in LIST_FIELDS:
            spec[name] = tfds.features.Sequence(tfds.features.Text())
        elif name in FLOAT_FIELDS:
            spec[name] = tfds.features.Scalar(dtype=np.float64)
        else:
            spec[name] = tfds.features.Text()
    if text_dim is not None:
        spec["text_embedding"] = tfds.features.Tensor(shape=(None, text_dim), dtype=np.float32)
    if chroma:
        spec["chroma"] = tfds.features.Tensor(shape=(None,), dtype=np.uint8)
    return tfds.features.FeaturesDict(spec)


def shard_path(data_dir: str | os.PathLike, split: str, index: int, count: int) -> epath.Path:
    """Where shard `index` of `count` of `split` (`SPLITS`) lives (TFDS's file naming):
    `musicgen_tokens-{split}.tfrecord-{i:05d}-of-{n:05d}`, one per work unit of `prepare`, possibly empty."""
    return path(data_dir) / f"{DATASET_NAME}-{split}.tfrecord-{index:05d}-of-{count:05d}"


def _stored(example: dict) -> dict:
    """An example as `features` serializes it: None metadata as "", NaN or []."""
    out = {"codes": np.asarray(example["codes"], np.int16), "path": example["path"], "segment": example["segment"]}
    for name in FIELDS:
        value = example["metadata"].get(name)
        if name in LIST_FIELDS:
            out[name] = list(value or [])
        elif name in FLOAT_FIELDS:
            out[name] = np.float64("nan" if value is None else value)
        else:
            out[name] = value or ""
    if "text_embedding" in example:
        out["text_embedding"] = np.asarray(example["text_embedding"], np.float32)
    if "chroma" in example:
        out["chroma"] = np.asarray(example["chroma"], np.uint8)
    return out


def write_shard(
    where: str | os.PathLike,
    num_codebooks: int,
    examples: list[dict],
    text_dim: int | None = None,
    chroma: bool = False,
) -> int:
    """Write `examples` (dicts with `codes [K, T]`, `path`, `segment`, `metadata`, `text_embedding [N, D]`
    when `text_dim` is given, `chroma [Fc]` with `chroma`) as one TFRecord file, atomically (`atomic_file`:
    a shard that was being written when the process died never exists), with the same bytes for the same
    examples in every process. Returns the file's size in bytes."""
    tf = host_tensorflow()

    spec = features(num_codebooks, text_dim, chroma)
    with atomic_file(where) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for example in examples:  # protobuf map order varies between processes; sorted keys do not
                record = tf.train.Example.FromString(spec.serialize_example(_stored(example)))
                writer.write(record.SerializeToString(deterministic=True))
        return tmp.stat().st_size


def write_tfds_metadata(
    data_dir: str | os.PathLike,
    num_codebooks: int,
    shard_lengths: dict[str, list[int]],
    shard_bytes: dict[str, int],
    description: str,
    text_dim: int | None = None,
    chroma: bool = False,
) -> None:
    """TFDS's `dataset_info.json` and `features.json` for the shards already in `data_dir` (so that
    `tfds.builder_from_directory(data_dir)` loads them)."""
    tfds = require("tensorflow_datasets", "train", "token datasets (TFDS)")

    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths[split], num_bytes=shard_bytes[split])
        for split in SPLITS
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=str(path(data_dir)),
        features=features(num_codebooks, text_dim, chroma),
        split_infos=split_infos,
        filename_template=FILENAME_TEMPLATE,
        description=description,
        check_data=False,
    )


def _loaded(record: dict) -> dict:
    """A TFDS numpy record -> the example dict of `read_examples`."""
    metadata = {}
    for name in FIELDS:
        value = record[name]
        if name in LIST_FIELDS:
            metadata[name] = [v.decode() for v in value] or None
        elif name in FLOAT_FIELDS:
            metadata[name] = None if math.isnan(value) else float(value)
        else:
            metadata[name] = value.decode() or None
    example = {
        "codes": record["codes"],
        "path": record["path"].decode(),
        "segment": int(record["segment"]),
        "metadata": metadata,
    }
    if "text_embedding" in record:
        example["text_embedding"] = record["text_embedding"]
    if "chroma" in record:
        example["chroma"] = record["chroma"]
    return example


def _info_path(data_dir: str | os.PathLike) -> epath.Path:
    """Where the `dataset.json` of a complete prepared dataset is; ValueError when there is none."""
    info = path(data_dir) / DATASET_INFO_FILE
    with reporting(info):
        complete = info.is_file()
    if not complete:
        raise ValueError(
            f"{data_dir}: not a prepared dataset (no {DATASET_INFO_FILE}); prepare it with "
            f"`python -m musicgen_jax.data.prepare`, or finish it with `--merge`"
        )
    return info


def dataset_info(data_dir: str | os.PathLike) -> dict:
    """The `dataset.json` of a complete prepared dataset (ValueError when there is none): its codec
    (`codec`, with `sample_rate` and `frame_rate`), `text_encoder` and `chroma` (None, or `bins`, `n_fft`,
    `hop_length`, `sample_rate` and `stems`: whether the chroma is of Demucs' melody stems), splits, etc."""
    return read_json(_info_path(data_dir))


def part_bounds(total: int, part: tuple[int, int]) -> tuple[int, int]:
    """`[start, end)` of part `part = (i, n)` of `total` examples: contiguous, disjoint, sizes within one."""
    index, count = part
    if not 0 <= index < count:
        raise ValueError(f"invalid part {index} of {count}")
    return index * total // count, (index + 1) * total // count


def read_examples(data_dir: str | os.PathLike, split: str = "train", part: tuple[int, int] = (0, 1)) -> Iterator[dict]:
    """The examples of a prepared dataset's `split`, in a stable order (shard by shard, in each the
    files in path order and their segments in order): dicts with numpy `codes` int16 `[K, T]`, `path`,
    `segment`, `metadata` (a dict over `metadata.FIELDS`, None where missing) and, in a dataset prepared
    with precomputed text, `text_embedding` float32 `[N, D]`, with chroma, `chroma` uint8 `[Fc]`.
    `part = (i, n)` reads only the examples `part_bounds` gives the i-th of n parts."""
    host_tensorflow()
    tfds = require("tensorflow_datasets", "train", "token datasets (TFDS)")

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; a prepared dataset has {', '.join(SPLITS)}")
    _info_path(data_dir)
    builder = tfds.builder_from_directory(str(path(data_dir)))
    start, end = part_bounds(builder.info.splits[split].num_examples, part)
    if start == end:
        return
    dataset = builder.as_dataset(split=f"{split}[{start}:{end}]", shuffle_files=False)
    for record in tfds.as_numpy(dataset):
        yield _loaded(record)
