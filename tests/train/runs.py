"""`train.py` runs of the debug config for the tests (a tiny token dataset and a tiny T5, 24 steps, a
checkpoint every 4): the command, and reading a run back, from a local directory or a gs:// URL alike."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from musicgen_jax import fileio

REPO = Path(__file__).resolve().parents[2]
STEPS = 24


def command(inputs, workdir, *extra) -> list[str]:
    data, t5 = inputs
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs/debug.py"),
        "--workdir",
        str(workdir),
        f"--config.data_dir={data}",
        f"--config.text_encoder={t5}",
        f"--config.total_steps={STEPS}",
        "--config.frames=24",
        "--config.log_every=1",
        "--config.checkpoint_every=4",
        f"--config.eval_every={STEPS}",
        "--no_progress",
        *extra,
    ]


def run(inputs, workdir, *extra, env: dict | None = None) -> None:
    done = subprocess.run(command(inputs, workdir, *extra), capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-12000:]


def losses(workdir) -> list[tuple]:
    lines = [json.loads(line) for line in fileio.read_text(fileio.path(workdir) / "metrics.jsonl").splitlines()]
    return [(r["step"], r["loss"], r["ce_0"], r["ce_3"], r["grad_norm"], r["lr"]) for r in lines]


def final_state(workdir):
    import orbax.checkpoint as ocp

    checkpoints = fileio.path(workdir) / "checkpoints"
    step = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    return step, ocp.StandardCheckpointer().restore(checkpoints / str(step) / "state")


def wait_for(where, lines: int, proc, timeout: float = 300) -> None:
    """Until the file `where` (a path or URL) has `lines` lines, while `proc` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if fileio.exists(where) and len(fileio.read_text(where).splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{where} did not reach {lines} lines (exit {proc.poll()})")


def wait_for_checkpoint_write(workdir: str, proc, after: int, timeout: float = 300) -> int:
    """Until a checkpoint past step `after` is being written in the gs:// `workdir` (a step folder without
    Orbax's `commit_success.txt`, written last), while `proc` runs: its step."""
    checkpoints = fileio.path(workdir) / "checkpoints"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for p in checkpoints.iterdir() if checkpoints.exists() else []:
            if p.name.isdigit() and int(p.name) > after and not (p / "commit_success.txt").exists():
                return int(p.name)
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint past step {after} was seen being written in {workdir} (exit {proc.poll()})")


def jax_leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]
