"""Residual vector quantizer of EnCodec, inference only (audiocraft's `ResidualVectorQuantization`, transformers'
`EncodecResidualVectorQuantizer`).

Parameter: `codebooks [K, bins, D]` (the `embed` buffers of the K stages, in order; logical axes
("codebooks", "bins", "channels"), replicated by the rules of `musicgen_jax.sharding`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ResidualVectorQuantizer(nn.Module):
    num_codebooks: int
    codebook_size: int
    dimension: int

    def setup(self):
        self.codebooks = self.param(
            "codebooks",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("codebooks", "bins", "channels")),
            (self.num_codebooks, self.codebook_size, self.dimension),
        )

    def encode(self, z: jax.Array) -> jax.Array:
        """`z [B, T, D] -> codes [B, K, T] int32`: nearest codeword per stage on the running residual."""
        residual = z
        codes = []
        for embed in self.codebooks:
            # Same expression and order as the reference: -(|r|^2 - 2 r.e + |e|^2), first index on ties.
            dist = -(jnp.sum(residual**2, -1, keepdims=True) - 2 * residual @ embed.T + jnp.sum(embed**2, -1))
            idx = jnp.argmax(dist, axis=-1).astype(jnp.int32)
            residual = residual - embed[idx]
            codes.append(idx)
        return jnp.stack(codes, axis=1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """`codes [B, K, T] -> z [B, T, D]`: the sum of the chosen codewords, stage 0 first."""
        z = jnp.zeros(codes.shape[:1] + codes.shape[2:] + (self.dimension,), self.codebooks.dtype)
        for q in range(codes.shape[1]):
            z = z + self.codebooks[q][codes[:, q]]
        return z
