"""`musicgen_jax.data.pipeline`: per-host, deterministic, resumable batches from a token dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicgen_jax.data.metadata import TextAugmentation
from musicgen_jax.data.pipeline import PipelineConfig, TrainBatches, eval_batches, load_host_examples, train_batches
from musicgen_jax.text.tokenizer import T5Tokenizer
from tests.datasets import CHROMA, DESCRIPTION, FRAME_RATE, SAMPLE_RATE, K, chroma_frames, code_value, write_dataset

FRAMES = 12
LENGTHS = [30, 12, 7, 18, 25, 12, 3, 40, 12, 16, 9, 21, 12, 33, 5, 12, 28, 14, 12, 19, 11, 26, 12]  # 23 examples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokens")
    return directory, write_dataset(directory, LENGTHS)


@pytest.fixture(scope="module")
def tokenizer(spiece_dir):
    return T5Tokenizer.from_pretrained(spiece_dir)


def crop_start(batch, row) -> int:
    """Where row `row`'s crop starts in its example (from the distinct codes of its first frame)."""
    example = int(batch["example"][row])
    t = np.arange(LENGTHS[example])
    return int(np.flatnonzero(code_value(example, 0, t) == batch["codes"][row, 0, 0])[0])


def test_hosts_see_disjoint_parts_that_cover_the_split(dataset, tokenizer):
    """Hosts 0 and 1 of 2 hold 11 and 12 examples; each host's first epoch is a permutation of its part."""
    directory, _ = dataset
    seen = []
    for host in range(2):
        examples = load_host_examples(directory, "train", host, 2)
        batches = TrainBatches(examples, PipelineConfig(batch_size=4, frames=FRAMES), tokenizer)
        stream = np.concatenate([batches.batch(step)["example"] for step in range(3)])[: len(examples)]
        assert len(examples) == (11, 12)[host] and examples.first == (0, 11)[host]
        assert sorted(stream) == list(range(examples.first, examples.first + len(examples)))
        assert list(stream) != sorted(stream)  # shuffled
        seen.append(set(stream))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(LENGTHS)))


