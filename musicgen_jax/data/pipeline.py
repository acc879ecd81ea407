"""The training input pipeline: batches of token crops and tokenized text from a prepared dataset.

Each host holds its part of a split in memory (`load_host_examples`) and every batch is a pure function of
`(seed, host, step)`, so the pipeline's position is one integer, the step: it goes into the trainer's
checkpoint (`TrainBatches.state()`) and resumes exactly, at a cost that does not depend on the step.
`train_batches` is the endless training stream, `eval_batches` one ordered pass (batch layout: `TrainBatches`).
Classifier-free guidance dropout (nullifying whole batches) belongs to the train step, not here.
"""

from __future__ import annotations

import dataclasses
import random
import threading

import numpy as np

from musicgen_jax.data import shards
from musicgen_jax.data.metadata import TextAugmentation


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What a pipeline's batches depend on (besides the dataset and the host)."""

    batch_size: int  # per host
    frames: int = 1500  # crop length: 30 s at 50 Hz, audiocraft's segment_duration
    seed: int = 0
    text: TextAugmentation = TextAugmentation()
    text_lengths: tuple[int, ...] = (32, 64, 128, 256)  # token buckets, `</s>` included
    prefetch: int = 2  # batches prepared ahead
    threads: int = 2  # batches assembled in parallel
    text_embeddings: bool = False  # T5 hidden states stored by `prepare --text-encoder` instead of tokens
    word_dropout: float = 0.0  # each word of a training text dropped with this probability
    chroma_frames: int = 0  # chroma frames per row (235 for melody models), from `prepare --chroma`; 0: none

    def __post_init__(self):
        for name in ("batch_size", "frames", "prefetch", "threads", "chroma_frames"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name in ("prefetch", "chroma_frames") else 1)
            ):
                raise ValueError(f"invalid PipelineConfig.{name}: {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"invalid PipelineConfig.seed: {self.seed!r} (a non-negative integer)")
        lengths = tuple(self.text_lengths)
        if (
            not lengths
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths)
            or list(lengths) != sorted(set(lengths))
        ):
            raise ValueError(
                f"invalid PipelineConfig.text_lengths: {self.text_lengths!r} (increasing positive integers)"
            )
        if not isinstance(self.text, TextAugmentation):
            raise ValueError(f"PipelineConfig.text must be a TextAugmentation, got {type(self.text).__name__}")
        if (
            isinstance(self.word_dropout, bool)
            or not isinstance(self.word_dropout, (int, float))
            or not 0 <= self.word_dropout <= 1
        ):
            raise ValueError(f"invalid PipelineConfig.word_dropout: {self.word_dropout!r} (a probability)")
        if self.text_embeddings and (self.text.merge_text_p or self.word_dropout):
            raise ValueError(
                "precomputed text embeddings fix each example's text to its description: set "
                "text.merge_text_p = 0 and word_dropout = 0, or text_embeddings = False to build texts "
                "from metadata"
            )
        object.__setattr__(self, "text_lengths", lengths)


@dataclasses.dataclass(frozen=True)
class HostExamples:
    """The examples of one host's part of a split, in `read_examples` order."""

    codes: list[np.ndarray]  # int16 [K, T_i]
    metadata: list[dict]
    first: int  # split index of the first example
    num_codebooks: int
    part: tuple[int, int]
    text_embeddings: list[np.ndarray] | None = None  # float32 [N_i, D], when the dataset stores them
    chroma: list[np.ndarray] | None = None  # uint8 [Fc_i] chroma bins, when the dataset stores them
    chroma_step: tuple[int, int] | None = None  # with chroma: (codec hop, chroma hop) in samples

    def __len__(self) -> int:
        return len(self.codes)


def _host(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"invalid host {process_index} of {process_count}")
    return process_index, process_count


def load_host_examples(
    data_dir, split: str = "train", process_index: int | None = None, process_count: int | None = None
) -> HostExamples:
    """Read this host's part of `split` into memory, once: the part `jax.process_index()` of
    `jax.process_count()` (`shards.part_bounds`, like `tfds.even_splits`: disjoint, together the whole split).
    Tokens are small (one hour of 4-codebook tokens at 50 Hz is 1.4 MB), and holding them makes every batch
    a pure function of `(seed, host, step)`."""
    part = _host(process_index, process_count)
    info = shards.dataset_info(data_dir)
    total = info["splits"].get(split, {}).get("examples", 0)
    examples = list(shards.read_examples(data_dir, split, part))
    if not examples:
        raise ValueError(f"{data_dir}: split {split!r} has {total} examples, none for host {part[0]} of {part[1]}")
    embeddings = [ex["text_embedding"] for ex in examples] if "text_embedding" in examples[0] else None
    chroma = [ex["chroma"] for ex in examples] if info.get("chroma") else None
    return HostExamples(
        [ex["codes"] for ex in examples],
        [ex["metadata"] for ex in examples],
        shards.part_bounds(total, part)[0],
        info["num_codebooks"],
        part,
        embeddings,
        chroma,
        None if chroma is None else _chroma_step(info),
    )


