"""DAC's residual vector quantizer, inference only (descript's `ResidualVectorQuantize`, transformers'
`DacResidualVectorQuantizer`): factorized and L2-normalized codes.

Each stage projects the running residual `[B, T, latent_dim]` to `codebook_dim` (a 1x1 convolution, `in_proj`),
picks the codebook entry of greatest cosine similarity, and projects that entry back (`out_proj`); the residual
loses the projected entry. Parameters per stage `quantizers_{q}`: in_proj, out_proj (kernel `[1, C_in, C_out]`,
bias) and codebook `[codebook_size, codebook_dim]` (logical axes ("bins", "channels")).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.codec.dac.layers import Conv1d
from musicgen_jax.config import DacConfig


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, 1e-12) over the last axis (PyTorch's `F.normalize`)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class VectorQuantize(nn.Module):
    """One stage: `encode(residual [B, T, latent]) -> (codes [B, T] int32, quantized [B, T, latent])`,
    `decode(codes [B, T]) -> [B, T, latent]`."""

    config: DacConfig

    def setup(self):
        c = self.config
        self.in_proj = Conv1d(c.codebook_dim, 1)
        self.out_proj = Conv1d(c.latent_dim, 1)
        self.codebook = self.param(
            "codebook",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("bins", "channels")),
            (c.codebook_size, c.codebook_dim),
        )

    def encode(self, residual: jax.Array) -> tuple[jax.Array, jax.Array]:
        projected = self.in_proj(residual)
        # the entry of greatest cosine: only the codebook's normalization changes which entry that is, but both
        # are normalized and the squared distance written out as in descript's `VectorQuantize.decode_latents`,
        # whose rounding decides near-ties (transformers adds |c|^2 where descript subtracts it: both are 1)
        encodings, codebook = l2_normalize(projected), l2_normalize(self.codebook)
        dist = jnp.sum(encodings**2, -1, keepdims=True) - 2 * encodings @ codebook.T + jnp.sum(codebook**2, -1)
        codes = jnp.argmax(-dist, axis=-1).astype(jnp.int32)  # first index on ties
        # the references' straight-through estimator, p + (q - p): q up to the last bit, kept for their rounding
        entry = projected + (self.codebook[codes] - projected)
        return codes, self.out_proj(entry)

    def decode(self, codes: jax.Array) -> jax.Array:
        return self.out_proj(self.codebook[codes])


class ResidualVectorQuantize(nn.Module):
    """`config.n_codebooks` stages, in order. `encode` may use only the first `num_codebooks` (as descript's
    `n_quantizers` and audiocraft's `DAC.set_num_codebooks`): their codes are the full codes' first rows."""

    config: DacConfig

    def setup(self):
        self.quantizers = [VectorQuantize(self.config) for _ in range(self.config.n_codebooks)]

    def encode(self, z: jax.Array, num_codebooks: int) -> jax.Array:
        """`z [B, T, latent] -> codes [B, num_codebooks, T] int32`."""
        residual, codes = z, []
        for stage in self.quantizers[:num_codebooks]:
            stage_codes, quantized = stage.encode(residual)
            residual = residual - quantized
            codes.append(stage_codes)
        return jnp.stack(codes, axis=1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """`codes [B, K, T] -> [B, T, latent]`: the sum of the first K stages' projected entries."""
        return sum(self.quantizers[q].decode(codes[:, q]) for q in range(codes.shape[1]))

    def __call__(self, z: jax.Array) -> jax.Array:
        """Every stage, for `init`."""
        return self.decode(self.encode(z, self.config.n_codebooks))