def test_each_epoch_is_a_new_permutation_on_each_host(dataset, tokenizer):
    """On each host of 2, four epochs of the stream (batches running across epoch ends): each is a
    permutation of the host's examples, and no two are in the same order."""
    directory, _ = dataset
    for host in range(2):
        examples = load_host_examples(directory, "train", host, 2)
        n, batches = len(examples), TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer)
        stream = np.concatenate([batches.batch(step)["example"] for step in range(-(-4 * n // 5))])
        epochs = [tuple(stream[e * n : (e + 1) * n]) for e in range(4)]
        for epoch in epochs:
            assert sorted(epoch) == list(range(examples.first, examples.first + n))
        assert len(set(epochs)) == 4, epochs


def test_crops_are_windows_of_the_example_and_padding_is_masked(dataset, tokenizer):
    """Each row is `codes[:, s:s + F]` of its example with 0 <= s <= T - F (s = 0 when T <= F, the rest
    zero-padded and masked); over many items the starts of a long example spread over the whole range, and
    those of the examples with at most 6 spare frames take every value from 0 to the last window's."""
    directory, examples = dataset
    batches = TrainBatches(load_host_examples(directory, "train", 0, 1), PipelineConfig(8, FRAMES, seed=3), tokenizer)
    starts, spare_starts = [], {}
    for step in range(150):
        batch = batches.batch(step)
        assert batch["codes"].shape == batch["mask"].shape == (8, K, FRAMES) and batch["codes"].dtype == np.int32
        for row in range(8):
            full = examples[batch["example"][row]]["codes"]
            n = min(full.shape[-1], FRAMES)
            start = crop_start(batch, row)
            assert 0 <= start <= max(full.shape[-1] - FRAMES, 0)
            np.testing.assert_array_equal(batch["codes"][row, :, :n], full[:, start : start + n])
            assert not batch["codes"][row, :, n:].any()
            assert batch["mask"][row, :, :n].all() and not batch["mask"][row, :, n:].any()
            if batch["example"][row] == 7:  # 40 frames: starts 0..28
                starts.append(start)
            if 0 < full.shape[-1] - FRAMES <= 6:  # 14, 16 and 18 frames: 3, 5 and 7 possible starts
                spare_starts.setdefault(full.shape[-1] - FRAMES, set()).add(start)
    assert spare_starts == {spare: set(range(spare + 1)) for spare in (2, 4, 6)}
    assert len(starts) > 30 and min(starts) <= 2 and max(starts) >= 26
    assert abs(np.mean(starts) - 14) < 4 * np.std(starts) / np.sqrt(len(starts))  # uniform mean within 4 s.e.


def test_same_seed_same_batches_and_a_restored_state_continues_identically(dataset, tokenizer):
    """tf.data yields `batch(step)` in order; the same seed gives the same batches, another seed others;
    the state after 7 batches (through JSON) resumes with the 8th, as does a stream built with start=7;
    a far step starts at once."""
    directory, _ = dataset
    config = PipelineConfig(batch_size=5, frames=FRAMES, seed=11, text=TextAugmentation(0.5, 0.5, 0.5))
    examples = load_host_examples(directory, "train", 0, 1)
    first = TrainBatches(examples, config, tokenizer)
    run = [next(first) for _ in range(10)]
    second = TrainBatches(examples, config, tokenizer)
    for step, batch in enumerate(run):
        for name, value in batch.items():
            np.testing.assert_array_equal(value, first.batch(step)[name])
            np.testing.assert_array_equal(next(second)[name] if name == "codes" else value, value)
    other = TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES, seed=12), tokenizer)
    assert not np.array_equal(next(other)["example"], run[0]["example"])

    resumed = TrainBatches(examples, config, tokenizer)
    for _ in range(7):
        next(resumed)
    state = json.loads(json.dumps(resumed.state()))
    restored = TrainBatches(examples, config, tokenizer, state=state)
    started = TrainBatches(examples, config, tokenizer, start=7)
    assert started.state() == state
    for stream in (restored, started):
        for name, value in next(stream).items():
            np.testing.assert_array_equal(value, run[7][name])
    assert started.state() == {**state, "step": 8}
    far = TrainBatches(examples, config, tokenizer, state={**state, "step": 10**12})
    np.testing.assert_array_equal(next(far)["codes"], far.batch(10**12)["codes"])
    assert far.state()["step"] == 10**12 + 1


def test_a_state_from_another_pipeline_is_refused(dataset, tokenizer):
    directory, _ = dataset
    examples = load_host_examples(directory, "train", 0, 1)
    state = TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer).state()
    with pytest.raises(ValueError, match=r"batch_size 5 \(here 4\)"):
        TrainBatches(examples, PipelineConfig(batch_size=4, frames=FRAMES), tokenizer, state=state)
    with pytest.raises(ValueError, match=r"host \[0, 1\] \(here \[1, 2\]\)"):
        train_batches(
            directory,
            PipelineConfig(batch_size=5, frames=FRAMES),
            tokenizer,
            state=state,
            process_index=1,
            process_count=2,
        )
    with pytest.raises(ValueError, match="non-negative integer"):
        TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer, state={**state, "step": -1})
    with pytest.raises(ValueError, match="invalid start step -1"):
        TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer, start=-1)
    with pytest.raises(ValueError, match="a state to resume from or a start step, not both"):
        TrainBatches(examples, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer, state=state, start=3)