def _chroma_step(info: dict) -> tuple[int, int]:
    """(codec hop, chroma hop) in samples, from `dataset.json`; ValueError unless the codec's hop is whole
    and both run at one sample rate."""
    codec, chroma = info["codec"], info["chroma"]
    if codec["sample_rate"] % codec["frame_rate"] or codec["sample_rate"] != chroma["sample_rate"]:
        raise ValueError(
            f"chroma at {chroma['sample_rate']} Hz cannot be cropped with codes at "
            f"{codec['frame_rate']} frames per second of {codec['sample_rate']} Hz"
        )
    return codec["sample_rate"] // codec["frame_rate"], chroma["hop_length"]


def drop_words(text: str | None, p: float, rng: random.Random) -> str | None:
    """audiocraft's T5 word dropout (`T5Conditioner`): each space-separated word kept when a draw is >= p
    ("" when none is)."""
    if not p or text is None:
        return text
    return " ".join(word for word in text.split(" ") if rng.random() >= p)


def _fields(config: PipelineConfig, evaluation: bool) -> tuple[str, ...]:
    text = "text_embeddings" if config.text_embeddings else "text_ids"
    return (
        ("codes", "mask", text, "text_mask", "example")
        + (("chroma",) if config.chroma_frames else ())
        + (("valid",) if evaluation else ())
    )


_PERMUTATION, _ITEM = 0, 1  # stream tags of the random draws


