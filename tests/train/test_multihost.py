"""Two `train.py` processes of 4 CPU devices each, joined by `jax.distributed` on localhost, train what
one process of 8 devices trains: each process holds one of the 2 data parts and its devices' shards."""

from __future__ import annotations

import json

import pytest

from tests.processes import device_env, free_port, run_together
from tests.train.runs import command

STEPS = 12


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.e2e
def test_two_processes_match_one(inputs, tmp_path):
    extra = [f"--config.total_steps={STEPS}", "--config.eval_every=0", "--config.data_parts=2", "--config.mesh.fsdp=4"]
    single = tmp_path / "single"
    run_together([command(inputs, single, *extra)], [device_env(8)])
    joined, port = tmp_path / "joined", free_port()
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2"}
    run_together(
        [command(inputs, joined, *extra)] * 2, [device_env(4, **coordinator, JAX_PROCESS_ID=str(i)) for i in range(2)]
    )
    expected, got = records(single), records(joined)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, STEPS + 1))
    for a, b in zip(got, expected):
        for key in ("loss", "ce_0", "ce_3", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    assert sorted(p.name for p in (joined / "checkpoints" / str(STEPS) / "state").glob("ocdbt.process_*")) == [
        "ocdbt.process_0",
        "ocdbt.process_1",
    ]
