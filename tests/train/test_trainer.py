"""The train step (`musicgen_jax.train.trainer`) on a device mesh computes what it computes on one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sharded(hf_musicgen):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("sharded_step.py")), str(hf_musicgen[1])],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["fsdp", "tensor"])
def test_one_step_on_8_devices_equals_one_device(sharded, mesh):
    """Loss and updated parameters after one AdamW step (guidance dropout drawn from the state's key) on
    data 2 x fsdp 4 and data 2 x tensor 4 equal one device's to 1e-5 relative (the loss; each parameter
    array in L2 norm); the parameters moved."""
    assert sharded["devices"] == 8 and sharded["moved"] > 1e-4
    assert sharded[mesh]["loss"] == pytest.approx(sharded["loss"], rel=1e-5)
    assert sharded[mesh]["param_rel"] < 1e-5


def test_state_is_split_like_the_parameters(sharded):
    """fc1 kernel [mlp 256, embed 64]: FSDP splits embed 4 ways, tensor splits mlp; AdamW moments and EMA
    follow their parameter."""
    fsdp = sharded["fsdp"]
    assert fsdp["kernel_shard"] == fsdp["moment_shard"] == fsdp["ema_shard"] == [256, 16]
    assert sharded["tensor"]["kernel_shard"] == sharded["tensor"]["moment_shard"] == [64, 64]
