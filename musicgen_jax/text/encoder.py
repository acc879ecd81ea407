"""`T5TextEncoder`: tokenizer + T5 encoder parameters + a compiled forward, the text conditioner's core."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from musicgen_jax.config import T5Config
from musicgen_jax.sharding import jit_on_mesh, pad_batch, place
from musicgen_jax.text.t5 import T5Encoder, param_specs
from musicgen_jax.text.tokenizer import T5Tokenizer
from musicgen_jax.text.weights import load_t5


def length_bucket(n: int, multiple: int = 8) -> int:
    """The padded length compiled for prompts of `n` tokens: the next multiple of `multiple`: few compiled
    shapes, little padded work (benchmarks/RESULTS.md, "Design choices")."""
    return max(multiple, -(-n // multiple) * multiple)


def _encode_ids(config: T5Config, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """`ids [B, N], mask [B, N] -> hidden [B, N, d_model]`, compiled once per (config, B, N, mesh)."""
    return T5Encoder(config).apply(params, ids, mask)


encode_ids = jit_on_mesh(_encode_ids, ("config",))


@dataclasses.dataclass(frozen=True)
class T5TextEncoder:
    """Frozen T5 encoder of text prompts.

    `encoder(["prompt", ...]) -> (hidden [B, N, d_model] float32, mask [B, N] int32)`, N the longest
    prompt in tokens. Prompts are padded to a length bucket (`length_bucket`, multiples of 8) before the compiled
    forward, so new prompt lengths rarely recompile; unmasked positions do not depend on the padding.
    Rows with an all-zero mask (empty prompts) carry no information: their hidden states depend on
    the bucket, and the conditioner zeroes them, as audiocraft does.

    `mesh`: the parameters are placed on it by their logical axes (`t5.param_specs`) and the batch of
    prompts is split over its data axes; None: one device.
    """

    config: T5Config
    params: Any
    tokenizer: T5Tokenizer
    source: str | None = None  # the hub id or path its weights were read from (audiocraft export names it)
    mesh: Mesh | None = None

    def __post_init__(self):  # on the device(s) once, not at every call
        object.__setattr__(self, "params", place(self.params, lambda: param_specs(self.config), self.mesh))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> T5TextEncoder:
        """From a hub id or local directory of a transformers T5 (t5-base, google-t5/t5-base, ...) or
        MusicGen checkpoint; the tokenizer from `tokenizer` or else from the same place."""
        config, params = load_t5(source)
        return cls(config, params, T5Tokenizer.from_pretrained(tokenizer or source), str(source))

    def __call__(self, texts: Sequence[str | None]) -> tuple[jax.Array, jax.Array]:
        ids, mask = self.tokenizer(texts)
        if ids.max() >= self.config.vocab_size:
            raise ValueError(
                f"token id {ids.max()} is outside the T5 vocabulary ({self.config.vocab_size}): "
                "the tokenizer does not belong to these weights"
            )
        n = ids.shape[1]
        padded = length_bucket(n)
        pad = ((0, 0), (0, padded - n))
        hidden = encode_ids(
            self.config,
            self.params,
            pad_batch(np.pad(ids, pad, constant_values=self.tokenizer.pad_id), self.mesh),
            pad_batch(np.pad(mask, pad), self.mesh),
            mesh=self.mesh,
        )
        return hidden[: len(ids), :n], jnp.asarray(mask)
