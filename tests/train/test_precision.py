"""Rematerialization and bfloat16 compute of the train step's LM (`StepConfig.remat`, `compute_dtype`):
the same loss and gradients as the plain float32 step (itself equal to transformers', test_loss.py), less
memory, float32 master weights."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.config import LMConfig
from musicgen_jax.lm.model import init_params
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import Batch, OptimConfig, StepConfig, compile_step, init_state, loss_fn

pytestmark = pytest.mark.slow

CONFIG = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, card=32, text_dim=16)
MELODY = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, card=32, text_dim=16, chroma_bins=12, chroma_frames=5)


def batch(frames: int = 60, size: int = 3) -> tuple[Batch, jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, CONFIG.card, (size, CONFIG.num_codebooks, frames)).astype(np.int32)
    mask = np.ones(codes.shape, bool)
    mask[1, :, frames // 2 :] = False
    text = rng.normal(size=(size, 7, CONFIG.text_dim)).astype(np.float32)
    text_mask = np.ones((size, 7), np.int32)
    text_mask[0, 4:] = 0
    text, text_mask = jnp.asarray(text), jnp.asarray(text_mask)
    return Batch(codes, mask, text_mask, text_embeddings=text), text, text_mask


def params(scan: bool, config: LMConfig = CONFIG):
    """Random parameters, LayerNorm scales and biases included."""
    tree = nn.unbox(init_params(config, jax.random.key(0), scan))
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def loss_and_grads(config: StepConfig, p, frames: int = 60):
    data, text, text_mask = batch(frames)
    fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=1)
    (loss, _), grads = fn(p, config, data, text, text_mask)
    return float(loss), grads


def relative(a, b) -> float:
    """The largest L2-relative difference over the leaves of two trees."""
    return max(
        float(jnp.linalg.norm((x - y).astype(jnp.float32)) / jnp.linalg.norm(y.astype(jnp.float32)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_the_loss_and_gradients(scan, remat):
    p = params(scan)
    loss, grads = loss_and_grads(StepConfig(CONFIG, scan_layers=scan), p)
    got, got_grads = loss_and_grads(StepConfig(CONFIG, scan_layers=scan, remat=remat), p)
    assert got == pytest.approx(loss, rel=1e-6)
    assert relative(got_grads, grads) < 1e-5


def temporaries(config: StepConfig, frames: int) -> int:
    """Bytes of temporaries of the compiled train step (XLA's buffer assignment) at batch 3 x `frames`."""
    data, text, text_mask = batch(frames)
    lowered = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=1).lower(
        params(config.scan_layers), config, data, text, text_mask
    )
    return lowered.compile().memory_analysis().temp_size_in_bytes


def test_full_remat_cuts_the_scanned_step_memory():
    """Scanned layers (on XLA:CPU the unrolled ones keep their activations: its compiler drops the
    barriers that order the recomputation), 500 frames: the step keeps one layer's activations, not two."""
    plain = temporaries(StepConfig(CONFIG, scan_layers=True), 500)
    remat = temporaries(StepConfig(CONFIG, scan_layers=True, remat="full"), 500)
    assert remat < 0.5 * plain


def test_bfloat16_compute_is_close_to_float32_with_float32_gradients():
    """bfloat16 compute: the loss within 1e-2 relative and the gradients within 5e-2 (L2, per array) of
    float32's, the gradients float32 (of the float32 weights), and the LM's products in bfloat16."""
    p = params(True)
    config = StepConfig(CONFIG, scan_layers=True)
    half = StepConfig(CONFIG, scan_layers=True, compute_dtype="bfloat16")
    loss, grads = loss_and_grads(config, p)
    got, got_grads = loss_and_grads(half, p)
    assert got == pytest.approx(loss, rel=1e-2) and got != loss
    assert {x.dtype for x in jax.tree.leaves(got_grads)} == {jnp.dtype(jnp.float32)}
    assert relative(got_grads, grads) < 5e-2
    data, text, text_mask = batch()
    hlo = jax.jit(loss_fn, static_argnums=1).lower(p, half, data, text, text_mask).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    assert dots and sum("bf16" in line for line in dots) >= 0.8 * len(dots)
    exponentials = [line for line in hlo.splitlines() if "exponential" in line]  # the softmaxes
    assert exponentials and not any("bf16" in line for line in exponentials)


def test_bfloat16_melody_model_with_a_padded_prefix():
    """A melody model in bfloat16 whose batch's texts are all shorter than the text bucket (the prefix's
    padding slots see no key: their float32 mask bias must not become -inf, a NaN softmax): the loss
    and gradients close to float32's, as for text models."""
    data, text, text_mask = batch()
    text_mask = text_mask.at[:, 5:].set(0)  # the longest text: 5 of 7 positions
    chroma = jax.nn.one_hot(np.random.default_rng(1).integers(0, 12, (3, MELODY.chroma_frames)), 12)
    data = data.replace(text_mask=text_mask)
    p = params(True, MELODY)
    fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=1)
    results = [
        fn(p, StepConfig(MELODY, scan_layers=True, compute_dtype=dtype), data, text, text_mask, chroma)
        for dtype in ("float32", "bfloat16")
    ]
    (loss, _), grads = results[0]
    (got, _), got_grads = results[1]
    assert np.isfinite(float(loss)) and float(got) == pytest.approx(float(loss), rel=1e-2)
    assert relative(got_grads, grads) < 5e-2


def test_bfloat16_step_keeps_float32_state():
    """After a bfloat16 train step the parameters, AdamW moments and EMA are float32 and have moved."""
    config = StepConfig(
        CONFIG,
        None,
        OptimConfig(lr=1e-3, warmup_steps=0, total_steps=10),
        ema_every=1,
        scan_layers=True,
        remat="full",
        compute_dtype="bfloat16",
    )
    mesh = make_mesh(devices=jax.devices()[:1])
    state = init_state(config, 0, mesh)
    before = jax.device_get(state.params)
    data, text, text_mask = batch()
    state, metrics = compile_step(config, mesh)(state, data, {})
    dtypes = {
        x.dtype
        for part in ("params", "opt_state", "ema")
        for x in jax.tree.leaves(getattr(state, part))
        if jnp.issubdtype(x.dtype, jnp.floating)
    }
    assert dtypes == {jnp.dtype(jnp.float32)}
    assert np.isfinite(float(metrics["loss"])) and relative(state.params, before) > 1e-4


@pytest.mark.parametrize("field, value", [("remat", "some"), ("compute_dtype", "float16")])
def test_unknown_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        StepConfig(CONFIG, **{field: value})
