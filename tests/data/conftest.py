"""Fixtures of the data tests: a tiny EnCodec checkpoint (transformers layout, and this project's stereo
form of the same weights) and a folder of generated clips covering what `prepare` must handle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from musicgen_jax.cli.prepare import main
from musicgen_jax.data import read_examples
from tests.codec.conftest import tiny_hf_model

SR = 32000


@pytest.fixture(scope="session")
def codec_dir(tmp_path_factory):
    """(transformers EncodecModel, directory of its `save_pretrained`): a codec source for `prepare`."""
    model = tiny_hf_model(seed=3)
    directory = tmp_path_factory.mktemp("encodec")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="session")
def stereo_codec_dir(codec_dir, tmp_path_factory):
    """The same weights saved as a stereo codec (channels coded apart, codebooks interleaved)."""
    from musicgen_jax.codec import Codec
    from musicgen_jax.codec.weights import save_codec
    from musicgen_jax.convert.codec_loader import load_codec

    mono = load_codec(codec_dir[1])
    directory = tmp_path_factory.mktemp("stereo_codec") / "codec"
    save_codec(Codec(mono.config, mono.params, stereo=True), directory)
    return codec_dir[0], directory


def tone(seconds: float, sr: int, freq: float, channels: int = 1) -> np.ndarray:
    """`[T, C]` sine with a slow amplitude ramp (so that every segment differs)."""
    t = np.arange(int(round(seconds * sr))) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t) * (0.3 + 0.7 * t / seconds)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def noise(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((int(round(seconds * sr)), channels)) * 0.2).astype(np.float32)


GOOD = {  # relative path -> (seconds, rate, channels)
    "tones/a440.wav": (2.5, SR, 1),
    "tones/low.flac": (1.3, SR, 1),
    "tones/deep/a220_44k.flac": (3.2, 44100, 1),
    "noise/stereo48k.wav": (2.2, 48000, 2),
    "noise/mono16k.ogg": (1.6, 16000, 1),
    "silence.wav": (1.5, SR, 1),
    "whole.mp3": (1.1, SR, 1),
}
SKIPPED = {  # relative path -> a piece of the reason
    "broken/corrupt.wav": "cannot read audio file",
    "broken/empty.wav": "contains no samples",
    "broken/zero_bytes.wav": "cannot read audio file",
    "broken/short.wav": "too short: 0.30 s",
    "broken/bad_json.wav": "unreadable metadata bad_json.json",
}
SIDECARS = {
    "tones/a440.json": {
        "description": "A calm sine. ",
        "genre": " Ambient ",
        "moods": "Calm, soft",
        "bpm": "60",
        "key": "A Major",
        "title": "Sine 440",
        "artist": "the tests",
        "extra": 1,
    },
    "noise/stereo48k.json": {
        "description": "Hiss",
        "keywords": ["Noise", "White"],
        "key": "C, D",
        "instrument": "Synth",
    },
}


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    """The clips of GOOD and SKIPPED, with the sidecars of SIDECARS."""
    root = tmp_path_factory.mktemp("audio")
    for i, (name, (seconds, sr, channels)) in enumerate(GOOD.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = noise(seconds, sr, channels, i) if "noise" in name else tone(seconds, sr, 220.0 * (i + 1), channels)
        if name == "silence.wav":
            data = np.zeros_like(data)
        soundfile.write(path, data, sr)
    (root / "broken").mkdir()
    (root / "broken/corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)
    soundfile.write(root / "broken/empty.wav", np.zeros((0, 1), np.float32), SR)
    (root / "broken/zero_bytes.wav").write_bytes(b"")
    soundfile.write(root / "broken/short.wav", tone(0.3, SR, 300.0), SR)
    soundfile.write(root / "broken/bad_json.wav", tone(1.2, SR, 500.0), SR)
    (root / "broken/bad_json.json").write_text("{not json")
    (root / "notes.txt").write_text("not audio")
    for name, meta in SIDECARS.items():
        (root / name).write_text(json.dumps(meta))
    return root


ARGS = [
    "--segment-seconds",
    "1",
    "--length-step",
    "0.5",
    "--min-seconds",
    "0.5",
    "--valid-fraction",
    "0.3",
    "--seed",
    "1",
    "--no-progress",
]


def prepare(audio, codec, out, *extra):
    """`musicgen_jax.data.prepare` of `audio` with `codec` into `out` with ARGS and `extra`."""
    assert main(["--audio", str(audio), "--codec", str(codec), "--out", str(out), *ARGS, *extra]) == 0


def all_examples(data_dir) -> dict:
    """{split: the examples of `read_examples`}."""
    return {split: list(read_examples(data_dir, split)) for split in ("train", "valid")}


@pytest.fixture(scope="session")
def prepared(audio_dir, codec_dir, tmp_path_factory):
    """The dataset of one run over `audio_dir` (4 files per shard: 3 units)."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(audio_dir, codec_dir[1], out, "--batch-size", "3", "--files-per-shard", "4")
    return out
