"""`musicgen_jax.data.prepare`: audio folders and manifests -> token datasets, checked against
transformers' `EncodecModel` (the reference codec) and, with --chroma, its `MusicgenMelodyFeatureExtractor`
(the reference chroma) on exactly the slices each example covers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
from transformers.models.musicgen_melody.feature_extraction_musicgen_melody import MusicgenMelodyFeatureExtractor

from musicgen_jax import stems
from musicgen_jax.audio import read_audio
from musicgen_jax.cli.prepare import main
from musicgen_jax.data import shards
from musicgen_jax.data.prepare import Settings, chroma_config, segment_lengths, split_of
from tests.data.conftest import ARGS, GOOD, SKIPPED, SR, all_examples, prepare
from tests.test_chroma import _Spectrogram

HOP = 640
SEGMENTS = {
    "tones/a440.wav": 3,
    "tones/low.flac": 1,
    "tones/deep/a220_44k.flac": 3,
    "noise/stereo48k.wav": 2,
    "noise/mono16k.ogg": 2,
    "silence.wav": 2,
    "whole.mp3": 1,
}


def reference_codes(model, wav: np.ndarray) -> np.ndarray:
    """transformers' codes of `[C, T]` audio: each channel coded alone, codebooks interleaved [L0, R0, ...]."""
    with torch.no_grad():
        codes = [
            model.encode(torch.from_numpy(np.ascontiguousarray(ch[None, None]))).audio_codes[0, 0].numpy() for ch in wav
        ]
    return np.stack(codes, axis=1).reshape(-1, codes[0].shape[-1])


def test_codes_equal_the_reference_codec_on_each_slice(prepared, audio_dir, codec_dir):
    """Every example's codes equal transformers' encoding of exactly its slice of the file (read at 32 kHz
    mono); batches of 3 padded with silent rows change nothing; files land in the split of their hash."""
    model = codec_dir[0]
    examples = all_examples(prepared)
    seen = {}
    for split, items in examples.items():
        for ex in items:
            assert split_of(ex["path"], 1, 0.3) == split
            wav, _ = read_audio(audio_dir / ex["path"], SR, 1)
            start = ex["segment"] * SR
            expected = reference_codes(model, wav[:, start : start + ex["codes"].shape[-1] * HOP])
            assert ex["codes"].dtype == np.int16 and ex["codes"].shape == expected.shape
            np.testing.assert_array_equal(ex["codes"], expected, err_msg=f"{ex['path']} segment {ex['segment']}")
            seen.setdefault(ex["path"], []).append((ex["segment"], ex["codes"].shape[-1]))
    assert {path: len(v) for path, v in seen.items()} == SEGMENTS
    assert seen["tones/a440.wav"] == [(0, 50), (1, 50), (2, 25)]  # 2.5 s: two 1 s segments, a 0.5 s tail
    assert seen["tones/low.flac"] == [(0, 50)]  # the 0.3 s tail is below --min-seconds
    assert all(len(items) for items in examples.values())


def test_split_of_sends_the_valid_fraction_to_valid():
    """Over 4000 paths each file lands in valid with probability `valid_fraction` (within 4 standard errors),
    independently of the seed's other draws: another seed moves about 2 p (1 - p) of them."""
    paths = [f"folder/{i}.wav" for i in range(4000)]
    for fraction in (0.0, 0.1, 0.3, 1.0):
        valid = np.array([split_of(path, 1, fraction) == "valid" for path in paths])
        assert abs(valid.mean() - fraction) <= 4 * np.sqrt(fraction * (1 - fraction) / len(paths))
    first = np.array([split_of(path, 1, 0.3) == "valid" for path in paths])
    other = np.array([split_of(path, 2, 0.3) == "valid" for path in paths])
    assert abs((first != other).mean() - 2 * 0.3 * 0.7) < 4 * np.sqrt(0.42 * 0.58 / len(paths))


