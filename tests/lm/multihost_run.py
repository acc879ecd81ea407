"""Run by `tests/lm/test_sharding.py` as two processes (4 host devices each, joined by
`jax.distributed.initialize`): the tiny LM (`mesh_inputs`) split over an 8-device mesh spanning both, and
`MusicGen` end to end from weights already split over both processes (as a training run's samples start),
against one device. Usage: multihost_run.py PROCESS_ID PORT CHECKPOINT_DIR; process 0 `emit`s the result."""

import dataclasses
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from musicgen_jax.convert.pretrained import convert
from musicgen_jax.lm.model import LMModel, param_specs
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.sharding import activation_sharding, make_mesh, shard
from tests.lm import mesh_inputs
from tests.processes import emit, held_fraction


def musicgen(directory: str, mesh) -> MusicGen:
    """The converted model on one device (mesh None) or on `mesh`, its LM weights handed over already split
    over the mesh, each process holding its own devices' pieces."""
    components = convert(directory)
    if mesh is not None:
        weights = shard(components.lm_params, param_specs(components.lm_config), mesh)
        components = dataclasses.replace(components, lm_params=weights)
    model = MusicGen(directory, components, mesh=mesh, dtype="float32")
    model.set_generation_params(duration=0.3, top_k=8)
    return model


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
    model = musicgen(directory, None)
    wav, codes = model.generate(mesh_inputs.PROMPTS, return_tokens=True, seed=2)
    model = musicgen(directory, make_mesh(data=1, fsdp=4, tensor=2))
    mesh_wav, mesh_codes = model.generate(mesh_inputs.PROMPTS, return_tokens=True, seed=2)  # the batch split
    odd_codes = model.generate_tokens(mesh_inputs.PROMPTS[:2], seed=2)  # padded to the batch split, then cut
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
                "musicgen_codes_equal": bool((mesh_codes == codes).all()),
                "musicgen_odd_codes_equal": bool((odd_codes == codes[:2]).all()),
                "musicgen_codes_shape": list(mesh_codes.shape),
                "musicgen_wav_diff": float(np.abs(mesh_wav - wav).max() / np.abs(wav).max()),
                "musicgen_local_fraction": held_fraction(model.lm_params),
            }
        )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
