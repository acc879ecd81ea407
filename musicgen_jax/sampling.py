"""The compiled decode loop (audiocraft's `LMModel.generate` and `_sample_next_token`): classifier-free guidance,
temperature, top-k / top-p, greedy.

A prefill, then one `lax.fori_loop` over the delay-pattern steps with a preallocated KV cache: no
Python per token. Compiled once per (LM config, sampling settings, batch size, prompt length, and length
buckets of the audio and of the text), with no host callbacks, so that JAX's persistent compilation
cache can keep the programs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax
from jax.sharding import Mesh

from musicgen_jax.config import LMConfig
from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import LMModel, compute_dtype, init_cache, null_chroma, scanned
from musicgen_jax.sharding import jit_on_mesh, pad_batch
from musicgen_jax.text.encoder import length_bucket

PROGRESS_EVERY = 10
TOP_K_METHODS = ("bisect", "top_k")  # `top_k_mask`
FRAME_BUCKET = 250  # 5 s at 50 Hz: generation lengths share a compilation within each bucket


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """audiocraft's defaults. `top_p > 0` overrides `top_k`; `use_sampling=False` is greedy (argmax);
    `cfg_coef == 1` turns classifier-free guidance off (no unconditional rows). `top_k_method`: how the
    k-th largest logit is found, one of `TOP_K_METHODS` (the same tokens either way; only the speed differs
    by backend, see `top_k_mask`)."""

    use_sampling: bool = True
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_coef: float = 3.0
    top_k_method: str = "bisect"

    def __post_init__(self):
        if self.top_k < 0 or not 0.0 <= self.top_p <= 1.0 or self.temperature <= 0:
            raise ValueError(
                f"invalid sampling settings: top_k {self.top_k} (>= 0), top_p {self.top_p} (in [0, 1]), "
                f"temperature {self.temperature} (> 0)"
            )
        if self.top_k_method not in TOP_K_METHODS:
            raise ValueError(f"unknown top_k_method {self.top_k_method!r}; one of {', '.join(TOP_K_METHODS)}")


def sample_next(key: jax.Array, logits: jax.Array, sampling: SamplingParams) -> jax.Array:
    """`logits [..., card] -> tokens [...]` int32."""
    if not sampling.use_sampling:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling.temperature
    if sampling.top_p > 0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        drop = jnp.cumsum(probs, axis=-1) - probs > sampling.top_p  # keep the smallest set reaching top_p
        choice = jax.random.categorical(key, jnp.where(drop, -jnp.inf, sorted_logits), axis=-1)
        return jnp.take_along_axis(order, choice[..., None], axis=-1)[..., 0].astype(jnp.int32)
    if sampling.top_k > 0:
        logits = jnp.where(top_k_mask(logits, sampling.top_k, sampling.top_k_method), logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def top_k_mask(x: jax.Array, k: int, method: str = "bisect") -> jax.Array:
    """`x [..., n]` float32 -> bool `[..., n]`: x >= its k-th largest value along the last axis (ties
    kept, as `x >= lax.top_k(x, k)[0][..., -1:]`; all True when k >= n).

    `method` "bisect" finds the k-th largest by bisection over the order-preserving uint32 image of
    float32 (32 counting passes): 0.6 ms instead of 9.4 ms for `lax.top_k` on the [8, 4, 2048], k=250
    logits of a batch-8 step on XLA:CPU. "top_k" is `lax.top_k`, which XLA's GPU and TPU backends lower
    to their own top-k kernels (`benchmarks/decode_gpu.py` times both there)."""
    x = x.astype(jnp.float32)
    if k >= x.shape[-1]:
        return jnp.ones(x.shape, bool)
    if method == "top_k":
        return x >= lax.top_k(x, k)[0][..., -1:]
    bits = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)  # -0.0 -> +0.0
    key = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))  # monotone in x

    def halve(_, bounds):  # invariant: at least k keys >= lo; the answer is in [lo, hi]
        lo, hi = bounds
        mid = lo + ((hi - lo) >> 1) + ((hi - lo) & 1)
        ok = jnp.sum(key >= mid[..., None], axis=-1) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo = jnp.zeros(x.shape[:-1], jnp.uint32)
    lo, _ = lax.fori_loop(0, 32, halve, (lo, jnp.full_like(lo, jnp.iinfo(jnp.uint32).max)))
    return key >= lo[..., None]


def split_rows(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split each row's key `[B]` -> (next keys `[B]`, keys to use now `[B]`)."""
    both = jax.vmap(jax.random.split)(keys)
    return both[:, 0], both[:, 1]


