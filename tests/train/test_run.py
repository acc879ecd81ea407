"""`train.py` runs of the debug config on a tiny token dataset and a tiny T5: SIGKILL then restart repeats
the uninterrupted run bitwise; SIGTERM saves and exits 0; a checkpoint of other settings, or a corrupt
one, is one clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.data.test_pipeline import write_dataset
from tests.text.conftest import tiny_hf_t5

REPO = Path(__file__).resolve().parents[2]
STEPS = 24


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, hf_tokenizer, spiece_dir):
    data = tmp_path_factory.mktemp("tokens")
    write_dataset(data, [40, 30, 35, 50, 45, 38, 41, 33] * 2)
    t5 = tmp_path_factory.mktemp("t5")
    tiny_hf_t5(len(hf_tokenizer)).save_pretrained(t5)
    (t5 / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    return data, t5


def command(inputs, workdir, *extra):
    data, t5 = inputs
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/debug.py"), "--workdir",
            str(workdir), f"--config.data_dir={data}", f"--config.text_encoder={t5}", f"--config.total_steps={STEPS}",
            "--config.frames=24", "--config.log_every=1", "--config.checkpoint_every=4", "--no_progress", *extra]


def losses(workdir) -> list[tuple]:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["ce_0"], r["ce_3"], r["grad_norm"], r["lr"]) for r in lines]


def final_state(workdir):
    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    return step, ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")


def wait_for(path: Path, lines: int, proc, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {lines} lines (exit {proc.poll()})")


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    subprocess.run(command(inputs, workdir), check=True, capture_output=True, cwd=REPO)
    return workdir


def test_sigkill_then_restart_repeats_the_uninterrupted_run_bitwise(inputs, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(command(inputs, workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(workdir / "metrics.jsonl", 10, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(losses(workdir)) < STEPS
    subprocess.run(command(inputs, workdir), check=True, capture_output=True, cwd=REPO)
    expected = losses(uninterrupted)
    assert [r[0] for r in expected] == list(range(1, STEPS + 1))
    assert losses(workdir) == expected
    assert expected[-1][1] < expected[0][1]  # it learns
    step, state = final_state(workdir)
    expected_step, expected_state = final_state(uninterrupted)
    assert step == expected_step == STEPS
    flat, reference = (jax_leaves(s) for s in (state, expected_state))
    assert len(flat) == len(reference) > 10
    for a, b in zip(flat, reference):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_sigterm_saves_the_current_step_and_exits_0(inputs, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(command(inputs, workdir, "--config.checkpoint_every=1000"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(workdir / "metrics.jsonl", 6, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    step, state = final_state(workdir)
    logged = losses(workdir)[-1][0]
    assert 6 <= step < STEPS and step in (logged, logged + 1) and int(state["step"]) == step


def test_other_settings_or_a_corrupt_checkpoint_are_refused(inputs, uninterrupted, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    other = subprocess.run(command(inputs, workdir, "--config.seed=3"), capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 2 and "holds a run with other settings (seed)" in other.stderr
    for file in (workdir / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"garbage")
    corrupt = subprocess.run(command(inputs, workdir, "--config.total_steps=30"), capture_output=True, text=True,
                             cwd=REPO)
    assert corrupt.returncode == 2 and f"checkpoint {workdir / 'checkpoints' / str(STEPS)} is unreadable" in corrupt.stderr
