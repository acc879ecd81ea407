"""Two `train.py` processes of 4 CPU devices each, joined by `jax.distributed` on localhost, train what
one process of 8 devices trains: each process holds one of the 2 data parts and its devices' shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.train.test_run import REPO, command

STEPS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_match_one(inputs, tmp_path):
    extra = [f"--config.total_steps={STEPS}", "--config.eval_every=0", "--config.data_parts=2",
             "--config.mesh.fsdp=4"]
    single = tmp_path / "single"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    subprocess.run(command(inputs, single, *extra), check=True, capture_output=True, cwd=REPO, env=env, timeout=600)
    joined = tmp_path / "joined"
    port = _free_port()
    procs = [subprocess.Popen(command(inputs, joined, *extra), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                                              "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                              "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    expected, got = records(single), records(joined)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, STEPS + 1))
    for a, b in zip(got, expected):
        for key in ("loss", "ce_0", "ce_3", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    assert sorted(p.name for p in (joined / "checkpoints" / str(STEPS) / "state").glob("ocdbt.process_*")) == [
        "ocdbt.process_0", "ocdbt.process_1"]
