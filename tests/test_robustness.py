"""Failure injection on the atomic writes (`fileio.save_npy`, `native.atomic_directory`) and the codec
CLI that uses them: a write that fails half-way raises (a CLI: exits 2 with one `error:` line), leaves
no partial file or directory at the target and no temporary one beside it, and leaves an existing
target byte for byte as it was. Also: tests cannot reach the Hugging Face hub (tests/conftest.py)."""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import safetensors.numpy
import soundfile
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.cli.codec import main as codec_main
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.fileio import save_npy
from tests.codec.conftest import tiny_hf_model


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (hidden ones included) by relative path, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_half_then_fail(file, data: bytes):
    """Write the first half of `data` to `file` (a path or an open file), then fail as a full disk does."""
    if isinstance(file, (str, os.PathLike)):
        Path(file).write_bytes(data[: len(data) // 2])
    else:
        file.write(data[: len(data) // 2])
    raise disk_full()


def half_then_disk_full(real):
    """A stand-in for a writer `real(file, ...)` (np.save, soundfile.write) that writes half of its output."""

    def write(file, *args, **kwargs):
        buffer = io.BytesIO()
        real(buffer, *args, **kwargs)
        write_half_then_fail(file, buffer.getvalue())

    return write


def half_safetensors_then_disk_full(tensors, filename):
    """A stand-in for safetensors' save_file that writes half of the file."""
    write_half_then_fail(filename, safetensors.numpy.save(tensors))


def failing_replace(*args, **kwargs):
    raise disk_full()


def failing_rename_onto(target: Path):
    """Path.rename, except that renaming the temporary directory onto `target` fails."""
    rename = Path.rename

    def fake(self, destination):
        if Path(destination) == target and ".old." not in self.name:
            raise disk_full()
        return rename(self, destination)

    return fake


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    """A tiny transformers EnCodec directory (4 codebooks, 32 kHz)."""
    directory = tmp_path_factory.mktemp("robust_encodec")
    tiny_hf_model("reflect", seed=2).save_pretrained(directory)
    return directory


@pytest.fixture
def clip(tmp_path_factory):
    """0.2 s of noise at 32 kHz, written outside the test's own directory."""
    path = tmp_path_factory.mktemp("clip") / "in.wav"
    soundfile.write(path, np.random.default_rng(0).standard_normal(6400) * 0.1, 32000)
    return path


@pytest.mark.parametrize("inject", ["np.save", "os.replace"])
@pytest.mark.parametrize("existing", [False, True])
def test_save_npy_failure_leaves_no_partial_file_and_the_old_one_intact(tmp_path, monkeypatch, inject, existing):
    """A write failing half-way (disk full) or at the final rename raises ValueError naming the target;
    the target is absent (or unchanged when it existed) and no temporary file remains."""
    target = tmp_path / "codes.npy"
    if existing:
        np.save(target, np.arange(7))
    before = snapshot(tmp_path)
    if inject == "np.save":
        monkeypatch.setattr(np, "save", half_then_disk_full(np.save))
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ValueError, match=re.escape(f"cannot write {target}: No space left on device")):
        save_npy(target, np.zeros((1, 4, 100), np.int16))
    assert snapshot(tmp_path) == before


def test_save_npy_overwrites_and_reports_an_unwritable_target(tmp_path):
    """Success replaces an existing file (readable by others, 0o644); a directory in the target's place
    is one ValueError naming it, and nothing is left beside it."""
    target = tmp_path / "codes.npy"
    np.save(target, np.arange(7))
    codes = np.arange(12, dtype=np.int16).reshape(1, 3, 4)
    save_npy(target, codes)
    np.testing.assert_array_equal(np.load(target), codes)
    assert target.stat().st_mode & 0o777 == 0o644 and os.listdir(tmp_path) == ["codes.npy"]
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"cannot write {tmp_path / 'taken'}: Is a directory")):
        save_npy(tmp_path / "taken", codes)
    assert sorted(os.listdir(tmp_path)) == ["codes.npy", "taken"] and not os.listdir(tmp_path / "taken")


def test_atomic_directory_failures_keep_the_old_directory(tmp_path, monkeypatch):
    """An error in the body propagates as is; a failing rename into place restores the old directory
    (which was moved aside first) and raises CheckpointError. Neither leaves a temporary directory."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("old")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="half-way"):
        with native.atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("new")
            raise RuntimeError("half-way")
    assert snapshot(tmp_path) == before

    monkeypatch.setattr(Path, "rename", failing_rename_onto(target))
    with pytest.raises(CheckpointError, match=re.escape(f"cannot write {target}: No space left on device")):
        with native.atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("new")
    assert snapshot(tmp_path) == before and os.listdir(tmp_path) == ["out"]


def one_error_line(capsys) -> str:
    """The CLI's stderr, asserted to be a single `error: ...` line, without the prefix."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.removeprefix("error: ").strip()


def test_codec_encode_write_failure(codec_dir, clip, tmp_path, monkeypatch, capsys):
    """`encode` over an existing codes file: a half-written, failing np.save exits 2 with one error line
    naming the file, which keeps its old bytes; nothing else is left in its directory."""
    target = tmp_path / "codes.npy"
    np.save(target, np.arange(7))
    before = snapshot(tmp_path)
    monkeypatch.setattr(np, "save", half_then_disk_full(np.save))
    assert codec_main(["encode", "--codec", str(codec_dir), str(clip), str(target)]) == 2
    assert one_error_line(capsys) == f"cannot write {target}: No space left on device"
    assert snapshot(tmp_path) == before


def test_codec_encode_overwrites(codec_dir, clip, tmp_path):
    """`encode` replaces an existing codes file with the clip's codes and leaves nothing beside it."""
    target = tmp_path / "codes.npy"
    np.save(target, np.arange(7))
    assert codec_main(["encode", "--codec", str(codec_dir), str(clip), str(target)]) == 0
    assert np.load(target).shape == (1, 4, 10) and os.listdir(tmp_path) == ["codes.npy"]


@pytest.fixture
def codes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("codes") / "codes.npy"
    np.save(path, np.random.default_rng(0).integers(0, 2048, (1, 4, 10), dtype=np.int16))
    return path


def test_codec_decode_write_failure(codec_dir, codes_file, tmp_path, monkeypatch, capsys):
    """`decode` over an existing audio file: a half-written, failing soundfile.write exits 2 with one error
    line naming the file, which keeps its old bytes; no temporary file is left."""
    target = tmp_path / "out.wav"
    soundfile.write(target, np.zeros(100), 32000)
    before = snapshot(tmp_path)
    monkeypatch.setattr(soundfile, "write", half_then_disk_full(soundfile.write))
    assert codec_main(["decode", "--codec", str(codec_dir), str(codes_file), str(target)]) == 2
    assert one_error_line(capsys).startswith(f"cannot write audio file {target}: ")
    assert snapshot(tmp_path) == before


def test_codec_decode_overwrites(codec_dir, codes_file, tmp_path):
    """`decode` replaces an existing audio file with the decoded codes and leaves nothing beside it."""
    target = tmp_path / "out.wav"
    soundfile.write(target, np.zeros(100), 32000)
    assert codec_main(["decode", "--codec", str(codec_dir), str(codes_file), str(target)]) == 0
    assert soundfile.info(target).frames == 10 * 640 and os.listdir(tmp_path) == ["out.wav"]


@pytest.fixture
def old_conversion(tmp_path):
    """An existing output directory of `convert`, with a file a new conversion does not write."""
    target = tmp_path / "conv"
    target.mkdir()
    (target / native.CONFIG_FILE).write_text("{}")
    (target / "stale.txt").write_text("from an earlier run")
    return target


def test_codec_convert_failure_mid_write(codec_dir, old_conversion, tmp_path, monkeypatch, capsys):
    """`convert` whose params file is half-written when the disk fills exits 2 with one error line
    naming the directory; the old directory is unchanged and no temporary directory remains."""
    before = snapshot(tmp_path)
    monkeypatch.setattr(native, "save_file", half_safetensors_then_disk_full)
    assert codec_main(["convert", str(codec_dir), str(old_conversion)]) == 2
    assert one_error_line(capsys) == f"cannot write {old_conversion}: No space left on device"
    assert snapshot(tmp_path) == before


def test_codec_convert_failure_at_rename(codec_dir, old_conversion, tmp_path, monkeypatch, capsys):
    """`convert` whose finished directory cannot be renamed into place exits 2 and puts the old
    directory, already moved aside, back: the output is unchanged, nothing else remains."""
    before = snapshot(tmp_path)
    monkeypatch.setattr(Path, "rename", failing_rename_onto(old_conversion))
    assert codec_main(["convert", str(codec_dir), str(old_conversion)]) == 2
    assert one_error_line(capsys) == f"cannot write {old_conversion}: No space left on device"
    assert snapshot(tmp_path) == before and os.listdir(tmp_path) == ["conv"]


def test_codec_convert_replaces_an_existing_directory(codec_dir, old_conversion, tmp_path):
    """`convert` over an existing directory replaces it whole (its stale file is gone) and leaves no
    temporary or moved-aside directory; the result loads as the source codec."""
    assert codec_main(["convert", str(codec_dir), str(old_conversion)]) == 0
    assert sorted(os.listdir(old_conversion)) == [native.CONFIG_FILE, native.PARAMS_FILE]
    assert os.listdir(tmp_path) == ["conv"]
    assert load_codec(old_conversion).config == load_codec(codec_dir).config


def test_hub_is_offline(tmp_path):
    """The autouse fixture of tests/conftest.py: a download fails at once in offline mode instead of
    reaching the network, and subprocesses inherit the setting."""
    start = time.time()
    with pytest.raises((OfflineModeIsEnabled, LocalEntryNotFoundError)):
        huggingface_hub.hf_hub_download("facebook/musicgen-small", "config.json", cache_dir=tmp_path)
    assert time.time() - start < 5
    child = subprocess.run(
        [sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "True"