def test_text_follows_the_augmentation_probabilities(dataset, tokenizer):
    """Items of described examples get "calm piano melody." (no merge: audiocraft adds the period), or
    metadata merged in with probability 0.25, and then the description dropped with probability 0.3;
    examples without metadata get the null text (an all-zero mask row). 4 standard errors."""
    directory, _ = dataset
    config = PipelineConfig(batch_size=64, frames=FRAMES, seed=5, text=TextAugmentation(0.25, 0.3, 0.7))
    batches = TrainBatches(load_host_examples(directory, "train", 0, 1), config, tokenizer)
    plain = tokenizer.encode(DESCRIPTION + ".")
    description = tokenizer.encode(DESCRIPTION)[:-1]
    merged = dropped = described = 0
    mixed_batches = 0  # batches with merged and plain rows: each item draws for itself
    for step in range(60):
        batch = batches.batch(step)
        merged_before, described_before = merged, described
        for row in range(64):
            ids = list(batch["text_ids"][row][batch["text_mask"][row] == 1])
            if batch["example"][row] % 3:
                assert ids == []
                continue
            described += 1
            if ids != plain:
                merged += 1
                dropped += ids[: len(description)] != description
        mixed_batches += 0 < merged - merged_before < described - described_before
    assert mixed_batches > 40
    for count, total, p in ((merged, described, 0.25), (dropped, merged, 0.3)):
        assert abs(count / total - p) < 4 * np.sqrt(p * (1 - p) / total), (count, total, p)


def test_text_buckets_and_truncation(dataset, tokenizer):
    """Text is padded to the smallest bucket holding the longest text of the batch (one of exactly its
    length included); texts longer than the largest bucket keep their first tokens and `</s>`."""
    directory, examples = dataset
    host = load_host_examples(directory, "train", 0, 1)
    batch = TrainBatches(host, PipelineConfig(batch_size=6, frames=FRAMES, text_lengths=(4, 8)), tokenizer).batch(0)
    assert batch["text_ids"].shape == (6, 8)
    for row in range(6):
        if batch["example"][row] % 3 == 0:
            expected = tokenizer.encode(DESCRIPTION)
            np.testing.assert_array_equal(batch["text_ids"][row], expected[:7] + [tokenizer.eos_id])
    short = TrainBatches(host, PipelineConfig(batch_size=2, frames=FRAMES, text_lengths=(16, 32)), tokenizer)
    assert short.batch(0)["text_ids"].shape[1] == 16
    exact = len(tokenizer.encode(DESCRIPTION))  # a bucket of exactly the longest text's length is the one taken
    fitting = TrainBatches(host, PipelineConfig(batch_size=6, frames=FRAMES, text_lengths=(exact, 64)), tokenizer)
    assert fitting.batch(0)["text_ids"].shape[1] == exact


def test_eval_batches_are_one_ordered_pass(dataset, tokenizer):
    """Host 1 of 2: its 12 examples in order, first F frames, the plain description; the last batch of 5
    rows has 2 padding rows (valid False, nothing unmasked)."""
    directory, examples = dataset
    host = load_host_examples(directory, "train", 1, 2)
    batches = list(eval_batches(host, PipelineConfig(batch_size=5, frames=FRAMES), tokenizer))
    assert len(batches) == 3
    valid = np.concatenate([b["valid"] for b in batches])
    order = np.concatenate([b["example"] for b in batches])
    assert list(order[valid]) == list(range(11, 23)) and list(valid) == [True] * 12 + [False] * 3
    last = batches[-1]
    assert not last["mask"][3:].any() and not last["text_mask"][3:].any() and (last["example"][3:] == -1).all()
    for batch in batches:
        for row in np.flatnonzero(batch["valid"]):
            full = examples[batch["example"][row]]["codes"]
            n = min(full.shape[-1], FRAMES)
            np.testing.assert_array_equal(batch["codes"][row, :, :n], full[:, :n])
            ids = list(batch["text_ids"][row][batch["text_mask"][row] == 1])
            assert ids == (tokenizer.encode(DESCRIPTION) if batch["example"][row] % 3 == 0 else [])


