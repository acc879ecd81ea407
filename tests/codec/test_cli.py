"""The tokenizer CLI `python -m musicgen_jax.codec`, on a tiny transformers EnCodec directory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from musicgen_jax.audio import read_audio
from musicgen_jax.cli.codec import main
from musicgen_jax.convert.codec_loader import load_codec
from tests.codec.conftest import tiny_hf_model

pytestmark = pytest.mark.e2e  # the tokenizer CLI end to end


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli_encodec")
    tiny_hf_model("reflect", seed=2).save_pretrained(directory)
    return directory


def test_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "musicgen_jax.codec", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert all(word in result.stdout for word in ("encode", "decode", "convert"))


def test_encode_resamples_and_downmixes_then_decode(hf_dir, tmp_path):
    rng = np.random.default_rng(0)
    stereo_44k = 0.3 * rng.standard_normal((44100 // 2, 2)).astype(np.float32)  # 0.5 s, 44.1 kHz, stereo
    soundfile.write(tmp_path / "in.flac", stereo_44k, 44100)
    assert main(["encode", "--codec", str(hf_dir), str(tmp_path / "in.flac"), str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    wav, sr = read_audio(tmp_path / "in.flac", sample_rate=32000, channels=1)
    assert sr == 32000 and wav.shape == (1, 16000)
    assert codes.dtype == np.int16 and codes.shape == (1, 4, 25)
    np.testing.assert_array_equal(codes, np.asarray(load_codec(hf_dir).encode(wav[None])))

    assert main(["decode", "--codec", str(hf_dir), str(tmp_path / "codes.npy"), str(tmp_path / "out.wav")]) == 0
    out, out_sr = soundfile.read(tmp_path / "out.wav")
    assert out_sr == 32000 and out.shape == (25 * 640,)
    assert abs(np.abs(out).max() - 10 ** (-1 / 20)) < 1e-3  # default peak normalization


def test_encode_and_decode_on_a_bucket_equal_local_files(hf_dir, tmp_path, gcs):
    """The same commands with every path a gs:// URL (`tests/gcs.py`'s emulator): the same codes and audio."""
    from musicgen_jax import fileio

    bucket = gcs.bucket("codec-cli")
    soundfile.write(tmp_path / "in.flac", 0.3 * np.random.default_rng(1).standard_normal(16000), 32000)
    fileio.path(f"{bucket}/in.flac").write_bytes((tmp_path / "in.flac").read_bytes())
    for root in (str(tmp_path), bucket):
        assert main(["encode", "--codec", str(hf_dir), f"{root}/in.flac", f"{root}/codes.npy"]) == 0
        assert main(["decode", "--codec", str(hf_dir), f"{root}/codes.npy", f"{root}/out.wav"]) == 0
    for name in ("codes.npy", "out.wav"):
        assert fileio.read_bytes(f"{bucket}/{name}") == (tmp_path / name).read_bytes()


def test_stereo_encode_interleaves(hf_dir, tmp_path):
    soundfile.write(tmp_path / "in.wav", np.random.default_rng(1).standard_normal((6400, 2)) * 0.1, 32000)
    assert main(["encode", "--stereo", "--codec", str(hf_dir), str(tmp_path / "in.wav"), str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (1, 8, 10)
    assert main(["decode", "--stereo", "--codec", str(hf_dir), str(tmp_path / "c.npy"), str(tmp_path / "o.flac")]) == 0
    assert soundfile.read(tmp_path / "o.flac")[0].shape == (6400, 2)


def test_convert_then_use_converted_dir(hf_dir, tmp_path):
    assert main(["convert", str(hf_dir), str(tmp_path / "conv")]) == 0
    soundfile.write(tmp_path / "in.wav", np.random.default_rng(2).standard_normal(3200) * 0.1, 32000)
    assert main(["encode", "--codec", str(tmp_path / "conv"), str(tmp_path / "in.wav"), str(tmp_path / "a.npy")]) == 0
    assert main(["encode", "--codec", str(hf_dir), str(tmp_path / "in.wav"), str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_unreadable_audio_is_one_clear_error(hf_dir, tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"RIFF" + bytes(range(200)))
    assert main(["encode", "--codec", str(hf_dir), str(tmp_path / "broken.wav"), str(tmp_path / "c.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read audio file") and "broken.wav" in err and "\n" not in err
    assert not (tmp_path / "c.npy").exists()


def test_out_of_range_codes_are_rejected(hf_dir, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.full((1, 4, 3), 2048, np.int16))
    assert main(["decode", "--codec", str(hf_dir), str(tmp_path / "bad.npy"), str(tmp_path / "o.wav")]) == 2
    assert "codes must lie in [0, 2048)" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_roundtrip_of_generated_clip(hf_dir, tmp_path):
    assert main(["roundtrip", "--codec", str(hf_dir), "--seconds", "0.5", str(tmp_path / "rt")]) == 0
    wav_in, sr = soundfile.read(tmp_path / "rt" / "input.wav")
    wav_out, _ = soundfile.read(tmp_path / "rt" / "reconstruction.wav")
    assert sr == 32000 and wav_in.shape == wav_out.shape == (16000,)
    assert np.load(tmp_path / "rt" / "codes.npy").shape == (1, 4, 25)


def test_roundtrip_fallback_only_when_asked(tmp_path, capsys):
    missing = str(tmp_path / "no_such_codec")
    assert main(["roundtrip", "--codec", missing, str(tmp_path / "rt")]) == 2
    assert "does not exist" in capsys.readouterr().err
