"""Training where pods train, every path a gs:// URL on a GCS emulator (`tests/gcs.py`): the dataset,
the work directory (Orbax checkpoints, metrics.jsonl), a SIGKILL while a checkpoint is being written and a
restart from the one before repeating the local run bitwise, the run loaded back for sampling; bad URLs as
one error line naming them."""

from __future__ import annotations

import os
import signal
import subprocess

import numpy as np
import pytest

from musicgen_jax import fileio
from musicgen_jax.fileio import upload_tree
from tests.train.runs import REPO, STEPS, command, final_state, jax_leaves, losses, run, wait_for_checkpoint_write

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bucket(gcs, inputs):
    """A bucket holding the training tests' dataset under `data`."""
    url = gcs.bucket("pod-runs")
    upload_tree(inputs[0], f"{url}/data")
    return url


def test_a_run_on_gcs_killed_and_resumed_repeats_the_local_run_bitwise(gcs, bucket, inputs, uninterrupted):
    data, workdir = f"{bucket}/data", f"{bucket}/runs/debug"
    env = {**os.environ, **gcs.env}
    proc = subprocess.Popen(
        command((data, inputs[1]), workdir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    writing = wait_for_checkpoint_write(workdir, proc, after=4)  # killed while a checkpoint is written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not fileio.exists(f"{workdir}/checkpoints/{writing}/commit_success.txt")
    assert writing <= len(losses(workdir)) < STEPS
    run((data, inputs[1]), workdir, env=env)
    assert losses(workdir) == losses(uninterrupted)
    (step, state), (expected_step, expected) = final_state(workdir), final_state(uninterrupted)
    assert step == expected_step == STEPS
    flat, reference = jax_leaves(state), jax_leaves(expected)
    assert len(flat) == len(reference) > 10
    for a, b in zip(flat, reference, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (REPO / "gs:").exists()  # no URL was taken for a local path

    from musicgen_jax.musicgen import load_components

    loaded, local = load_components(workdir), load_components(str(uninterrupted))
    assert loaded.source.startswith(workdir)
    for a, b in zip(jax_leaves(loaded.lm_params), jax_leaves(local.lm_params), strict=True):
        np.testing.assert_array_equal(a, b)
    from musicgen_jax.cli import evaluate, sample

    out, codes = f"{bucket}/samples", f"{bucket}/codes.npy"
    args = ["--model", workdir, "--duration", "0.2", "--top-k", "1", "--prompt", "calm piano", "--prompt", "rock"]
    assert sample.main([*args, "--out", out, "--save-codes", codes]) == 0
    assert sorted(p.name for p in fileio.path(out).iterdir()) == ["000_calm_piano.wav", "001_rock.wav"]
    assert fileio.load_npy(codes).shape == (2, 4, 10)
    args = ["--model", workdir, "--data", data, "--frames", "24", "--out", f"{bucket}/eval.json", "--no-progress"]
    assert evaluate.main(args) == 0
    assert fileio.read_json(f"{bucket}/eval.json")["examples"] == 3  # the valid split


@pytest.mark.parametrize(
    "data, workdir, named",
    [
        ("gs://no-such-bucket/data", "{bucket}/runs/x", "gs://no-such-bucket/data"),
        ("{bucket}/no-such-data", "{bucket}/runs/y", "{bucket}/no-such-data"),
        ("{bucket}/data", "gs://no-such-bucket/run", "gs://no-such-bucket/run"),
    ],
)
def test_a_bad_url_is_one_error_line_naming_it(gcs, bucket, inputs, data, workdir, named):
    data, workdir, named = (s.format(bucket=bucket) for s in (data, workdir, named))
    done = subprocess.run(
        command((data, inputs[1]), workdir), cwd=REPO, env={**os.environ, **gcs.env}, capture_output=True, text=True
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert named in lines[-1] and "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_a_checkpoint_left_unfinished_is_removed_before_a_run_saves(gcs, tmp_path, where):
    """A run killed while writing step 12 leaves `12.orbax-checkpoint-tmp-*` on a disk, `12/` without its
    `commit_success.txt` on GCS: the run's manager removes it (saving step 12 again would wait on Orbax's
    directory signal and fail) and keeps the finished step 8."""
    from musicgen_jax.train.rundir import checkpoint_manager

    root = str(tmp_path) if where == "local" else f"{gcs.bucket('unfinished')}/run"
    checkpoints = fileio.path(root) / "checkpoints"
    unfinished = "12.orbax-checkpoint-tmp-1700000000" if where == "local" else "12"
    for step, marker in (("8", "commit_success.txt"), (unfinished, None)):
        (checkpoints / step / "state").mkdir(parents=True, exist_ok=True)
        (checkpoints / step / "state" / "data").write_bytes(b"x")
        if marker:
            (checkpoints / step / marker).write_text("ok")
    checkpoint_manager(root, keep=3).close()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["8"]