def test_precomputed_text_embeddings(tmp_path, dataset, tokenizer):
    """text_embeddings=True: each row carries its example's stored states, zero-padded to the bucket (cut
    to the largest), with the matching mask; the null text is an all-zero mask row."""
    examples = write_dataset(tmp_path, LENGTHS, text_dim=6)
    host = load_host_examples(tmp_path, "train", 0, 1)
    config = PipelineConfig(batch_size=8, frames=FRAMES, text_embeddings=True, text_lengths=(4, 6))
    batches = TrainBatches(host, config, tokenizer)
    for step in range(4):
        batch = next(batches)
        assert "text_ids" not in batch and batch["text_embeddings"].dtype == np.float32
        np.testing.assert_array_equal(batch["text_embeddings"], batches.batch(step)["text_embeddings"])
        longest = max(len(examples[i]["text_embedding"]) for i in batch["example"])
        assert batch["text_embeddings"].shape == (8, 4 if longest <= 4 else 6, 6)
        for row, index in enumerate(batch["example"]):
            stored = examples[index]["text_embedding"][: batch["text_embeddings"].shape[1]]
            n = len(stored)
            np.testing.assert_array_equal(batch["text_embeddings"][row, :n], stored)
            assert not batch["text_embeddings"][row, n:].any()
            assert list(batch["text_mask"][row]) == [1] * n + [0] * (batch["text_mask"].shape[1] - n)
    with pytest.raises(ValueError, match="fix each example's text to its description"):
        PipelineConfig(batch_size=8, text_embeddings=True, text=TextAugmentation(0.25, 0.5, 0.5))
    with pytest.raises(ValueError, match="needs a dataset prepared with --text-encoder"):
        TrainBatches(load_host_examples(dataset[0], "train", 0, 1), config, tokenizer)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "PipelineConfig.batch_size: 0"),
        ({"batch_size": 2, "frames": 1.5}, "PipelineConfig.frames: 1.5"),
        ({"batch_size": 2, "seed": -1}, "PipelineConfig.seed: -1"),
        ({"batch_size": 2, "text_lengths": (64, 32)}, "text_lengths: (64, 32)"),
        ({"batch_size": 2, "text": {"merge_text_p": 0.2}}, "must be a TextAugmentation"),
        ({"batch_size": 2, "chroma_frames": -1}, "PipelineConfig.chroma_frames: -1"),
        ({"batch_size": 2, "chroma_frames": True}, "PipelineConfig.chroma_frames: True"),
    ],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PipelineConfig(**kwargs)


def test_a_host_without_examples_and_an_unprepared_folder(dataset, tmp_path):
    directory, _ = dataset
    with pytest.raises(ValueError, match="split 'valid' has 0 examples, none for host 0 of 1"):
        load_host_examples(directory, "valid", 0, 1)
    with pytest.raises(ValueError, match="not a prepared dataset"):
        load_host_examples(tmp_path, "train", 0, 1)


def test_word_dropout_drops_each_word_with_its_probability(dataset, tokenizer):
    """word_dropout 0.3: each word of "calm piano melody" survives with probability 0.7 (4 s.e.), the texts
    keep the words' order, and a text that loses every word is the null text (all-zero mask row)."""
    directory, _ = dataset
    config = PipelineConfig(batch_size=64, frames=FRAMES, seed=2, word_dropout=0.3)
    batches = TrainBatches(load_host_examples(directory, "train", 0, 1), config, tokenizer)
    words = DESCRIPTION.split(" ")
    variants = {
        tuple(tokenizer.encode(" ".join(w for w, keep in zip(words, mask) if keep))): mask
        for mask in np.ndindex(2, 2, 2)
        if any(mask)
    }
    kept, total, null = np.zeros(3), 0, 0
    for step in range(30):
        batch = batches.batch(step)
        for row in np.flatnonzero(batch["example"] % 3 == 0):
            ids = tuple(batch["text_ids"][row][batch["text_mask"][row] == 1])
            total += 1
            if not ids:
                null += 1
                continue
            kept += np.array(variants[ids])
    assert abs(null / total - 0.3**3) < 4 * np.sqrt(0.027 * 0.973 / total)
    for fraction in kept / total:
        assert abs(fraction - 0.7) < 4 * np.sqrt(0.21 / total)
    with pytest.raises(ValueError, match="word_dropout = 0"):
        PipelineConfig(batch_size=2, text_embeddings=True, word_dropout=0.3)