def row_keys(seeds) -> jax.Array:
    """One PRNG key per row from integer seeds `[B]`, so a row's random draws do not depend on its batch."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


@struct.dataclass
class Conditions:
    """A batch's conditioning as the decode loop takes it (`Conditions.of` pads the text to its bucket)."""

    text: jax.Array  # [B, N, text_dim] T5 states, zero-padded to N = length_bucket(tokens)
    text_mask: jax.Array  # [B, N] int, 0 on the padding
    text_length: jax.Array  # int32 []: the tokens of the longest prompt (melody models' prefix)
    chroma: jax.Array | None = None  # [B, chroma_frames, chroma_bins] one-hot (melody models); None: text alone

    @classmethod
    def of(cls, config: LMConfig, text: jax.Array, text_mask: jax.Array, chroma: jax.Array | None = None):
        """`text [B, N, text_dim]`, `text_mask [B, N]` zero-padded to `length_bucket(N)` positions. The
        padding is masked (cross-attention: probabilities exactly 0; melody prefix: `LMModel.condition`'s
        gap), so the tokens are the same and every prompt length in a bucket shares the compiled programs
        (the text's keys are part of the loop's state). ValueError for chroma the LM does not take."""
        if chroma is not None and not config.melody:
            raise ValueError("this model has no melody conditioning (a text-to-music LM): chroma must be None")
        if chroma is not None and chroma.shape[1:] != (config.chroma_frames, config.chroma_bins):
            raise ValueError(f"chroma must be [B, {config.chroma_frames}, {config.chroma_bins}], got {chroma.shape}")
        n = text.shape[1]
        pad = ((0, 0), (0, length_bucket(n) - n))
        return cls(jnp.pad(text, (*pad, (0, 0))), jnp.pad(text_mask, pad), jnp.int32(n), chroma)


@struct.dataclass
class DecodeState:
    """The decode loop's carry (donated from call to call)."""

    sequence: jax.Array  # int32 [B, K, S]: the delay-pattern tokens of a frame bucket (S = its pattern steps)
    cache: Any  # the KV cache (`lm.model.init_cache`), [2B, ...] with guidance: each row beside its null twin
    keys: jax.Array  # [B] PRNG keys, one per row (`row_keys`)
    context: Any  # `LMModel.condition` of the (doubled) conditions: cross-attention text, melody prefix


