"""`prepare` from a bucket to a bucket (`tests/gcs.py`'s emulator): two `--part`s give the shards of one
local run byte for byte and its `dataset.json`; a unit whose shard was written but whose record was not
is redone; a run killed with SIGKILL and started again ends as the uninterrupted one; the dataset reads
back from gs:// as it does from a local folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from musicgen_jax import fileio
from musicgen_jax.cli.prepare import main
from musicgen_jax.fileio import upload_tree
from tests.data.conftest import ARGS, all_examples, prepare

pytestmark = pytest.mark.e2e


def shard_bytes(data_dir) -> dict:
    shards = fileio.path(data_dir).glob("musicgen_tokens-*")
    return {p.name: fileio.read_bytes(p) for p in sorted(shards, key=lambda p: p.name)}


def comparable(info: dict) -> dict:
    """dataset.json without what names the audio folder (its path or URL)."""
    settings = {k: v for k, v in info["settings"].items() if k != "audio"}
    skipped = sorted(s["path"] for s in info["skipped"])
    return {**info, "settings": settings, "skipped": skipped}


def test_parts_on_gcs_equal_one_local_run(gcs, audio_dir, codec_dir, prepared, capsys):
    bucket = gcs.bucket("pod-audio")
    upload_tree(audio_dir, f"{bucket}/audio")
    out = f"{bucket}/data"
    prepare(f"{bucket}/audio", codec_dir[1], out, "--files-per-shard", "4", "--part", "1/2")
    assert not fileio.exists(f"{out}/dataset.json") and "part 1/2 done" in capsys.readouterr().out
    prepare(f"{bucket}/audio", codec_dir[1], out, "--files-per-shard", "4", "--part", "0/2", "--batch-size", "5")
    expected = shard_bytes(prepared)
    assert shard_bytes(out) == expected
    info, local = (fileio.read_json(f"{d}/dataset.json") for d in (out, prepared))
    assert comparable(info) == comparable(local)
    examples, reference = all_examples(out), all_examples(prepared)
    assert [e["path"] for e in examples["train"]] == [e["path"] for e in reference["train"]]
    for got, want in zip(examples["train"] + examples["valid"], reference["train"] + reference["valid"], strict=True):
        assert (got["codes"] == want["codes"]).all() and got["metadata"] == want["metadata"]

    # killed after unit 1's shards, before its record: the record is what counts, so the unit is redone
    shard = sorted(name for name in expected if "-00001-of-" in name)[0]
    fileio.path(f"{out}/{shard}").write_bytes(b"half a shard")
    fileio.path(f"{out}/units/unit-00001.json").unlink()
    fileio.path(f"{out}/dataset.json").unlink()
    prepare(f"{bucket}/audio", codec_dir[1], out, "--files-per-shard", "4", "--part", "1/2")
    assert shard_bytes(out) == expected and fileio.exists(f"{out}/dataset.json")


def test_a_run_killed_while_writing_to_a_bucket_ends_as_the_uninterrupted_one(gcs, audio_dir, codec_dir, prepared):
    """SIGKILL once the first unit's record is in the bucket, then the same command: the shards and
    dataset.json of one uninterrupted run, each unit recorded."""
    bucket = gcs.bucket("pod-audio-killed")
    upload_tree(audio_dir, f"{bucket}/audio")
    out = f"{bucket}/data"
    command = [sys.executable, "-m", "musicgen_jax.data.prepare", "--audio", f"{bucket}/audio"]
    command += ["--codec", str(codec_dir[1]), "--out", out, *ARGS, "--files-per-shard", "4"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **gcs.env})
    units = fileio.path(f"{out}/units")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not list(units.glob("unit-*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(units.glob("unit-*.json")))
    assert 1 <= done < 3 and not fileio.exists(f"{out}/dataset.json")
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **gcs.env})
    assert shard_bytes(out) == shard_bytes(prepared)
    info, local = (fileio.read_json(f"{d}/dataset.json") for d in (out, prepared))
    assert comparable(info) == comparable(local)
    assert sorted(p.name for p in units.iterdir()) == ["unit-00000.json", "unit-00001.json", "unit-00002.json"]


@pytest.mark.parametrize(
    "audio, out, named",
    [
        ("gs://no-such-bucket/audio", "{tmp}/data", "gs://no-such-bucket/audio: no such folder or manifest"),
        ("{bucket}/no-audio", "{tmp}/data", "{bucket}/no-audio: no such folder or manifest"),
        ("{audio}", "gs://no-such-bucket/data", "the bucket gs://no-such-bucket does not exist"),
    ],
)
def test_a_bad_url_is_one_error_line_naming_it(gcs, audio_dir, codec_dir, tmp_path, capsys, audio, out, named):
    fill = {"bucket": gcs.bucket("prepare-errors"), "tmp": tmp_path}
    audio, out, named = (s.format(audio=audio_dir, **fill) for s in (audio, out, named))
    assert main(["--audio", audio, "--codec", str(codec_dir[1]), "--out", out, "--no-progress"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and named in errors[0], errors
