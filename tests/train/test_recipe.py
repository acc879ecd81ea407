"""The training recipe's numbers against direct computations in numpy: the learning-rate schedule
(audiocraft's linear warm-up then half cosine), AdamW after global-norm clipping, the update of a real
train step, audiocraft's unbiased EMA every `ema_every` steps, and the joint rates of the guidance and
melody dropouts (independent draws, the guidance drop nulling the melody too)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from musicgen_jax.config import LMConfig
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import Batch, OptimConfig, StepConfig, compile_step, init_state, loss_fn

TEXT = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, card=16, text_dim=8)
MELODY = LMConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=64, card=16, text_dim=8, chroma_bins=12, chroma_frames=6)


def expected_lr(optim: OptimConfig, step: int) -> float:
    """audiocraft's `CosineLRScheduler`: `lr * step / warmup` in the warm-up, then `lr * (1 + cos(pi * t)) / 2`
    with t the fraction of the decay done, 0 from `total_steps` on."""
    if step < optim.warmup_steps:
        return optim.lr * step / optim.warmup_steps
    done = min(step - optim.warmup_steps, optim.total_steps - optim.warmup_steps)
    return optim.lr * 0.5 * (1 + math.cos(math.pi * done / (optim.total_steps - optim.warmup_steps)))


def test_schedule_values():
    """Warm-up start, middle and end, the cosine's midpoint (half the peak), its end (0) and beyond."""
    optim = OptimConfig(lr=3e-4, warmup_steps=100, total_steps=1100)
    schedule = optim.schedule()
    for step in (0, 1, 50, 99, 100, 101, 350, 600, 850, 1099, 1100, 5000):
        assert float(schedule(step)) == pytest.approx(expected_lr(optim, step), rel=1e-5, abs=1e-6 * optim.lr), step
    assert float(schedule(600)) == pytest.approx(1.5e-4, rel=1e-5)  # midpoint of the decay: half the peak
    assert float(schedule(100)) == pytest.approx(3e-4, rel=1e-6) and float(schedule(1100)) == 0


class NumpyAdamW:
    """Global-norm clipping then AdamW (decoupled weight decay, bias-corrected moments) in float64, over a
    dict of arrays: the update of a step with gradient `g` at parameters `p`, the learning rate of the
    step count before it (optax's `scale_by_learning_rate`)."""

    def __init__(self, optim: OptimConfig, params: dict):
        self.optim, self.count = optim, 0
        self.mu = {k: np.zeros_like(v, np.float64) for k, v in params.items()}
        self.nu = {k: np.zeros_like(v, np.float64) for k, v in params.items()}

    def update(self, grads: dict, params: dict) -> dict:
        o = self.optim
        norm = math.sqrt(sum(float(np.sum(np.square(g.astype(np.float64)))) for g in grads.values()))
        scale = o.max_norm / norm if norm > o.max_norm else 1.0
        lr = expected_lr(o, self.count)
        self.count += 1
        out = {}
        for k, g in grads.items():
            g = g.astype(np.float64) * scale
            self.mu[k] = o.b1 * self.mu[k] + (1 - o.b1) * g
            self.nu[k] = o.b2 * self.nu[k] + (1 - o.b2) * g * g
            mhat, vhat = self.mu[k] / (1 - o.b1**self.count), self.nu[k] / (1 - o.b2**self.count)
            out[k] = -lr * (mhat / (np.sqrt(vhat) + o.eps) + o.weight_decay * params[k].astype(np.float64))
        return out


def test_adamw_after_global_norm_clipping_equals_numpy():
    """Five updates with gradients of global norm 0.3, 50, 2, 1e4 and 0.9 (max_norm 1): the big ones are
    scaled to norm 1 before AdamW. eps 1e-2 makes each update depend on the gradient's scale, so a missing
    clip changes every entry (with eps ~ 0 Adam's first steps are nearly scale-free)."""
    optim = OptimConfig(lr=1e-2, b1=0.8, b2=0.9, eps=1e-2, weight_decay=0.1, warmup_steps=2, total_steps=6)
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=(5,)).astype(np.float32)}
    tx, reference = optim.optimizer(), NumpyAdamW(optim, params)
    state = tx.init(params)
    for norm in (0.3, 50.0, 2.0, 1e4, 0.9):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        total = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        grads = {k: (g * norm / total).astype(np.float32) for k, g in grads.items()}
        updates, state = tx.update(grads, state, params)
        expected = reference.update(grads, params)
        for k in params:
            np.testing.assert_allclose(np.asarray(updates[k]), expected[k], rtol=2e-5, atol=1e-9, err_msg=k)
            params[k] = (params[k] + np.asarray(updates[k])).astype(np.float32)


def tiny_batch(config: LMConfig, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "codes": rng.integers(0, config.card, (2, 4, 8)).astype(np.int32),
        "mask": np.ones((2, 4, 8), bool),
        "text_embeddings": rng.normal(size=(2, 3, config.text_dim)).astype(np.float32),
        "text_mask": np.array([[1, 1, 1], [1, 1, 0]], np.int32),
    }
    batch["mask"][1, :, 6:] = False
    if config.melody:
        batch["chroma"] = rng.integers(1, config.chroma_bins, (2, config.chroma_frames)).astype(np.int32)
    return batch