@dataclasses.dataclass(frozen=True)
class Decoder:
    """The decode loop of one LM with one sampling setting on one mesh (None: one device): what its compiled
    programs are specialised on (with the batch, the prompt length and the length buckets). `generate`
    runs it to the end, `stream` frame by frame, `lower` traces it for inspection."""

    config: LMConfig
    sampling: SamplingParams
    mesh: Mesh | None = None

    def start(self, params: Any, conditions: Conditions, keys: jax.Array, frames: int, prompt=None) -> DecodeState:
        """The state before the first sampled step, compiled (`_start`) for `frames`' bucket. On a mesh its
        batch is padded to a multiple of the batch split (`sharding.pad_batch`): results' rows past
        `len(keys)` are the padding's."""
        _prompt_frames(prompt, frames)
        conditions = conditions.replace(
            text=pad_batch(conditions.text, self.mesh),
            text_mask=pad_batch(conditions.text_mask, self.mesh),
            chroma=None if conditions.chroma is None else pad_batch(conditions.chroma, self.mesh),
        )
        prompt = None if prompt is None else pad_batch(prompt, self.mesh)
        keys = pad_batch(keys, self.mesh)
        return _start_jit(self, params, conditions, keys, frame_bucket(frames), prompt, mesh=self.mesh)

    def run(self, params: Any, frames: int, prompt_frames: int, state: DecodeState, first: int, stop: int):
        """Steps `first..stop-1` (`_run_steps`: one program for every range), the state donated."""
        return _run_steps_jit(
            self, params, jnp.int32(frames), prompt_frames, state, jnp.int32(first), jnp.int32(stop), mesh=self.mesh
        )

    def generate(
        self,
        params: Any,
        conditions: Conditions,
        keys: jax.Array,
        frames: int,
        prompt: jax.Array | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> jax.Array:
        """Codes `[B, K, frames]` int32 (see `generate_tokens`)."""
        prompt_frames = _prompt_frames(prompt, frames)
        state = self.start(params, conditions, keys, frames, prompt)
        last = pattern.num_steps(frames, self.config.delays) - 1
        chunk = PROGRESS_EVERY if progress is not None else last
        for first in range(prompt_frames, last, chunk):
            stop = min(first + chunk, last)
            state = self.run(params, frames, prompt_frames, state, first, stop)
            if progress is not None:
                jax.block_until_ready(state.keys)
                progress(stop - first)
        return _revert(state.sequence, self.config.delays)[: len(keys), :, :frames]

    def stream(self, params: Any, conditions: Conditions, keys: jax.Array, frames: int, prompt=None):
        """The tokens of `generate`, yielded as each frame completes: `[B, K, 1]` per new frame (after the
        prompt's), from a Python loop over the same compiled decode loop, one step a call."""
        prompt_frames = _prompt_frames(prompt, frames)
        delay = max(self.config.delays)
        state = self.start(params, conditions, keys, frames, prompt)
        for s in range(prompt_frames, pattern.num_steps(frames, self.config.delays) - 1):
            state = self.run(params, frames, prompt_frames, state, s, s + 1)
            frame = s - delay  # position s + 1 completes frame s - max_delay (its last codebook)
            if frame >= prompt_frames:
                window = lax.dynamic_slice_in_dim(state.sequence, frame, delay + 2, axis=2)  # one frame's pattern
                yield pattern.revert(window, self.config.delays)[: len(keys)]

    def lower(self, params: Any, conditions: Conditions, keys: jax.Array, frames: int, prompt=None):
        """The decode loop `generate` runs for these arguments (`_run_steps`), traced and lowered: `.compile()`
        it to time or inspect the compilation. Arguments may be `jax.ShapeDtypeStruct`s."""
        prompt_frames = _prompt_frames(prompt, frames)
        state = _start_jit.eval_shape(self, params, conditions, keys, frame_bucket(frames), prompt, mesh=self.mesh)
        return _run_steps_jit.lower(
            self, params, jnp.int32(frames), prompt_frames, state, jnp.int32(0), jnp.int32(0), mesh=self.mesh
        )


def _start(
    decoder: Decoder, params: Any, conditions: Conditions, keys: jax.Array, bucket: int, prompt: jax.Array | None
) -> DecodeState:
    """The decode state before the first sampled step: the conditioning context of the (doubled, with
    guidance) text and chroma, the token sequence (`bucket` frames long) with the prompt's positions
    filled in, and the KV cache after a one-call prefill of those positions (melody models: of the
    prefix and those positions)."""
    config, sampling = decoder.config, decoder.sampling
    model = _model(config, params)
    text, text_mask, chroma = conditions.text, conditions.text_mask, conditions.chroma
    if config.melody and chroma is None:
        chroma = null_chroma(config, text.shape[0])
    if sampling.cfg_coef != 1.0:
        text, text_mask = _pair(text, jnp.zeros_like(text)), _pair(text_mask, jnp.zeros_like(text_mask))
        chroma = None if chroma is None else _pair(chroma, null_chroma(config, chroma.shape[0]))
    context = model.apply(params, text, text_mask, chroma, conditions.text_length, method=LMModel.condition)
    steps = pattern.num_steps(bucket, config.delays)
    prompt_frames = _prompt_frames(prompt, bucket)
    sequence = jnp.full((keys.shape[0], config.num_codebooks, steps), config.special_token, jnp.int32)
    prefix = context["prefix"].shape[1] if config.melody else 0
    cache = init_cache(config, text.shape[0], prefix + steps, compute_dtype(params), scanned(params))
    if prompt_frames:
        padded = jnp.pad(prompt.astype(jnp.int32), ((0, 0), (0, 0), (0, bucket - prompt_frames)))
        forced = pattern.valid_mask(steps, prompt_frames, config.delays)
        sequence = jnp.where(forced[None], pattern.build(padded, config.delays, config.special_token), sequence)
    if prompt_frames or config.melody:
        _, cache = model.apply(
            params,
            _double(sequence[:, :, :prompt_frames], sampling),
            context,
            0,
            cache,
            config.melody,
            method=LMModel.decode,
        )
    return DecodeState(sequence, cache, keys, context)


def _model(config: LMConfig, params) -> LMModel:
    """The LM for `params` as they are laid out: unrolled, or scanned (training's layout, `stack_layers`: one
    layer compiled and a `lax.scan` over them)."""
    return LMModel(config, scanned(params), dtype=compute_dtype(params))


def _prompt_frames(prompt: jax.Array | None, frames: int) -> int:
    prompt_frames = 0 if prompt is None else prompt.shape[-1]
    if prompt_frames > frames:
        raise ValueError(f"the prompt ({prompt_frames} frames) is longer than the generation ({frames} frames)")
    return prompt_frames


def _pair(cond: jax.Array, uncond: jax.Array) -> jax.Array:
    """The doubled batch of guidance, `[2B, ...]`: each row followed by its unconditional twin, so that a batch
    split over devices keeps both on one device (guidance then needs no communication)."""
    return jnp.stack([cond, uncond], axis=1).reshape(2 * cond.shape[0], *cond.shape[1:])


def _double(x: jax.Array, sampling: SamplingParams) -> jax.Array:
    """Rows repeated for their unconditional twins (`_pair`) when guidance is on."""
    return jnp.repeat(x, 2, axis=0) if sampling.cfg_coef != 1.0 else x


def _step(decoder: Decoder, params: Any, frames: jax.Array, prompt_frames: int, state: DecodeState, s: jax.Array):
    """Run position `s` through the LM and write position `s + 1`: sampled where a frame of the
    generation sits, the prompt's token where it fixes one, the special token elsewhere."""
    config, sampling = decoder.config, decoder.sampling
    sequence, batch = state.sequence, state.sequence.shape[0]
    steps = sequence.shape[-1]
    column = _double(lax.dynamic_slice_in_dim(sequence, s, 1, axis=2), sampling)
    model = _model(config, params)
    logits, cache = model.apply(params, column, state.context, s, state.cache, method=LMModel.decode)
    logits = logits[:, :, 0]
    if sampling.cfg_coef != 1.0:
        pairs = logits.reshape(batch, 2, *logits.shape[1:])
        cond, uncond = pairs[:, 0], pairs[:, 1]
        logits = uncond + (cond - uncond) * sampling.cfg_coef
    keys, subs = split_rows(state.keys)
    tokens = jax.vmap(lambda key, row: sample_next(key, row, sampling))(subs, logits)
    index = pattern.frame_index(steps, config.delays)
    valid = (index >= 0) & (index < frames)  # frames may be traced: the buffer is a length bucket
    forced = jnp.asarray(pattern.valid_mask(steps, prompt_frames, config.delays))
    tokens = jnp.where(lax.dynamic_slice_in_dim(valid, s + 1, 1, axis=1)[:, 0], tokens, config.special_token)
    current = lax.dynamic_slice_in_dim(sequence, s + 1, 1, axis=2)[:, :, 0]
    tokens = jnp.where(lax.dynamic_slice_in_dim(forced, s + 1, 1, axis=1)[:, 0], current, tokens)
    sequence = lax.dynamic_update_slice_in_dim(sequence, tokens[:, :, None], s + 1, axis=2)
    return state.replace(sequence=sequence, cache=cache, keys=keys)


def _run_steps(decoder: Decoder, params, frames, prompt_frames, state: DecodeState, first, stop) -> DecodeState:
    """Steps `first..stop-1` of the decode loop (`first`, `stop` traced: one program for every range)."""
    return lax.fori_loop(first, stop, lambda s, st: _step(decoder, params, frames, prompt_frames, st, s), state)


_start_jit = jit_on_mesh(_start, ("decoder", "bucket"))
_run_steps_jit = jit_on_mesh(_run_steps, ("decoder", "prompt_frames"), donate_argnames="state")
_revert = jax.jit(pattern.revert, static_argnames="delays")


def frame_bucket(frames: int) -> int:
    """The buffer length compiled for `frames` frames: the next multiple of FRAME_BUCKET."""
    return -(-frames // FRAME_BUCKET) * FRAME_BUCKET


def generate_tokens(
    config: LMConfig,
    params: Any,
    text: jax.Array,
    text_mask: jax.Array,
    keys: jax.Array,
    frames: int,
    sampling: SamplingParams,
    prompt: jax.Array | None = None,
    progress: Callable[[int], None] | None = None,
    mesh: Mesh | None = None,
    chroma: jax.Array | None = None,
) -> jax.Array:
    """Codes `[B, K, frames]` int32 for text states `text [B, N, text_dim]` (mask `[B, N]`), sampled
    with one PRNG key per row (`keys [B]`, see `row_keys`). Melody models: `chroma [B, chroma_frames,
    chroma_bins]` one-hot (`chroma.match_frames`), or None for text alone (the null chroma).

    `prompt [B, K, P]` (P <= frames): codes kept as the first P frames (continuation); the positions
    they fill are run through the model in one prefill call, the rest step by step. With guidance the
    batch runs doubled, each row beside its twin of the null condition (zero text, zero mask; melody: the
    null chroma), and `uncond + (cond - uncond) * cfg_coef` is sampled from.

    Two compiled programs, each once per (`Decoder`: config, sampling, mesh; batch, prompt length, length
    bucket, text length bucket: `Conditions.of`): the prefill (`_start`) and the decode loop (`_run_steps`,
    a `lax.fori_loop` over a traced range of steps on donated state). The token buffer and KV cache are
    `frame_bucket(frames)` long (melody: after the prefix) and the loop stops after `frames`. Without
    `progress` the loop runs in one call; with it, in calls of `PROGRESS_EVERY` steps, each waited for
    and then reported as `progress(steps_done_in_that_call)` from Python: no host callback inside the
    program, so JAX's persistent compilation cache keeps it.

    `mesh`: the device mesh `params` are split over (`musicgen_jax.sharding.shard`); the activations
    and the cache are then split by the logical axis rules. None: one device.
    """
    conditions = Conditions.of(config, text, text_mask, chroma)
    return Decoder(config, sampling, mesh).generate(params, conditions, keys, frames, prompt, progress)


def stream_tokens(config, params, text, text_mask, keys, frames: int, sampling, prompt=None, mesh=None, chroma=None):
    """`Decoder.stream` of these arguments (those of `generate_tokens`)."""
    conditions = Conditions.of(config, text, text_mask, chroma)
    return Decoder(config, sampling, mesh).stream(params, conditions, keys, frames, prompt)


def lower_generate(config, params, text, text_mask, keys, frames: int, sampling, prompt=None, mesh=None, chroma=None):
    """`Decoder.lower` of these arguments (those of `generate_tokens`; they may be `jax.ShapeDtypeStruct`s)."""
    conditions = jax.eval_shape(lambda t, m, c: Conditions.of(config, t, m, c), text, text_mask, chroma)
    return Decoder(config, sampling, mesh).lower(params, conditions, keys, frames, prompt)
