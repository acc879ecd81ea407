"""The train step (`musicgen_jax.train.trainer`) on a device mesh computes what it computes on one device."""

from pathlib import Path

import pytest

from tests.processes import run_json

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sharded(hf_musicgen):
    return run_json(Path(__file__).with_name("sharded_step.py"), str(hf_musicgen[1]))


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
