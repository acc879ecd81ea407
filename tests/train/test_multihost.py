"""Two `train.py` processes of 4 CPU devices each, joined by `jax.distributed` on localhost, train what
one process of 8 devices trains: each process holds one of the 2 data parts and its devices' shards. The
joined run works in a gs:// bucket (a GCS emulator, `tests/gcs.py`), as a pod with no shared disk does, is
preempted midway (SIGTERM to one process: both save the same step and exit) and restarted, and writes its
samples from the EMA split over both processes, never gathered (`watched_train.py`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from musicgen_jax import fileio
from musicgen_jax.audio import read_audio
from musicgen_jax.fileio import upload_tree
from tests.processes import REPO, device_env, free_port, result_file, run_together
from tests.train.runs import STEPS, command, wait_for


def records(workdir) -> list[dict]:
    return [json.loads(line) for line in fileio.read_text(fileio.path(workdir) / "metrics.jsonl").splitlines()]


def joined_envs(gcs, result: dict) -> list[dict]:
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2"}
    return [device_env(4, **gcs.env, **coordinator, **result, JAX_PROCESS_ID=str(i)) for i in range(2)]


@pytest.mark.e2e
def test_two_processes_on_gcs_preempted_and_restarted_match_one(gcs, inputs, tmp_path):
    extra = [
        "--config.eval_every=0",
        "--config.data_parts=2",
        "--config.mesh.fsdp=8",
        f"--config.generate_every={STEPS}",
        "--config.sample_seconds=0.2",
    ]
    single = tmp_path / "single"
    run_together([command(inputs, single, *extra)], [device_env(8)])
    bucket = gcs.bucket("pod-slice")
    upload_tree(inputs[0], f"{bucket}/data")
    joined = f"{bucket}/runs/joined"
    watched = command((f"{bucket}/data", inputs[1]), joined, *extra)
    watched[1] = str(Path(__file__).with_name("watched_train.py"))  # train.py, its samples watched
    commands = [watched] * 2
    result, where = result_file(tmp_path)
    first = [
        subprocess.Popen(c, env=e, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for c, e in zip(commands, joined_envs(gcs, result), strict=True)
    ]
    try:
        wait_for(f"{joined}/metrics.jsonl", 5, first[0])
        os.kill(first[1].pid, signal.SIGTERM)  # a preemption notice to one host: both save one step, exit 0
        for proc in first:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in first:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    saved = sorted(int(p.name) for p in (fileio.path(joined) / "checkpoints").iterdir() if p.name.isdigit())
    assert 5 <= saved[-1] == len(records(joined)) < STEPS
    run_together(commands, joined_envs(gcs, result))
    expected, got = records(single), records(joined)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, STEPS + 1))
    for a, b in zip(got, expected):
        for key in ("loss", "ce_0", "ce_3", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    state = fileio.path(joined) / "checkpoints" / str(STEPS) / "state"
    assert sorted(p.name for p in state.glob("ocdbt.process_*")) == ["ocdbt.process_0", "ocdbt.process_1"]
    # the samples of the EMA split over both processes (each holding about half of it, nothing gathered):
    # one process's, within float rounding
    for i in range(2):
        watch = json.loads(Path(f"{where}.{i}").read_text())
        assert watch["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1} and 0.4 < watch["held"] < 0.6, watch
    samples, reference = fileio.path(joined) / "samples" / str(STEPS), single / "samples" / str(STEPS)
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in samples.iterdir()) == names and len(names) == 4  # 3 prompts + settings.json
    assert fileio.read_json(samples / "settings.json") == json.loads((reference / "settings.json").read_text())
    for name in names[:-1]:
        wav, rate = read_audio(samples / name)
        expected_wav, expected_rate = read_audio(reference / name)
        assert rate == expected_rate and wav.shape == expected_wav.shape
        np.testing.assert_allclose(wav, expected_wav, atol=1e-4 * np.abs(expected_wav).max())