def flat(tree) -> dict:
    return {"/".join(path): np.asarray(leaf) for path, leaf in flatten_dict(jax.device_get(tree)).items()}


@pytest.fixture(scope="module")
def trajectory():
    """Six steps of the tiny text LM (no guidance dropout, max_norm 0.05: every gradient clipped, eps 1e-3,
    EMA decay 0.7 every 2 steps): per step the parameters before it, the batch, the metrics; the last state."""
    optim = OptimConfig(
        lr=5e-3, b1=0.8, b2=0.9, eps=1e-3, weight_decay=0.1, warmup_steps=2, total_steps=8, max_norm=0.05
    )
    config = StepConfig(TEXT, None, optim, cfg_dropout=0.0, ema_decay=0.7, ema_every=2)
    mesh = make_mesh(devices=jax.devices()[:1])
    state, step = init_state(config, 0, mesh), compile_step(config, mesh)
    initial_ema = flat(state.ema)
    steps = []
    for i in range(6):
        params, batch = jax.device_get(state.params), tiny_batch(TEXT, i)
        state, metrics = step(state, Batch(**batch), {})
        steps.append((params, batch, jax.device_get(metrics)))
    return config, initial_ema, steps, jax.device_get(state)


def test_a_step_applies_clipped_adamw_to_the_loss_gradient(trajectory):
    """Each step's new parameters are the numpy AdamW update of `jax.grad(loss_fn)` at its parameters
    (computed here, outside the step), its `lr` and `grad_norm` metrics those of the schedule and gradient."""
    config, _, steps, last = trajectory
    reference = NumpyAdamW(config.optim, flat(steps[0][0]))
    for i, (params, batch, metrics) in enumerate(steps):

        def loss(p, batch=batch):
            return loss_fn(p, config, Batch(**batch), batch["text_embeddings"], batch["text_mask"])[0]

        grads = jax.grad(loss)(params)
        grads, params = flat(grads), flat(params)
        norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
        assert norm > 2 * config.optim.max_norm  # clipped
        assert float(metrics["grad_norm"]) == pytest.approx(norm, rel=1e-4)
        assert float(metrics["lr"]) == pytest.approx(expected_lr(config.optim, i), rel=1e-5, abs=1e-12)
        after = flat(steps[i + 1][0]) if i + 1 < len(steps) else flat(last.params)
        for k, update in reference.update(grads, params).items():
            np.testing.assert_allclose(after[k] - params[k], update, rtol=1e-3, atol=1e-7, err_msg=f"step {i} {k}")


def test_the_ema_is_audiocrafts_unbiased_average_every_ema_every_steps(trajectory):
    """`count = count * decay + 1`, `ema += (params - ema) / count` after steps 2, 4 and 6 (the parameters
    after the step), untouched after the others; the first blend (count 1) is the parameters themselves."""
    config, ema, steps, last = trajectory
    after = [flat(params) for params, _, _ in steps[1:]] + [flat(last.params)]
    count = 0.0
    ema = {k: v.astype(np.float64) for k, v in ema.items()}
    for i, params in enumerate(after):
        if (i + 1) % config.ema_every == 0:
            count = count * config.ema_decay + 1
            ema = {k: e + (params[k] - e) / count for k, e in ema.items()}
    assert float(last.ema_count) == pytest.approx(1 + 0.7 + 0.49, rel=1e-6) == count
    got = flat(last.ema)
    assert sorted(got) == sorted(ema)
    for k, value in ema.items():
        np.testing.assert_allclose(got[k], value, rtol=1e-5, atol=1e-7, err_msg=k)
    assert not all(np.allclose(got[k], after[-1][k]) for k in got)  # an average, not the last parameters


def test_guidance_and_melody_dropout_are_independent_draws_of_each_step():
    """400 steps of a melody model with cfg_dropout 0.3 and melody_dropout 0.5: the text is nulled in 30%
    of the steps, and then the melody too; of the other steps the melody is nulled in half, independently of
    the text draw (rates within 4.5 standard errors); the draws change from step to step."""
    p, q, n = 0.3, 0.5, 400
    config = StepConfig(
        MELODY, None, OptimConfig(lr=0.0, warmup_steps=0, total_steps=4), cfg_dropout=p, melody_dropout=q
    )
    mesh = make_mesh(devices=jax.devices()[:1])
    state, step, batch = init_state(config, 0, mesh), compile_step(config, mesh), tiny_batch(MELODY, 0)
    draws = []
    for _ in range(n):
        state, metrics = step(state, Batch(**batch), {})
        draws.append((bool(metrics["null_text"]), bool(metrics["null_melody"])))
    text, melody = np.array(draws).T
    assert not (text & ~melody).any()  # a null text always comes with the null melody

    def near(count: int, total: int, rate: float) -> bool:
        return abs(count / total - rate) < 4.5 * math.sqrt(rate * (1 - rate) / total)

    assert near(text.sum(), n, p)
    assert near(melody[~text].sum(), (~text).sum(), q)  # independent of the text draw
    assert near(melody.sum(), n, p + (1 - p) * q)
    runs = np.flatnonzero(np.diff(text.astype(int)))  # a new draw each step: many changes, not a fixed value
    assert len(runs) > n * 2 * p * (1 - p) / 2
