"""The LM, and `MusicGen` end to end, split over a device mesh by the logical axis rules
(`musicgen_jax.sharding`) compute what they compute on one device. The multi-device tests run in fresh
processes, as XLA fixes the device count at start-up: `sharded_run.py` and `musicgen_sharded_run.py` with 8
host devices (`--xla_force_host_platform_device_count=8`), and `multihost_run.py` as two processes of 4
devices joined by `jax.distributed.initialize`."""

import json
import sys
from pathlib import Path

import jax
import pytest

from musicgen_jax.sharding import make_mesh
from tests.lm.musicgen_sharded_run import FRAMES
from tests.processes import device_env, free_port, result_file, run_json, run_together

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sharded(hf_musicgen):
    return run_json(Path(__file__).with_name("sharded_run.py"), str(hf_musicgen[1]))


def test_parameters_are_split_by_the_rules(sharded):
    assert sharded["devices"] == 8 and sharded["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharded["fc1_spec"] == ["tensor", "fsdp"]  # kernel [out = mlp, in = embed]
    assert sharded["fc1_shard_shape"] == [128, 32]  # [ffn 256, dim 64] split 2 x 2
    assert sharded["stacked_fc1_spec"] == ["None", "tensor", "fsdp"]  # scanned layout: layer axis whole
    assert sharded["collectives"] > 0  # the compiled forward really runs split across devices
    unconstrained, constraints = sharded["constraints"]
    assert unconstrained == 0 and constraints >= 2 * 3  # per layer at least: tokens, heads, mlp


def test_sharded_logits_equal_one_device(sharded):
    """Teacher-forced logits on the mesh (unrolled and scanned layers) vs one device: 1e-5 relative, with
    the weights of the parity tests (tests/lm/mesh_inputs.py)."""
    scale = sharded["logits_scale"]
    assert sharded["text_effect"] > 0.05 * scale  # rows differ by their text alone: the cross-attention matters
    assert sharded["sharded_diff"] <= 1e-5 * scale
    assert sharded["scanned_diff"] <= 1e-5 * scale


@pytest.mark.parametrize("mode", ["greedy", "top_k"])
def test_sharded_generation_gives_the_same_tokens(sharded, mode):
    single, split = sharded["tokens"][mode]
    assert len(single) == 2 and len(single[0][0]) == 20
    assert sharded["greedy_text_effect"] > 0.3  # the two prompts' greedy tokens differ: the text is used
    assert split == single


def test_indivisible_parameter_is_named(sharded):
    message = sharded["indivisible_error"]
    assert "layers_0']['fc1']['kernel']" in message and "(129, 64)" in message and "tensor" in message


def test_make_mesh_checks_sizes():
    devices = jax.devices()
    assert dict(make_mesh(devices=devices).shape) == {"data": len(devices), "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="needs 2 devices, there are 1"):
        make_mesh(data=1, tensor=2, devices=devices[:1])
    with pytest.raises(ValueError, match="one may be -1"):
        make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="do not divide"):
        make_mesh(data=-1, tensor=2, devices=devices[:1])


def test_two_processes_share_one_mesh(hf_musicgen, tmp_path):
    """Two local processes x 4 host devices, `jax.distributed.initialize`: parameters placed by `shard`
    (each process its own pieces), logits and greedy tokens equal one device's, with the weights of the
    parity tests, under which the two prompts' greedy tokens differ; `MusicGen` on the mesh from weights
    already split over it samples one device's codes and audio (4 prompts, gathered from both processes;
    2, a batch the mesh's batch split does not divide), each process holding only its pieces of the LM."""
    script, port = str(Path(__file__).with_name("multihost_run.py")), str(free_port())
    extra, path = result_file(tmp_path)
    run_together(
        [[sys.executable, script, str(i), port, str(hf_musicgen[1])] for i in range(2)], [device_env(4, **extra)] * 2
    )
    result = json.loads(path.read_text())
    assert (result["processes"], result["devices"], result["local"]) == (2, 8, 4)
    assert result["fc1_local_shards"] == 4
    assert result["logits_diff"] <= 1e-5 * result["logits_scale"]
    assert result["tokens_shape"] == [2, 4, 16] and result["tokens_equal"]
    assert result["greedy_text_effect"] > 0.3
    # MusicGen from weights split over both processes (fsdp 4 x tensor 2): 4 prompts, the batch split; 2
    assert result["musicgen_codes_shape"] == [4, 4, 15] and result["musicgen_codes_equal"]
    assert result["musicgen_odd_codes_equal"]
    assert result["musicgen_wav_diff"] <= 1e-5
    assert 0.4 < result["musicgen_local_fraction"] < 0.6  # neither process holds the whole LM


@pytest.fixture(scope="module")
def whole(converted):
    return run_json(Path(__file__).with_name("musicgen_sharded_run.py"), str(converted))


@pytest.mark.parametrize("mesh", ["data", "tensor"])
def test_musicgen_splits_a_batch_end_to_end(whole, mesh):
    """`MusicGen.get_pretrained(..., mesh=...)`, 8 prompts on 8 host devices (data 8; data 4 x tensor 2): the
    codes of one device (and `sample.py --mesh data=8`'s), the audio within 1e-5 of its peak, and for 3
    prompts (a batch the mesh's batch split does not divide) a continuation's and a stream's; the text
    states, the codes and the audio each split over the batch, the weights as the rules say."""
    got = whole[mesh]
    assert whole["devices"] == 8 and whole["single_text_effect"] == 8  # every prompt's codes differ
    assert whole["sample_py_codes_equal"]
    assert got["codes_equal"] and got["stage_codes_equal"]
    assert got["odd_equal"] and got["odd_shapes"] == [[3, 4, FRAMES], [3, 4, FRAMES]]
    assert got["odd_rows"] == {"text": 3, "encode": 3, "decode": 3}
    assert got["wav_diff"] <= 1e-5
    rows = 8 if mesh == "data" else 4  # devices along the batch
    for stage in ("text", "tokens", "audio"):
        assert got[stage]["devices"] == 8 and got[stage]["shard_shape"][0] == 8 // rows, stage
        assert whole["single"][stage]["devices"] == 1
    assert got["codec_kernel"]["shard_shape"] == whole["single"]["codec_kernel"]["shard_shape"]
    if mesh == "data":  # pure data parallelism: no stage talks to another device
        assert got["collectives"] == {"t5": 0, "lm": 0, "codec": 0}
        assert got["lm_fc1"]["shard_shape"] == [256, 64] and got["t5_wi"]["shard_shape"] == [32, 64]
    else:  # the LM's and T5's feed-forward split over the tensor axis, the codec still alone
        assert got["lm_fc1"]["shard_shape"] == [128, 64] and got["t5_wi"]["shard_shape"] == [32, 32]
        assert got["collectives"]["lm"] > 0 and got["collectives"]["t5"] > 0 and got["collectives"]["codec"] == 0
