"""The sharded train step of the LM (the `musicgen_jax.lm` model sampling uses) over token batches.

The whole update is one `jax.jit` step (`compile_step`: explicit in / out shardings, the state donated), so
that one program runs it on any mesh: the state (`TrainState`) is split by the logical rules of
`musicgen_jax.sharding` (FSDP), the batch over its data axes. `train_step` lists what a step does.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import NamedSharding, PartitionSpec

from musicgen_jax.config import LMConfig, T5Config
from musicgen_jax.lm.model import REMAT_POLICIES, LMModel, init_params, is_lora
from musicgen_jax.sharding import LOGICAL_RULES, activation_sharding, mesh_axes, shardings
from musicgen_jax.text.t5 import T5Encoder
from musicgen_jax.train.loss import mean_cross_entropy, nll_sums, training_sequences

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@struct.dataclass
class Batch:
    """A batch of the train and eval steps (the pipeline's arrays, `data.pipeline`, on the mesh: `global_batch`)."""

    codes: jax.Array  # int32 [B, K, F] token crops (0 where padded)
    mask: jax.Array  # bool [B, K, F]: True at real tokens
    text_mask: jax.Array  # int32 [B, N]: an all-zero row is the null text
    text_ids: jax.Array | None = None  # int32 [B, N] T5 tokens (None with precomputed states)
    text_embeddings: jax.Array | None = None  # float32 [B, N, text_dim] stored T5 states (`prepare --text-encoder`)
    chroma: jax.Array | None = None  # int32 [B, chroma_frames] chroma bins (melody models)
    example: jax.Array | None = None  # int32 [B] the example of each row (-1: a padding row)


@struct.dataclass
class TrainState:
    """The train step's state, every array split by the logical rules (Orbax saves it as a dict of its fields):
    the float32 master weights, AdamW moments split like them (FSDP), audiocraft's unbiased EMA, updated every
    `ema_every` steps, of the trained parameters (with adapters only theirs, a frozen weight's average being
    itself; `rundir.ema_weights`: the whole model) with its count, and the run's PRNG key data."""

    step: jax.Array  # int32 []: steps done
    params: Any  # {"params": ...} float32 master weights
    opt_state: Any  # optax state: AdamW moments split like their parameters (with adapters: theirs only)
    ema: Any  # audiocraft's unbiased EMA of the trained parameters (with adapters: theirs only)
    ema_count: jax.Array  # float32 []: the EMA's count (`count * decay + 1` per update)
    rng: jax.Array  # uint32 [2]: the run's PRNG key data


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with global-norm clipping and a linear warm-up then cosine decay to 0 (audiocraft's
    `solver/musicgen/default.yaml`)."""

    lr: float = 1e-4
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 4000
    total_steps: int = 1_000_000
    max_norm: float = 1.0

    def __post_init__(self):
        for name in ("lr", "b1", "b2", "eps", "weight_decay", "warmup_steps", "total_steps", "max_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"invalid optimizer {name}: {value!r}")
        if self.total_steps < 1 or not (self.b1 < 1 and self.b2 < 1):
            raise ValueError(f"invalid optimizer settings: {self}")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"the warm-up ({self.warmup_steps} steps) must end before the last step (total_steps "
                f"{self.total_steps}): the cosine decay needs at least one step"
            )

    def schedule(self) -> optax.Schedule:
        """audiocraft's cosine schedule: `lr * s / warmup` for s < warmup, then a half cosine to 0 at total."""
        return optax.warmup_cosine_decay_schedule(0.0, self.lr, self.warmup_steps, self.total_steps, 0.0)

    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(self.max_norm),
            optax.adamw(self.schedule(), self.b1, self.b2, self.eps, weight_decay=self.weight_decay),
        )


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The train step's model and conditioning settings. The LM computes in `compute_dtype` (bfloat16: the
    float32 weights cast in the forward pass, their gradients float32; the loss in float32), optionally
    rematerialized per layer (`remat`)."""

    lm: LMConfig
    t5: T5Config | None = None  # None: batches carry precomputed `text_embeddings`
    optim: OptimConfig = OptimConfig()
    cfg_dropout: float = 0.3
    melody_dropout: float = 0.0  # melody models: the whole batch gets the null chroma (audiocraft's AttributeDropout)
    ema_decay: float = 0.99
    ema_every: int = 10
    scan_layers: bool = False
    remat: str = "none"  # a `lm.model.REMAT_POLICIES` name
    compute_dtype: str = "float32"  # or "bfloat16": the LM computes in it, over float32 master weights
    lora_rank: int = 0  # > 0: only low-rank adapters of the layers' kernels train (optionally the text projection)
    lora_text_projection: bool = False
    rules: tuple = LOGICAL_RULES  # logical axis -> mesh axes (`sharding.override_rules` of the experiment's)

    def __post_init__(self):
        if (
            not 0 <= self.cfg_dropout <= 1
            or not 0 <= self.melody_dropout <= 1
            or not 0 <= self.ema_decay < 1
            or self.ema_every < 1
        ):
            raise ValueError(
                f"invalid cfg_dropout {self.cfg_dropout}, melody_dropout {self.melody_dropout}, "
                f"ema_decay {self.ema_decay} or ema_every {self.ema_every}"
            )
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"invalid remat {self.remat!r}: one of {', '.join(REMAT_POLICIES)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"invalid compute_dtype {self.compute_dtype!r}: one of {', '.join(COMPUTE_DTYPES)}")
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"invalid lora_rank {self.lora_rank!r}: a non-negative integer (0: no adapters)")

    def model(self) -> LMModel:
        """The LM as the step runs it (layout, rematerialization, compute dtype, adapters)."""
        return LMModel(self.lm, self.scan_layers, self.remat, COMPUTE_DTYPES[self.compute_dtype], self.lora_rank)

    def trainable(self, path: tuple) -> bool:
        """Whether the parameter at `path` trains: every one, or with adapters only theirs (and the text
        projection's with `lora_text_projection`)."""
        names = [str(getattr(k, "key", k)) for k in path]
        return not self.lora_rank or is_lora(path) or (self.lora_text_projection and "text_projection" in names)

    def trained(self, params: Any) -> Any:
        """The trainable part of a parameter tree (`{"params": ...}`, boxed or not): the whole tree, or with
        adapters the subtree of the trainable leaves (what the EMA averages)."""
        if not self.lora_rank:
            return params
        return unflatten_dict({path: leaf for path, leaf in flatten_dict(params).items() if self.trainable(path)})

    def optimizer(self) -> optax.GradientTransformation:
        """`optim`'s clipping and AdamW over the trainable parameters; the frozen ones get no update and no
        optimizer state."""
        if not self.lora_rank:
            return self.optim.optimizer()
        return optax.multi_transform(
            {"train": self.optim.optimizer(), "frozen": optax.set_to_zero()},
            lambda params: jax.tree_util.tree_map_with_path(
                lambda p, _: "train" if self.trainable(p) else "frozen", params
            ),
        )


def _boxed_state(config: StepConfig, key: jax.Array) -> TrainState:
    """The initial state with the parameters (and the moments derived from them) boxed with their
    logical axes (`nn.Partitioned`)."""
    init_key, rng = jax.random.split(key)
    params = init_params(config.lm, init_key, config.scan_layers, config.lora_rank)
    # AdamW moments split like their parameters (initialized from the boxed ones); with adapters, whose
    # masked optimizer state does not keep the boxes' structure, from the plain arrays: replicated (small)
    opt_state = config.optimizer().init(nn.unbox(params) if config.lora_rank else params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        ema=config.trained(params),
        ema_count=jnp.zeros((), jnp.float32),
        rng=jax.random.key_data(rng),
    )


def state_specs(config: StepConfig) -> Any:
    """The logical `PartitionSpec` of every array of the state (scalars and the key: replicated)."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_boxed_state, config), jax.random.key(0)))


def state_shapes(config: StepConfig) -> Any:
    """The state's `ShapeDtypeStruct`s (what a checkpoint restores into), computed without allocating."""
    return jax.eval_shape(lambda: nn.unbox(_boxed_state(config, jax.random.key(0))))


def _overlay(fresh: Any, given: Any) -> Any:
    """`fresh` parameters with every array of `given` in place of its own (same paths and shapes; the
    adapters of a LoRA run stay fresh); ValueError for a `given` array the model does not have."""
    fresh, given = flatten_dict(fresh), flatten_dict(given)
    bad = [("/".join(p), tuple(v.shape)) for p, v in given.items() if p not in fresh or fresh[p].shape != v.shape]
    if bad:
        raise ValueError(f"parameters the model does not have (or of other shapes): {bad[:8]}")
    return unflatten_dict({**fresh, **given})


def init_state(config: StepConfig, seed: int, mesh, params: Any = None) -> TrainState:
    """A fresh state from `seed` (random parameters, or the given `params`, e.g. a converted checkpoint's,
    to fine-tune; with adapters, those stay fresh), created directly split over `mesh`."""

    def create(params):
        with activation_sharding(mesh, config.rules):
            state = nn.unbox(_boxed_state(config, jax.random.key(seed)))
            if params is not None:
                params = _overlay(state.params, params)
                state = state.replace(
                    params=params, opt_state=config.optimizer().init(params), ema=config.trained(params)
                )
            return state

    return jax.jit(create, out_shardings=shardings(state_specs(config), mesh, config.rules))(params)


def _ema(state: TrainState, params: Any, config: StepConfig) -> tuple[Any, jax.Array]:
    """audiocraft's unbiased EMA (`count = count * decay + 1`, weight `1 / count`) of the trained
    parameters every `ema_every` steps (a `lax.cond`: the other steps do not touch the EMA's memory)."""

    def blend():
        count = state.ema_count * config.ema_decay + 1.0
        weight = 1.0 / count
        return jax.tree.map(lambda e, p: e * (1.0 - weight) + p * weight, state.ema, config.trained(params)), count

    return jax.lax.cond((state.step + 1) % config.ema_every == 0, blend, lambda: (state.ema, state.ema_count))


def text_states(config: StepConfig, t5_params: Any, batch: Batch) -> jax.Array:
    """`[B, N, text_dim]`: the frozen T5's states of the batch's tokens, or its precomputed ones."""
    if config.t5 is None:
        return batch.text_embeddings
    return jax.lax.stop_gradient(T5Encoder(config.t5).apply(t5_params, batch.text_ids, batch.text_mask))


def melody_condition(config: StepConfig, batch: Batch, drop) -> jax.Array | None:
    """Melody models: the one-hot chroma `[B, chroma_frames, bins]` of the batch's `chroma` bins
    `[B, chroma_frames]`, or where `drop` (a traced bool) the null chroma (bin 0 in every frame, as
    `lm.model.null_chroma`); text models: None."""
    if not config.lm.melody:
        return None
    return jax.nn.one_hot(jnp.where(drop, 0, batch.chroma), config.lm.chroma_bins, dtype=jnp.float32)


def text_length(config: StepConfig, batch: Batch) -> jax.Array | None:
    """Melody models: the text positions of the prefix, the longest text of the batch (int32 []; the rest of
    the fixed `text_length` padding is masked out, as in sampling, where the prompts are padded to their
    longest: text positions are attended to even when zeroed); text models: None (padding is masked)."""
    return jnp.max(jnp.sum(batch.text_mask, axis=1)) if config.lm.melody else None


def _nll_sums(
    params: Any, config: StepConfig, batch: Batch, text: jax.Array, text_mask: jax.Array, chroma: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """`(nll sum [K], count [K])` of the LM on `batch`'s delay-pattern sequences (`loss.nll_sums`)."""
    inputs, targets, valid = training_sequences(batch.codes, batch.mask, config.lm.delays, config.lm.card)
    logits = config.model().apply(params, inputs, text, text_mask, chroma, text_length(config, batch))
    return nll_sums(logits, targets, valid)


def loss_fn(
    params: Any,
    config: StepConfig,
    batch: Batch,
    text: jax.Array,
    text_mask: jax.Array,
    chroma: jax.Array | None = None,
):
    """`(loss, ce [K])` of the LM on `batch` (codes / mask `[B, K, F]`) with the given text condition
    (and, melody models, `chroma [B, chroma_frames, bins]`)."""
    return mean_cross_entropy(*_nll_sums(params, config, batch, text, text_mask, chroma))


def train_step(
    state: TrainState, batch: Batch, t5_params: Any, config: StepConfig, mesh=None
) -> tuple[TrainState, dict]:
    """One optimizer step; returns the new state and the step's metrics (loss, ce [K], grad_norm, lr).

    Frozen T5 states of the batch's tokens (or the precomputed ones), classifier-free guidance dropout (with
    probability `cfg_dropout` the whole batch gets the null text, and the null chroma, audiocraft's
    `ClassifierFreeGuidanceDropout`), melody models' melody dropout (`melody_dropout`: the null chroma for
    the whole batch, audiocraft's `AttributeDropout` on `self_wav`; audiocraft's null melody is the chroma
    of a one-sample silence, of another length: here it is the model's fixed `chroma_frames` of bin 0,
    exactly what sampling conditions on without a melody), the loss (`loss.py`), gradients, clipping,
    AdamW, EMA.
    """
    with activation_sharding(mesh, config.rules):
        rng, dropout_key, melody_key = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
        text = text_states(config, t5_params, batch)
        null = jax.random.bernoulli(dropout_key, config.cfg_dropout)
        no_melody = null | jax.random.bernoulli(melody_key, config.melody_dropout)
        text_mask = jnp.where(null, 0, batch.text_mask)
        chroma = melody_condition(config, batch, no_melody)

        def frozen_loss(params):  # no gradient computed for frozen parameters
            params = jax.tree_util.tree_map_with_path(
                lambda p, x: x if config.trainable(p) else jax.lax.stop_gradient(x), params
            )
            return loss_fn(params, config, batch, text, text_mask, chroma)

        (loss, ce), grads = jax.value_and_grad(frozen_loss, has_aux=True)(state.params)
        updates, opt_state = config.optimizer().update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema, ema_count = _ema(state, params, config)
    metrics = {
        "loss": loss,
        "ce": ce,
        "grad_norm": optax.tree.norm(grads),
        "lr": config.optim.schedule()(state.step),
        "null_text": null,
        "null_melody": no_melody,
    }
    new_state = TrainState(state.step + 1, params, opt_state, ema, ema_count, jax.random.key_data(rng))
    return new_state, metrics


def batch_sharding(mesh, rules=LOGICAL_RULES) -> NamedSharding:
    """Batch arrays: the leading axis split as the activations' batch (data x fsdp by default)."""
    return NamedSharding(mesh, PartitionSpec(mesh_axes("activation_batch", rules)))


def compile_step(config: StepConfig, mesh):
    """`step(state, batch, t5_params) -> (state, metrics)`, jitted with the state's shardings in and out,
    the batch split over data x fsdp, T5 and the metrics replicated, and the state donated."""
    state_sharding = shardings(state_specs(config), mesh, config.rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        functools.partial(train_step, config=config, mesh=mesh),
        in_shardings=(state_sharding, batch_sharding(mesh, config.rules), replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )


def eval_step(params: Any, batch: Batch, t5_params: Any, config: StepConfig, mesh=None) -> tuple[jax.Array, jax.Array]:
    """`(nll sum [K], count [K])` of `params` (the EMA weights) on a batch, with its real text."""
    with activation_sharding(mesh, config.rules):
        text = text_states(config, t5_params, batch)
        return _nll_sums(params, config, batch, text, batch.text_mask, melody_condition(config, batch, False))


def compile_eval(config: StepConfig, mesh):
    """`evaluate(params, batch, t5_params) -> (nll sum [K], count [K])`, jitted like `compile_step`."""
    param_sharding = shardings(state_specs(config).params, mesh, config.rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        functools.partial(eval_step, config=config, mesh=mesh),
        in_shardings=(param_sharding, batch_sharding(mesh, config.rules), replicated),
        out_shardings=replicated,
    )


def global_batch(local: dict, mesh, rules=LOGICAL_RULES) -> Batch:
    """This process's part of the batch (the pipeline's numpy arrays, `[B / processes, ...]`) -> the global
    `Batch` split over the mesh."""
    sharding = batch_sharding(mesh, rules)
    return Batch(**{name: jax.make_array_from_process_local_data(sharding, value) for name, value in local.items()})