def test_metadata_and_reports(prepared):
    """Sidecar metadata is normalized as audiocraft's MusicInfo; bad files are listed with their reason;
    TFDS loads the dataset and its counts match dataset.json."""
    info = json.loads((prepared / "dataset.json").read_text())
    examples = all_examples(prepared)
    by_path = {ex["path"]: ex["metadata"] for items in examples.values() for ex in items}
    assert by_path["tones/a440.wav"] == {
        "title": "Sine 440",
        "artist": "the tests",
        "key": "a major",
        "bpm": 60.0,
        "genre": "ambient",
        "moods": ["calm", "soft"],
        "keywords": None,
        "description": "A calm sine.",
        "instrument": None,
    }
    assert by_path["noise/stereo48k.wav"]["key"] is None  # several keys: dropped, as audiocraft does
    assert by_path["noise/stereo48k.wav"]["keywords"] == ["noise", "white"]
    assert set(by_path["silence.wav"].values()) == {None}
    skipped = {s["path"]: s["reason"] for s in info["skipped"]}
    assert set(skipped) == set(SKIPPED)
    for path, piece in SKIPPED.items():
        assert piece in skipped[path], (path, skipped[path])
    builder = tfds.builder_from_directory(str(prepared))
    for split, items in examples.items():
        assert builder.info.splits[split].num_examples == info["splits"][split]["examples"] == len(items)
        frames = sum(ex["codes"].shape[-1] for ex in items)
        assert info["splits"][split]["hours"] == pytest.approx(frames / 50 / 3600)
        assert info["splits"][split]["files"] == len({ex["path"] for ex in items})
    assert info["files"] == len(GOOD) + len(SKIPPED)
    assert info["num_codebooks"] == 4 and info["card"] == 2048 and info["frame_rate"] == 50
    assert info["codec"]["sample_rate"] == SR and info["codec"]["stereo"] is False
    assert info["chroma"] is None and all("chroma" not in ex for items in examples.values() for ex in items)
    assert sum(info["splits"][s]["examples"] for s in info["splits"]) == sum(SEGMENTS.values())


def test_stereo_codec_interleaves_each_channel(audio_dir, stereo_codec_dir, melody_extractor, tmp_path):
    """A stereo codec: files are read as two channels (mono ones repeated) and each example holds the
    reference codes of both channels interleaved [L0, R0, L1, R1, ...]; its chroma is that of the mean of
    the two channels."""
    model, codec = stereo_codec_dir
    prepare(audio_dir, codec, tmp_path / "data", "--batch-size", "2", "--chroma")
    examples = [ex for items in all_examples(tmp_path / "data").values() for ex in items]
    assert len(examples) == sum(SEGMENTS.values())
    for ex in examples:
        if ex["path"] not in ("noise/stereo48k.wav", "tones/a440.wav"):
            continue
        wav, _ = read_audio(audio_dir / ex["path"], SR, 2)
        start = ex["segment"] * SR
        expected = reference_codes(model, wav[:, start : start + ex["codes"].shape[-1] * HOP])
        assert ex["codes"].shape[0] == 8
        np.testing.assert_array_equal(ex["codes"], expected)
        check_chroma([ex], lambda path, wav=wav: wav.mean(axis=0), melody_extractor)
    assert json.loads((tmp_path / "data/dataset.json").read_text())["num_codebooks"] == 8


def test_manifest_gives_the_folder_codes_with_its_metadata(audio_dir, codec_dir, prepared, tmp_path):
    """An audiocraft jsonl manifest (paths relative to it) gives the same codes as the folder for the files
    it lists; its metadata fields update the sidecar's."""
    listed = ["tones/a440.wav", "noise/stereo48k.wav", "broken/corrupt.wav"]
    manifest = audio_dir / "subset.jsonl"
    lines = [{"path": p, "duration": GOOD.get(p, (0.0,))[0], "sample_rate": SR} for p in listed]
    lines[0]["genre"] = "Drone"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    try:
        prepare(manifest, codec_dir[1], tmp_path / "data")
    finally:
        manifest.unlink()
    got = all_examples(tmp_path / "data")
    folder = all_examples(prepared)
    for split in got:
        want = [ex for ex in folder[split] if ex["path"] in listed]
        assert [(ex["path"], ex["segment"]) for ex in got[split]] == [(ex["path"], ex["segment"]) for ex in want]
        for a, b in zip(got[split], want):
            np.testing.assert_array_equal(a["codes"], b["codes"])
            expected = {**b["metadata"], "genre": "drone"} if a["path"] == "tones/a440.wav" else b["metadata"]
            assert a["metadata"] == expected
    info = json.loads((tmp_path / "data/dataset.json").read_text())
    assert [s["path"] for s in info["skipped"]] == ["broken/corrupt.wav"]


def shard_bytes(data_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("musicgen_tokens-*"))}


