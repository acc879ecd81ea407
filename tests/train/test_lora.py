"""Low-rank adapters (`lora_rank`): the adapted LM starts as the plain one (bitwise), `merge_lora` folds
the adapters into the kernels (the plain LM on merged weights gives the adapted logits, 1e-5 relative),
and a train step moves only the adapters (and the text projection when asked), with optimizer state for
them alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.model import LMModel, init_params, merge_lora
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import Batch, OptimConfig, StepConfig, compile_step, init_state

CONFIG = LMConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, card=16, text_dim=8)
RANK = 4


def randomized(tree, seed: int):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def inputs():
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(rng.integers(0, CONFIG.card + 1, (2, 4, 9))),
        jnp.asarray(rng.normal(size=(2, 3, 8))),
        jnp.ones((2, 3), jnp.int32),
    )


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_adapters_start_plain_and_merge_exactly(scan):
    plain = randomized(nn.unbox(init_params(CONFIG, jax.random.key(0), scan)), 1)
    fresh = flatten_dict(nn.unbox(init_params(CONFIG, jax.random.key(2), scan, RANK)))
    adapted = unflatten_dict({**fresh, **flatten_dict(plain)})
    seq, text, mask = inputs()
    base = LMModel(CONFIG, scan).apply(plain, seq, text, mask)
    np.testing.assert_array_equal(LMModel(CONFIG, scan, lora_rank=RANK).apply(adapted, seq, text, mask), base)
    adapted = randomized(adapted, 3)  # lora_b no longer zero
    got = LMModel(CONFIG, scan, lora_rank=RANK).apply(adapted, seq, text, mask)
    merged = merge_lora(adapted)
    assert not any("lora" in "/".join(p) for p in flatten_dict(merged))
    expected = LMModel(CONFIG, scan).apply(merged, seq, text, mask)
    assert float(jnp.max(jnp.abs(got - base))) > 1e-2
    assert float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected))) < 1e-5


@pytest.mark.parametrize("text_projection", [False, True])
def test_a_step_trains_only_the_adapters(text_projection):
    config = StepConfig(
        CONFIG,
        None,
        OptimConfig(lr=1e-2, warmup_steps=0, total_steps=4),
        lora_rank=RANK,
        lora_text_projection=text_projection,
    )
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(config, 0, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "codes": rng.integers(0, CONFIG.card, (2, 4, 8)).astype(np.int32),
        "mask": np.ones((2, 4, 8), bool),
        "text_embeddings": rng.normal(size=(2, 3, 8)).astype(np.float32),
        "text_mask": np.ones((2, 3), np.int32),
    }
    before = flatten_dict(jax.device_get(state.params))
    state, _ = compile_step(config, mesh)(state, Batch(**batch), {})
    after = flatten_dict(jax.device_get(state.params))
    moved = {"/".join(p[1:]) for p in before if not np.array_equal(before[p], after[p])}
    adapters = {"/".join(p[1:]) for p in before if p[-1].startswith("lora_")}
    projection = {"text_projection/kernel", "text_projection/bias"} if text_projection else set()
    assert moved == adapters | projection and len(adapters) == 2 * 2 * 10  # 10 adapted kernels per layer
    moments = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert moments == 2 * sum(before[p].size for p in before if "/".join(p[1:]) in adapters | projection)
