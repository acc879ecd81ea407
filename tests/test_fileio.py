"""The path layer (`musicgen_jax.fileio`): local paths and gs:// URLs (on `tests/gcs.py`'s emulator) read
and written through one set of functions; a write is whole or absent; a failure is one `StorageError`
line naming the path."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from musicgen_jax import fileio

BUCKETS = itertools.count()  # a bucket per test on this process's emulator


def test_paths_keep_urls_and_make_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.fspath(fileio.path("gs://b/x/y.json")) == "gs://b/x/y.json"
    assert os.fspath(fileio.path("gs://b/x") / "y") == "gs://b/x/y"
    assert fileio.path("data/x") == tmp_path / "data" / "x"
    assert fileio.path("~/x") == fileio.path(os.path.expanduser("~/x"))
    assert fileio.is_url("s3://b/k") and not fileio.is_url("/a/b") and not fileio.is_url("a:b")


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    gcs = request.getfixturevalue("gcs")
    return f"{gcs.bucket(f'fileio-{next(BUCKETS)}')}/root"


def test_a_write_is_whole_or_absent(root):
    target = f"{root}/dir/a.json"
    fileio.save_json(target, {"a": 1})
    with pytest.raises(RuntimeError), fileio.atomic_file(target) as tmp:
        tmp.write_text('{"a": "half')
        raise RuntimeError("killed while writing")
    assert fileio.read_json(target) == {"a": 1}  # the old content, whole
    with pytest.raises(RuntimeError), fileio.atomic_file(f"{root}/dir/b.npy") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert not fileio.exists(f"{root}/dir/b.npy")
    assert sorted(p.name for p in fileio.path(f"{root}/dir").iterdir()) == ["a.json"]  # no temporary file
    fileio.write_text(f"{root}/dir/empty", "")  # an empty file is a file too
    assert fileio.exists(f"{root}/dir/empty") and fileio.size(f"{root}/dir/empty") == 0
    fileio.path(f"{root}/dir/empty").unlink()
    fileio.save_npy(f"{root}/dir/b.npy", np.arange(3))
    assert fileio.read_bytes(f"{root}/dir/b.npy")[:6] == b"\x93NUMPY"
    names = sorted(p.relative_to(fileio.path(root)).as_posix() for p in fileio.walk_files(root))
    assert names == ["dir/a.json", "dir/b.npy"]
    fileio.remove_tree(f"{root}/dir")
    assert not fileio.exists(f"{root}/dir/a.json")


def test_a_missing_file_is_one_line_naming_it(root):
    missing = f"{root}/nothing/here.json"
    with pytest.raises(fileio.StorageError, match=f"^cannot read {missing}: not found$"):
        fileio.read_json(missing)
    with pytest.raises(fileio.StorageError, match=f"^cannot read {missing}: not found$"):
        with fileio.local_copy(missing):
            pass


def test_a_missing_bucket_is_named(gcs):
    with pytest.raises(fileio.StorageError, match="the bucket gs://no-such-bucket does not exist"):
        fileio.make_dirs("gs://no-such-bucket/runs/x")
    with pytest.raises(fileio.StorageError, match="^cannot write gs://no-such-bucket/a.json: not found$"):
        fileio.save_json("gs://no-such-bucket/a.json", {})


def test_errors_other_than_storage_pass_through(tmp_path):
    with pytest.raises(KeyError), fileio.reporting(tmp_path):
        raise KeyError("not a storage failure")
    with pytest.raises(fileio.StorageError, match=f"cannot write {tmp_path}: permission denied"):
        with fileio.reporting(tmp_path, "write"):
            raise PermissionError(13, "Permission denied")
