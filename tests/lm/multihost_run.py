"""Run by `tests/lm/test_sharding.py` as two processes (4 host devices each, joined by
`jax.distributed.initialize`): the tiny LM (`mesh_inputs`) split over an 8-device mesh spanning both,
against one device. Usage: multihost_run.py PROCESS_ID PORT CHECKPOINT_DIR; process 0 `emit`s the result."""

import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from musicgen_jax.lm.model import LMModel, param_specs
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.sharding import activation_sharding, make_mesh, shard
from tests.lm import mesh_inputs
from tests.processes import emit


def main(process_id: int, port: int, directory: str):
    jax.config.update("jax_threefry_partitionable", False)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    config, params, text, mask, sequence = mesh_inputs.load(directory)
    params = jax.device_put(params, jax.local_devices()[0])
    reference = np.asarray(jax.jit(LMModel(config).apply)(params, sequence, text, mask))
    sharded = shard(params, param_specs(config), mesh)

    def forward(p, s, t, m):
        with activation_sharding(mesh):
            return LMModel(config).apply(p, s, t, m)

    logits = multihost_utils.process_allgather(jax.jit(forward)(sharded, sequence, text, mask), tiled=True)
    sampling, keys = SamplingParams(use_sampling=False), row_keys([3, 4])
    single = np.asarray(generate_tokens(config, params, text[:2], mask[:2], keys, 16, sampling))
    split = generate_tokens(config, sharded, text[:2], mask[:2], keys, 16, sampling, mesh=mesh)
    split = multihost_utils.process_allgather(split, tiled=True)
    if process_id == 0:
        emit(
            {
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "local": jax.local_device_count(),
                "fc1_local_shards": len(sharded["params"]["layers_0"]["fc1"]["kernel"].addressable_shards),
                "logits_diff": float(np.abs(logits - reference).max()),
                "logits_scale": float(np.abs(reference).max()),
                "tokens_equal": bool((split == single).all()),
                "tokens_shape": list(split.shape),
                "greedy_text_effect": mesh_inputs.differing(single),
            }
        )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