@pytest.fixture(scope="module")
def chroma_dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chroma_tokens")
    return directory, write_dataset(directory, LENGTHS, chroma=True)


def expected_chroma(stored: np.ndarray, start: int, frames: int) -> np.ndarray:
    """The stored bins of a crop at code frame `start`: from chroma frame start * 640 // 4096 (the sample of
    its first code frame over the chroma hop), bin 0 past the stored frames."""
    first = start * (SAMPLE_RATE // FRAME_RATE) // CHROMA.hop_length
    piece = stored[first : first + frames]
    return np.pad(piece, (0, frames - len(piece)))


def test_chroma_follows_the_crop(chroma_dataset, tokenizer):
    """chroma_frames 5: each train row is its example's stored bins from the crop's chroma frame on (the crop
    start recovered from the codes), bin 0 past them; tf.data yields the same int32 rows. Eval rows start at
    chroma frame 0 and padding rows are bin 0 throughout."""
    directory, examples = chroma_dataset
    host = load_host_examples(directory, "train", 0, 1)
    assert [len(c) for c in host.chroma] == [chroma_frames(n) for n in LENGTHS]  # 5 to 7 frames
    assert host.chroma_step == (640, 4096)
    batches = TrainBatches(host, PipelineConfig(batch_size=8, frames=FRAMES, seed=3, chroma_frames=5), tokenizer)
    firsts, past_end = set(), 0
    for step in range(30):
        batch = batches.batch(step)
        assert batch["chroma"].shape == (8, 5) and batch["chroma"].dtype == np.int32
        for row in range(8):
            stored, start = examples[batch["example"][row]]["chroma"], crop_start(batch, row)
            np.testing.assert_array_equal(batch["chroma"][row], expected_chroma(stored, start, 5))
            first = start * 640 // 4096
            firsts.add(first)
            past_end += first + 5 > len(stored)
    assert firsts == {0, 1, 2, 3, 4} and past_end > 20
    streamed = next(batches)
    for name in ("chroma", "codes"):
        np.testing.assert_array_equal(streamed[name], batches.batch(0)[name])
    config = PipelineConfig(batch_size=5, frames=FRAMES, chroma_frames=6)
    evaluation = list(eval_batches(host, config, tokenizer))
    assert len(evaluation) == 5 and all(b["chroma"].dtype == np.int32 for b in evaluation)
    rows = np.concatenate([b["chroma"] for b in evaluation])
    for index, chroma in enumerate(rows[: len(LENGTHS)]):
        np.testing.assert_array_equal(chroma, expected_chroma(examples[index]["chroma"], 0, 6))
    assert not rows[len(LENGTHS) :].any()  # 2 padding rows


def test_chroma_needs_a_dataset_prepared_with_it(dataset, chroma_dataset, tokenizer, tmp_path):
    """chroma_frames > 0 on a dataset without chroma is one error naming `prepare --chroma`; chroma_frames 0
    gives no chroma key, with or without stored chroma; chroma at another rate than the codes' is refused."""
    host = load_host_examples(dataset[0], "train", 0, 1)
    assert host.chroma is None
    config = PipelineConfig(batch_size=2, frames=FRAMES, chroma_frames=4)
    with pytest.raises(ValueError, match="chroma_frames = 4 needs a dataset prepared with `prepare --chroma`"):
        TrainBatches(host, config, tokenizer)
    with pytest.raises(ValueError, match="prepare --chroma"):
        eval_batches(host, config, tokenizer)
    with_chroma = load_host_examples(chroma_dataset[0], "train", 0, 1)
    for examples in (host, with_chroma):
        assert "chroma" not in TrainBatches(examples, PipelineConfig(batch_size=2, frames=FRAMES), tokenizer).batch(0)
    write_dataset(tmp_path, [20, 30], chroma=True)
    info = json.loads((tmp_path / "dataset.json").read_text())
    info["chroma"]["sample_rate"] = 44100
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match="chroma at 44100 Hz cannot be cropped with codes at 50 frames per second of 32000 Hz"
    ):
        load_host_examples(tmp_path, "train", 0, 1)
