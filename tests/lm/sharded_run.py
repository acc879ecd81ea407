"""Run by `tests/lm/test_sharding.py` in a fresh process with 8 host devices: the tiny LM (`mesh_inputs`)
on a (data 2, fsdp 2, tensor 2) mesh against the same computation on one device. Usage: sharded_run.py
CHECKPOINT_DIR; `emit`s the result."""

import sys

import flax.linen as nn
import jax
import numpy as np

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.model import LMModel, param_specs, stack_layers
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.sharding import activation_sharding, make_mesh, shard
from tests.lm import mesh_inputs
from tests.processes import emit

jax.config.update("jax_threefry_partitionable", False)


def logits(config, params, scan, mesh, sequence, text, mask):
    def forward(p, s, t, m):
        with activation_sharding(mesh):
            return LMModel(config, scan).apply(p, s, t, m)

    lowered = jax.jit(forward).lower(params, sequence, text, mask)
    compiled = lowered.compile()
    stablehlo = lowered.as_text()
    constraints = stablehlo.count("sharding_constraint") + stablehlo.count("@Sharding")  # Shardy or GSPMD
    return np.asarray(compiled(params, sequence, text, mask)), compiled.as_text(), constraints


def main(directory: str):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    config, params, text, mask, sequence = mesh_inputs.load(directory)
    sharded = shard(params, param_specs(config), mesh)
    fc1 = sharded["params"]["layers_1"]["fc1"]["kernel"]
    reference, _, unconstrained = logits(config, params, False, None, sequence, text, mask)
    got, hlo, constraints = logits(config, sharded, False, mesh, sequence, text, mask)
    stacked = shard(stack_layers(params), param_specs(config, scan_layers=True), mesh)
    scanned, _, _ = logits(config, stacked, True, mesh, sequence, text, mask)

    odd = LMConfig(dim=64, num_heads=4, num_layers=1, ffn_dim=129, card=config.card, text_dim=config.text_dim)
    try:
        shard(nn.unbox(LMModel(odd).init(jax.random.key(0), sequence, text, mask)), param_specs(odd), mesh)
        indivisible = ""
    except ValueError as e:
        indivisible = str(e)
    keys = row_keys([3, 4])
    tokens = {}
    for name, sampling in (("greedy", SamplingParams(use_sampling=False)), ("top_k", SamplingParams(top_k=8))):
        single = generate_tokens(config, params, text[:2], mask[:2], keys, 20, sampling)
        split = generate_tokens(config, sharded, text[:2], mask[:2], keys, 20, sampling, mesh=mesh)
        tokens[name] = [np.asarray(single).tolist(), np.asarray(split).tolist()]
    emit(
        {
            "devices": len(jax.devices()),
            "mesh": dict(mesh.shape),
            "fc1_spec": [str(a) for a in fc1.sharding.spec],
            "fc1_shard_shape": list(fc1.addressable_shards[0].data.shape),
            "stacked_fc1_spec": [str(a) for a in stacked["params"]["layers"]["fc1"]["kernel"].sharding.spec],
            "constraints": [unconstrained, constraints],
            "collectives": sum(hlo.count(op) for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all")),
            "logits_scale": float(np.abs(reference).max()),
            "sharded_diff": float(np.abs(got - reference).max()),
            "scanned_diff": float(np.abs(scanned - reference).max()),
            "text_effect": float(np.abs(reference[0] - reference[1]).max()),
            "greedy_text_effect": mesh_inputs.differing(tokens["greedy"][0]),
            "tokens": tokens,
            "indivisible_error": indivisible,
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
