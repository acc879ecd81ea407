"""Test helpers for code that needs fresh processes: XLA fixes the host device count at start-up, and
`jax.distributed` joins several processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = "MUSICGEN_JAX_TEST_RESULT"


def device_env(devices: int, **extra: str) -> dict:
    """The environment of a process with `devices` host (CPU) devices that imports this repository (ahead of
    any PYTHONPATH of this process's)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PYTHONPATH": path, **extra}


def emit(result: dict) -> None:
    """Called by a script: write its result to the file its test named. Not stdout, where gloo's C++ threads
    write too, at times inside a line of ours."""
    Path(os.environ[RESULT]).write_text(json.dumps(result))


def result_file(directory: str | Path) -> tuple[dict, Path]:
    """The environment entry that tells a script's `emit` where to write, and that file."""
    path = Path(directory) / "result.json"
    return {RESULT: str(path)}, path


def run_json(script: Path, *args: str, devices: int = 8) -> dict:
    """Run `script args` with `devices` host devices; the object it `emit`s."""
    with tempfile.TemporaryDirectory() as directory:
        extra, path = result_file(directory)
        run = subprocess.run(
            [sys.executable, str(script), *args],
            env=device_env(devices, **extra),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(path.read_text())


def held_fraction(tree) -> float:
    """The fraction of the elements of a tree of arrays that this process's devices hold (each distinct
    piece counted once): 1 for arrays whole on this host, 0.5 for arrays split in half across two hosts."""
    import jax
    import numpy as np

    held = sum(
        sum(np.prod(s.data.shape) for s in {str(s.index): s for s in x.addressable_shards}.values())
        for x in jax.tree.leaves(tree)
    )
    return float(held / sum(x.size for x in jax.tree.leaves(tree)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(commands: list[list[str]], envs: list[dict], timeout: float = 600) -> list[str]:
    """Start every command at once (e.g. the processes of one `jax.distributed` job), wait for all, check
    that each exits 0; their stdouts."""
    procs = [
        subprocess.Popen(c, env=e, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, e in zip(commands, envs, strict=True)
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]