def test_parts_merged_equal_one_run(audio_dir, codec_dir, prepared, tmp_path, capsys):
    """Two --parts into one folder (the first leaves the metadata to the last) give byte-identical shards
    and the same dataset.json as one run; --merge rewrites the same metadata."""
    out = tmp_path / "data"
    prepare(audio_dir, codec_dir[1], out, "--files-per-shard", "4", "--part", "1/2")
    assert not (out / "dataset.json").exists() and "part 1/2 done" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--merge", str(out), "--audio", str(audio_dir)])
    assert main(["--merge", str(out)]) == 2
    assert "2 of 3 units are not prepared yet (0, 2)" in capsys.readouterr().err
    prepare(audio_dir, codec_dir[1], out, "--files-per-shard", "4", "--part", "0/2", "--batch-size", "5")
    assert shard_bytes(out) == shard_bytes(prepared)
    assert json.loads((out / "dataset.json").read_text()) == json.loads((prepared / "dataset.json").read_text())
    (out / "dataset.json").unlink()
    assert main(["--merge", str(out)]) == 0
    assert json.loads((out / "dataset.json").read_text()) == json.loads((prepared / "dataset.json").read_text())


@pytest.mark.e2e
def test_killed_run_resumes_to_the_uninterrupted_result(audio_dir, codec_dir, prepared, tmp_path):
    """SIGKILL once the first of several units is done, then the same command again: the dataset equals
    one uninterrupted run's (shards byte for byte, dataset.json), finished shards are kept as they were, and
    no temporary file remains."""
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "musicgen_jax.data.prepare",
        "--audio",
        str(audio_dir),
        "--codec",
        str(codec_dir[1]),
        "--out",
        str(out),
        *ARGS,
        "--files-per-shard",
        "1",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "units").glob("unit-*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "units").glob("unit-*.json")))
    assert 1 <= done < len(GOOD) + len(SKIPPED) and not (out / "dataset.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("musicgen_tokens-*-00000-of-*")}
    assert len(kept) == 2  # unit 0's train and valid shards
    subprocess.run(command, check=True, capture_output=True)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished units are not redone
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]
    with_one_unit_per_file = tmp_path / "reference"
    prepare(audio_dir, codec_dir[1], with_one_unit_per_file, "--files-per-shard", "1")
    assert shard_bytes(out) == shard_bytes(with_one_unit_per_file)
    assert json.loads((out / "dataset.json").read_text()) == json.loads(
        (with_one_unit_per_file / "dataset.json").read_text()
    )


def test_changed_settings_are_refused(audio_dir, codec_dir, prepared, capsys):
    """Resuming into a folder prepared with other settings is one error naming them."""
    assert (
        main(
            [
                "--audio",
                str(audio_dir),
                "--codec",
                str(codec_dir[1]),
                "--out",
                str(prepared),
                *ARGS[:-3],
                "--seed",
                "2",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "prepared with different settings (seed, files_per_shard)" in capsys.readouterr().err
    assert (
        main(
            [
                "--audio",
                str(audio_dir),
                "--codec",
                str(codec_dir[1]),
                "--out",
                str(prepared),
                *ARGS,
                "--batch-size",
                "3",
                "--files-per-shard",
                "4",
                "--chroma",
            ]
        )
        == 2
    )
    assert "prepared with different settings (chroma)" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["no_audio", "nothing_readable", "missing", "bad_segment"])
def test_bad_inputs_are_one_clear_error(case, codec_dir, tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    extra = []
    if case == "no_audio":
        (audio / "readme.txt").write_text("x")
        message = f"no .wav, .flac, .mp3, .ogg file in {audio}"
    elif case == "nothing_readable":
        (audio / "a.wav").write_bytes(b"junk")
        (audio / "b.mp3").write_bytes(b"")
        message = "none of the 2 files gave an example: a.wav: cannot read audio file"
    elif case == "missing":
        audio = tmp_path / "nowhere"
        message = f"{audio}: no such folder or manifest"
    else:
        (audio / "a.wav").write_bytes(b"junk")
        extra = ["--segment-seconds", "0.333"]
        message = "segment_seconds = 0.333 s is not a whole number of codec frames (50 per second)"
    assert (
        main(
            [
                "--audio",
                str(audio),
                "--codec",
                str(codec_dir[1]),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert re.search(re.escape(message), err), err
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_precomputed_text_embeddings_equal_transformers_t5(audio_dir, codec_dir, hf_tokenizer, spiece_dir, tmp_path):
    """--text-encoder stores, per example, transformers' `T5EncoderModel` hidden states of its file's
    (normalized) description, to 1e-5; examples without a description store none ([0, D])."""
    from tests.text.conftest import tiny_hf_t5

    t5 = tiny_hf_t5(len(hf_tokenizer), seed=4)
    t5_dir = tmp_path / "t5"
    t5.save_pretrained(t5_dir)
    (t5_dir / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    prepare(audio_dir, codec_dir[1], tmp_path / "data", "--text-encoder", str(t5_dir))
    examples = [ex for items in all_examples(tmp_path / "data").values() for ex in items]
    described = 0
    for ex in examples:
        description = ex["metadata"]["description"]
        if description is None:
            assert ex["text_embedding"].shape == (0, 768)
            continue
        described += 1
        with torch.no_grad():
            expected = t5(**hf_tokenizer([description], return_tensors="pt")).last_hidden_state[0].numpy()
        np.testing.assert_allclose(ex["text_embedding"], expected, atol=1e-5, rtol=0)
    assert described == SEGMENTS["tones/a440.wav"] + SEGMENTS["noise/stereo48k.wav"]
    info = json.loads((tmp_path / "data/dataset.json").read_text())
    assert info["text_encoder"] == {"source": str(t5_dir), "d_model": 768}


def test_a_musicgen_checkpoint_is_a_codec_source(audio_dir, codec_dir, prepared, spiece_dir, tmp_path):
    """--codec pointing at a transformers MusicGen checkpoint codes with its audio_encoder: with the fixture
    codec's weights put there, the dataset equals the one prepared from the codec itself."""
    from tests.lm.conftest import save_hub_layout, tiny_hf_musicgen

    musicgen = tiny_hf_musicgen()
    musicgen.audio_encoder.load_state_dict(codec_dir[0].state_dict())
    save_hub_layout(musicgen, tmp_path / "musicgen", spiece_dir)
    prepare(audio_dir, tmp_path / "musicgen", tmp_path / "data", "--batch-size", "3", "--files-per-shard", "4")
    assert shard_bytes(tmp_path / "data") == shard_bytes(prepared)


@pytest.fixture(scope="module")
def melody_extractor():
    """transformers' `MusicgenMelodyFeatureExtractor()` with its default settings (32 kHz, n_fft 16384, hop
    4096, 30 s chunks, transformers' own chroma filter bank). torchaudio cannot be installed here (see
    tests/test_chroma.py), so the one torchaudio object its `__init__` builds, the Spectrogram, is
    test_chroma's stand-in running torchaudio's code for exactly the arguments given (checked)."""

    def spectrogram(n_fft, win_length, hop_length, power, center, pad, normalized):
        assert (win_length, power, center, pad, normalized) == (n_fft, 2, True, 0, True)
        return _Spectrogram(n_fft, hop_length)

    torchaudio = SimpleNamespace(transforms=SimpleNamespace(Spectrogram=spectrogram))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules[MusicgenMelodyFeatureExtractor.__module__], "torchaudio", torchaudio, raising=False)
        return MusicgenMelodyFeatureExtractor()


def reference_bins(extractor, mono: np.ndarray) -> np.ndarray:
    """The argmax bin per frame of transformers' chroma of a mono 32 kHz waveform `[L]`, L <= 30 s: one
    waveform is neither padded nor truncated (it pads to the longest, truncates at 30 s), so its frames are
    1 + max(L, n_fft) // hop, those of the segment."""
    features = extractor(mono, sampling_rate=SR, return_tensors="np")["input_features"]
    assert features.shape == (1, 1 + max(len(mono), 16384) // 4096, 12)
    return features[0].argmax(-1)


def check_chroma(examples, melody, extractor) -> int:
    """Assert that each example's chroma is the reference's of its slice of `melody(path)` (mono, 32 kHz);
    returns the number of frames compared."""
    frames = 0
    for ex in examples:
        start = ex["segment"] * SR
        expected = reference_bins(extractor, melody(ex["path"])[start : start + ex["codes"].shape[-1] * HOP])
        assert ex["chroma"].dtype == np.uint8
        np.testing.assert_array_equal(ex["chroma"], expected, err_msg=f"{ex['path']} segment {ex['segment']}")
        frames += len(expected)
    return frames


CHROMA_INFO = {"bins": 12, "n_fft": 16384, "hop_length": 4096, "sample_rate": SR}


def test_chroma_is_transformers_melody_chroma_of_each_segment(
    audio_dir, codec_dir, prepared, melody_extractor, tmp_path
):
    """--chroma stores, per example, exactly the argmax of transformers' MusicgenMelodyFeatureExtractor chroma
    of the mono slice it encodes (8 frames for 1 s segments, 5 for the 0.5 s tails, all 5 shorter than
    n_fft), silence bin 0 throughout; the codes and metadata are those of a run without chroma."""
    prepare(audio_dir, codec_dir[1], tmp_path / "data", "--chroma", "--batch-size", "3", "--files-per-shard", "4")
    examples = [ex for items in all_examples(tmp_path / "data").values() for ex in items]
    assert check_chroma(examples, lambda path: read_audio(audio_dir / path, SR, 1)[0][0], melody_extractor) == 103
    assert {len(ex["chroma"]) for ex in examples} == {8, 5}
    assert all(not ex["chroma"].any() for ex in examples if ex["path"] == "silence.wav")
    assert len({int(b) for ex in examples for b in ex["chroma"]}) >= 4
    without = [ex for items in all_examples(prepared).values() for ex in items]
    for a, b in zip(examples, without, strict=True):
        np.testing.assert_array_equal(a["codes"], b["codes"])
        assert (a["path"], a["segment"], a["metadata"]) == (b["path"], b["segment"], b["metadata"])
    assert shards.dataset_info(tmp_path / "data")["chroma"] == {**CHROMA_INFO, "stems": False}


def test_melody_stems_give_the_chroma_of_the_files_stems(audio_dir, codec_dir, melody_extractor, tmp_path, monkeypatch):
    """--melody-stems: `stems.melody_stems` runs once per file on the whole waveform (here a stand-in for
    Demucs: the file reversed, 7 samples short) and each segment's chroma is the reference's of its slice of
    that, zero-padded to the file's length."""
    audio = tmp_path / "audio"
    for name in ("tones/a440.wav", "noise/stereo48k.wav"):
        (audio / name).parent.mkdir(parents=True)
        shutil.copy(audio_dir / name, audio / name)
    calls = []

    def separated(wav, sample_rate, target_rate):
        assert sample_rate == target_rate == SR
        calls.append(wav.shape[-1])
        return wav.mean(0)[::-1][:-7]

    monkeypatch.setattr(stems, "_demucs", lambda: None)
    monkeypatch.setattr(stems, "melody_stems", separated)
    prepare(audio, codec_dir[1], tmp_path / "data", "--chroma", "--melody-stems")

    def melody(path):
        wav = read_audio(audio / path, SR, 1)[0][0]
        return np.pad(wav[::-1][:-7], (0, 7))

    examples = [ex for items in all_examples(tmp_path / "data").values() for ex in items]
    assert sorted(calls) == [70400, 80000] and len(examples) == 5  # 2.2 s and 2.5 s
    assert check_chroma(examples, melody, melody_extractor) == 4 * 8 + 5
    assert shards.dataset_info(tmp_path / "data")["chroma"] == {**CHROMA_INFO, "stems": True}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--melody-stems"], "--melody-stems requires --chroma"),
        (["--chroma", "--melody-stems"], "melody stems need Demucs: pip install 'musicgen-jax[melody]'"),
    ],
)
def test_melody_stems_without_chroma_or_demucs_is_one_clear_error(
    flags, message, audio_dir, codec_dir, tmp_path, capsys, monkeypatch
):
    """Checked before any file is read. Demucs is made unimportable (sys.modules None)."""
    monkeypatch.setitem(sys.modules, "demucs", None)
    # the module, not `musicgen_jax.data.prepare`, which the package's `prepare` function shadows
    monkeypatch.setattr(sys.modules["musicgen_jax.data.prepare"], "read_audio", lambda *args: pytest.fail("read"))
    stems._demucs.cache_clear()
    assert (
        main(
            [
                "--audio",
                str(audio_dir),
                "--codec",
                str(codec_dir[1]),
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
                *flags,
            ]
        )
        == 2
    )
    stems._demucs.cache_clear()
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err, err


def test_chroma_needs_a_codec_at_the_chroma_rate():
    assert chroma_config(SimpleNamespace(sample_rate=SR)).sample_rate == SR
    with pytest.raises(ValueError, match="--chroma needs a codec at 32000 Hz.* this codec runs at 24000 Hz"):
        chroma_config(SimpleNamespace(sample_rate=24000))


def test_lengths_are_whole_frames_at_any_frame_rate():
    """At a whole frame rate a length is exact or an error; at a fractional one (DAC 44.1 kHz: 44100 / 512 per
    second, where no whole second is whole frames) it is the nearest whole number of frames, at least one."""
    settings = Settings("a", "c", segment_seconds=30.0, length_step=1.0)
    assert segment_lengths(settings, 640, 50) == (1500 * 640, 50 * 640)
    assert segment_lengths(settings, 512, 44100 / 512) == (2584 * 512, 86 * 512)
    with pytest.raises(ValueError, match=r"length_step = 0.005 s is less than one codec frame \(1 / 86.1328 s\)"):
        segment_lengths(Settings("a", "c", length_step=0.005), 512, 44100 / 512)
    with pytest.raises(ValueError, match="invalid num_codebooks: 0"):
        Settings("a", "c", num_codebooks=0)