class _Assembler:
    """Builds batches of one host's examples; every batch is a pure function of its step."""

    def __init__(self, examples: HostExamples, config: PipelineConfig, tokenizer):
        if config.text_embeddings and examples.text_embeddings is None:
            raise ValueError(
                "text_embeddings=True needs a dataset prepared with --text-encoder; this one stores no text embeddings"
            )
        if config.chroma_frames and examples.chroma is None:
            raise ValueError(
                f"chroma_frames = {config.chroma_frames} needs a dataset prepared with "
                f"`prepare --chroma`; this one stores no chroma"
            )
        self.examples, self.config, self.tokenizer = examples, config, tokenizer
        self._permutations: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _rng(self, tag: int, value: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.examples.part[0], tag, value])

    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._permutations:
                if len(self._permutations) > 4:
                    self._permutations.pop(min(self._permutations))
                self._permutations[epoch] = self._rng(_PERMUTATION, epoch).permutation(len(self.examples))
            return self._permutations[epoch]

    def _bucket(self, longest: int) -> int:
        return next((n for n in self.config.text_lengths if n >= longest), self.config.text_lengths[-1])

    def _texts(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenizer(texts)  # [B, longest]: tokenized once, then padded to the bucket
        length = self._bucket(ids.shape[1])
        if length < ids.shape[1]:
            return self.tokenizer(texts, length=length, truncate=True)
        pad = ((0, 0), (0, length - ids.shape[1]))
        return np.pad(ids, pad, constant_values=self.tokenizer.pad_id), np.pad(mask, pad)

    def _embeddings(self, indices: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.examples.text_embeddings[i] if i is not None else None for i in indices]
        length = self._bucket(max(len(row) for row in rows if row is not None))
        dim = next(row for row in rows if row is not None).shape[-1]
        hidden = np.zeros((len(rows), length, dim), np.float32)
        mask = np.zeros((len(rows), length), np.int32)
        for r, row in enumerate(rows):
            if row is not None:
                n = min(len(row), length)
                hidden[r, :n], mask[r, :n] = row[:n], 1
        return hidden, mask

    def _chroma(self, items: list[tuple[int, int, str | None] | None]) -> np.ndarray:
        """int32 `[B, chroma_frames]`: the stored chroma bins from each crop's first chroma frame, 0 past them.

        The chroma of a crop starting at code frame `start` is the stored chroma of its segment from chroma
        frame `start * codec_hop // chroma_hop` on (hops in samples: the codec's sample_rate / frame_rate, the
        chroma's hop_length); 0 (the chroma of silence, what audiocraft's zero-padded crops give) past the end
        of the stored chroma and on padding rows. When the crop is the whole segment (the recipe: 30 s segments
        and 30 s crops) that is exactly the crop's chroma; for shorter crops it is the segment's chroma sliced
        at the crop, whose frames are within one chroma hop (128 ms at 32 kHz) of the crop's own, and whose
        windows also see the audio around the crop.
        """
        chroma = np.zeros((len(items), self.config.chroma_frames), np.int32)
        codec_hop, chroma_hop = self.examples.chroma_step
        for row, item in enumerate(items):
            if item is not None:
                first = item[1] * codec_hop // chroma_hop
                piece = self.examples.chroma[item[0]][first : first + self.config.chroma_frames]
                chroma[row, : len(piece)] = piece
        return chroma

    def _assemble(self, items: list[tuple[int, int, str | None] | None]) -> dict[str, np.ndarray]:
        """`items`: (example index, crop start, text) per row, None for a padding row."""
        b, k, f = len(items), self.examples.num_codebooks, self.config.frames
        codes = np.zeros((b, k, f), np.int32)
        mask = np.zeros((b, k, f), bool)
        example = np.full((b,), -1, np.int32)
        for row, item in enumerate(items):
            if item is None:
                continue
            index, start, _ = item
            crop = self.examples.codes[index][:, start : start + f]
            codes[row, :, : crop.shape[-1]] = crop
            mask[row, :, : crop.shape[-1]] = True
            example[row] = self.examples.first + index
        if self.config.text_embeddings:
            text, text_mask = self._embeddings([item[0] if item else None for item in items])
        else:
            text, text_mask = self._texts([item[2] if item else None for item in items])
        name = "text_embeddings" if self.config.text_embeddings else "text_ids"
        batch = {"codes": codes, "mask": mask, name: text, "text_mask": text_mask, "example": example}
        if self.config.chroma_frames:
            batch["chroma"] = self._chroma(items)
        return batch

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch `step` of the host's endless stream of shuffled epochs (random crops, augmented text).

        The stream runs over epochs, each a permutation of the host's examples drawn from `(seed, host,
        epoch)`; item `g` of the stream takes a random crop of `frames` frames (start drawn from `(seed, host,
        g)`; a shorter example is padded and masked) and builds its text from the example's metadata as
        audiocraft's `MusicDataset` does (`metadata.describe`, same draw), then drops each word with
        probability `word_dropout` (`drop_words`).
        """
        n, f = len(self.examples), self.config.frames
        items = []
        for g in range(step * self.config.batch_size, (step + 1) * self.config.batch_size):
            index = int(self._permutation(g // n)[g % n])
            rng = self._rng(_ITEM, g)
            spare = self.examples.codes[index].shape[-1] - f
            start = int(rng.integers(0, spare + 1)) if spare > 0 else 0
            text_rng = random.Random(int(rng.integers(2**63)))
            text = drop_words(
                self.config.text.describe(self.examples.metadata[index], text_rng), self.config.word_dropout, text_rng
            )
            items.append((index, start, text))
        return self._assemble(items)

    def eval_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch `step` of one ordered pass: the first `frames` frames, the plain description."""
        indices = range(step * self.config.batch_size, (step + 1) * self.config.batch_size)
        items = [(i, 0, self.examples.metadata[i]["description"]) if i < len(self.examples) else None for i in indices]
        batch = self._assemble(items)
        batch["valid"] = np.array([item is not None for item in items])
        return batch


def _tf_batches(build, fields: tuple[str, ...], start: int, stop: int, config: PipelineConfig):
    """tf.data over steps [start, stop): `build(step)` on `config.threads` threads, in order, prefetched."""
    tf = shards.host_tensorflow()

    dtypes = {
        "codes": tf.int32,
        "mask": tf.bool,
        "text_ids": tf.int32,
        "text_embeddings": tf.float32,
        "text_mask": tf.int32,
        "example": tf.int32,
        "chroma": tf.int32,
        "valid": tf.bool,
    }

    def arrays(step):
        batch = build(int(step))
        return tuple(batch[name] for name in fields)

    dataset = tf.data.Dataset.range(start, stop).map(
        lambda step: tf.numpy_function(arrays, [step], [dtypes[name] for name in fields], stateful=False),
        num_parallel_calls=config.threads,
        deterministic=True,
    )
    return (dict(zip(fields, batch)) for batch in dataset.prefetch(config.prefetch).as_numpy_iterator())


class TrainBatches:
    """The endless training stream of one host: `next(batches)`; `state()` is its position (a small
    dict of ints for the trainer's checkpoint), which `TrainBatches(..., state=...)` resumes exactly.
    `start=s` begins a stream at batch `s` without a saved state (a run whose first step is s); `state`
    is checked against this pipeline (seed, sizes, host, examples); the two are not given together.
    tf.data runs the batch assembly on background threads (`config.threads`, deterministic order) and
    prefetches.

    A batch is a dict of numpy arrays:
    - `codes` int32 `[B, K, F]`: token crops (0 where padded);
    - `mask` bool `[B, K, F]`: True at real tokens (the loss ignores the rest);
    - `text_ids`, `text_mask` int32 `[B, N]`: T5 tokens of the texts, N the smallest of `text_lengths` that
      holds the longest (longer texts are truncated to the largest, keeping `</s>`); a None text (no
      description) has an all-zero mask row, the null condition;
    - with `text_embeddings=True` (a dataset prepared with `--text-encoder`), `text_embeddings` float32
      `[B, N, D]` (the stored T5 hidden states of the description, zero-padded, cut to the largest bucket)
      with `text_mask`, instead of `text_ids`: the text is then each example's plain description;
    - with `chroma_frames > 0` (a dataset prepared with `--chroma`), `chroma` int32 `[B, chroma_frames]`: the
      chroma bin of each chroma frame of the crop (melody models' `self_wav` condition; `_Assembler._chroma`);
    - `example` int32 `[B]`: the index of each item's example in the split (`read_examples` order);
    - eval batches only: `valid` bool `[B]`, False on the rows that pad the last batch.
    """

    _STOP = 2**62

    def __init__(
        self, examples: HostExamples, config: PipelineConfig, tokenizer, state: dict | None = None, *, start: int = 0
    ):
        self._assembler = _Assembler(examples, config, tokenizer)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"invalid start step {start!r} (a non-negative integer)")
        if state is not None and start:
            raise ValueError("give the data pipeline a state to resume from or a start step, not both")
        self.step = start if state is None else self._resumed(state)
        self._iterator = None

    def _resumed(self, state: dict) -> int:
        """The step of `state`; ValueError unless it is a position of this pipeline."""
        expected = self._identity()
        mismatched = [key for key in expected if state.get(key) != expected[key]]
        if (
            mismatched
            or isinstance(state.get("step"), bool)
            or not isinstance(state.get("step"), int)
            or state["step"] < 0
        ):
            what = ", ".join(f"{key} {state.get(key)!r} (here {expected[key]!r})" for key in mismatched)
            raise ValueError(
                f"cannot resume the data pipeline from {state!r}: {what or 'the step must be a non-negative integer'}"
            )
        return state["step"]

    def _identity(self) -> dict:
        a = self._assembler
        return {
            "seed": a.config.seed,
            "batch_size": a.config.batch_size,
            "frames": a.config.frames,
            "host": list(a.examples.part),
            "examples": len(a.examples),
            "first": a.examples.first,
        }

    def state(self) -> dict:
        """The position: the next batch is batch `step` of this host's stream."""
        return {"step": self.step, **self._identity()}

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch `step` of the stream, computed directly (what `next` yields at that position)."""
        return self._assembler.train_batch(step)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            config = self._assembler.config
            self._iterator = _tf_batches(
                self._assembler.train_batch, _fields(config, False), self.step, self._STOP, config
            )
        batch = next(self._iterator)
        self.step += 1
        return batch


def eval_batches(examples: HostExamples, config: PipelineConfig, tokenizer, num_batches: int | None = None):
    """One ordered pass over the host's examples (first `config.frames` frames, the description as the
    text), the last batch padded with rows whose `valid` is False; `num_batches` (>= what the examples
    need) pads the pass with such batches, so that every host runs as many steps."""
    assembler = _Assembler(examples, config, tokenizer)
    needed = -(-len(examples) // config.batch_size)
    if num_batches is not None and num_batches < needed:
        raise ValueError(f"num_batches {num_batches} is fewer than the {needed} this host's examples need")
    return _tf_batches(assembler.eval_batch, _fields(config, True), 0, num_batches or needed, config)


def train_batches(
    data_dir,
    config: PipelineConfig,
    tokenizer,
    state: dict | None = None,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainBatches:
    """`TrainBatches` over this host's part of `split` of the prepared dataset in `data_dir`."""
    return TrainBatches(load_host_examples(data_dir, split, process_index, process_count), config, tokenizer, state)
