"""Run by `tests/lm/test_sharding.py` as two processes (4 host devices each, joined by
`jax.distributed.initialize`): the tiny LM split over an 8-device mesh spanning both, against one
device. Usage: multihost_run.py PROCESS_ID PORT; process 0 prints one JSON line."""

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.model import LMModel, param_specs
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.sharding import activation_sharding, make_mesh, shard

CONFIG = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, card=32, text_dim=24)


def main(process_id: int, port: int):
    jax.config.update("jax_threefry_partitionable", False)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sequence = jax.random.randint(jax.random.key(1), (4, CONFIG.num_codebooks, 12), 0, CONFIG.card + 1)
    text = jax.random.normal(jax.random.key(2), (4, 6, CONFIG.text_dim))
    mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 6, [1] + [0] * 5], jnp.int32)
    local = jax.local_devices()[0]
    params = jax.device_put(nn.unbox(LMModel(CONFIG).init(jax.random.key(0), sequence, text, mask)), local)
    reference = np.asarray(jax.jit(LMModel(CONFIG).apply)(params, sequence, text, mask))
    sharded = shard(params, param_specs(CONFIG), mesh)

    def forward(p, s, t, m):
        with activation_sharding(mesh):
            return LMModel(CONFIG).apply(p, s, t, m)

    logits = multihost_utils.process_allgather(jax.jit(forward)(sharded, sequence, text, mask), tiled=True)
    sampling, keys = SamplingParams(use_sampling=False), row_keys([3, 4])
    single = np.asarray(generate_tokens(CONFIG, params, text[:2], mask[:2], keys, 16, sampling))
    split = generate_tokens(CONFIG, sharded, text[:2], mask[:2], keys, 16, sampling, mesh=mesh)
    split = multihost_utils.process_allgather(split, tiled=True)
    if process_id == 0:
        print(json.dumps({
            "processes": jax.process_count(), "devices": jax.device_count(), "local": jax.local_device_count(),
            "fc1_local_shards": len(sharded["params"]["layers_0"]["fc1"]["kernel"].addressable_shards),
            "logits_diff": float(np.abs(logits - reference).max()), "logits_scale": float(np.abs(reference).max()),
            "tokens_equal": bool((split == single).all()), "tokens_shape": list(split.shape),
        }))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
