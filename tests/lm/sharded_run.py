"""Run by `tests/lm/test_sharding.py` in a fresh process with 8 host devices: the tiny LM on a
(data 2, fsdp 2, tensor 2) mesh against the same computation on one device. Prints one JSON line."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.model import LMModel, param_specs, stack_layers
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.sharding import activation_sharding, make_mesh, shard

jax.config.update("jax_threefry_partitionable", False)
CONFIG = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, card=32, text_dim=24)


def logits(params, scan, mesh, sequence, text, mask):
    def forward(p, s, t, m):
        with activation_sharding(mesh):
            return LMModel(CONFIG, scan).apply(p, s, t, m)

    lowered = jax.jit(forward).lower(params, sequence, text, mask)
    compiled = lowered.compile()
    stablehlo = lowered.as_text()
    constraints = stablehlo.count("sharding_constraint") + stablehlo.count("@Sharding")  # Shardy or GSPMD
    return np.asarray(compiled(params, sequence, text, mask)), compiled.as_text(), constraints


def main():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sequence = jax.random.randint(jax.random.key(1), (4, CONFIG.num_codebooks, 12), 0, CONFIG.card + 1)
    text = jax.random.normal(jax.random.key(2), (4, 6, CONFIG.text_dim))
    mask = jnp.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 6, [1] + [0] * 5], jnp.int32)
    init = LMModel(CONFIG).init(jax.random.key(0), sequence, text, mask)
    params = jax.tree.map(lambda x: x * 4.0, nn.unbox(init))  # larger weights: the text moves the logits
    sharded = shard(params, param_specs(CONFIG), mesh)
    fc1 = sharded["params"]["layers_1"]["fc1"]["kernel"]
    reference, _, unconstrained = logits(params, False, None, sequence, text, mask)
    got, hlo, constraints = logits(sharded, False, mesh, sequence, text, mask)
    stacked = shard(stack_layers(params), param_specs(CONFIG, scan_layers=True), mesh)
    scanned, _, _ = logits(stacked, True, mesh, sequence, text, mask)

    odd = LMConfig(dim=64, num_heads=4, num_layers=1, ffn_dim=129, card=32, text_dim=24)
    try:
        shard(nn.unbox(LMModel(odd).init(jax.random.key(0), sequence, text, mask)), param_specs(odd), mesh)
        indivisible = ""
    except ValueError as e:
        indivisible = str(e)
    keys = row_keys([3, 4])
    tokens = {}
    for name, sampling in (("greedy", SamplingParams(use_sampling=False)), ("top_k", SamplingParams(top_k=8))):
        single = generate_tokens(CONFIG, params, text[:2], mask[:2], keys, 20, sampling)
        split = generate_tokens(CONFIG, sharded, text[:2], mask[:2], keys, 20, sampling, mesh=mesh)
        tokens[name] = [np.asarray(single).tolist(), np.asarray(split).tolist()]
    print(json.dumps({
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
        "tokens": tokens,
        "indivisible_error": indivisible,
    }))


if __name__ == "__main__":
    main()
