"""CLAP's text tower: RoBERTa, its pooler (tanh of a linear map of the first token, `<s>`) and the text
projection, as laion_clap's `CLAP.encode_text` ("roberta" branch: `pooler_output` -> `text_projection`)
and transformers' `ClapTextModelWithProjection` compute it; and the RoBERTa tokenizer both use
(77 tokens, padded to the maximum length, truncated).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import resolve
from musicgen_jax.metrics.clap.audio import HIGHEST, Dense, Projection

# The files transformers' RobertaTokenizer is built from (`tokenizer.json` alone also works).
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """roberta-base (laion_clap's `text_branch`; transformers' `ClapTextConfig`) and the text projection."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    context_length: int = 77

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TextConfig:
        return cls(**d)


class TextLayer(nn.Module):
    """One post-norm BERT layer: self-attention (padding masked) and a GELU MLP. [B, N, D] -> same."""

    config: TextConfig

    @nn.compact
    def __call__(self, x, mask):
        cfg = self.config
        batch, length, dim = x.shape
        head_dim = dim // cfg.num_heads
        split = lambda y: y.reshape(batch, length, cfg.num_heads, head_dim)  # noqa: E731
        q = split(Dense(dim, name="query")(x))
        k = split(Dense(dim, name="key")(x))
        v = split(Dense(dim, name="value")(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=HIGHEST) / np.sqrt(head_dim)
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=HIGHEST).reshape(batch, length, dim)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="attention_norm")(x + Dense(dim, name="attention_out")(attn))
        y = nn.gelu(Dense(cfg.intermediate_size, name="intermediate")(x), approximate=False)
        return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="output_norm")(x + Dense(dim, name="output")(y))


class TextTower(nn.Module):
    """(ids [B, N] int32, mask [B, N]) -> unnormalized text embedding [B, projection_dim].

    Positions count the non-padding tokens from pad_token_id + 1 (RoBERTa's
    `create_position_ids_from_input_ids`); the embedding is the projection of the pooler's output,
    tanh(W h[:, 0] + b), the first token's final hidden state."""

    config: TextConfig

    @nn.compact
    def __call__(self, ids, mask):
        cfg = self.config
        not_pad = (ids != cfg.pad_token_id).astype(jnp.int32)
        positions = jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
        x = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(ids)
        x = x + nn.Embed(cfg.max_positions, cfg.hidden_size, name="position_embeddings")(positions)
        token_types = self.param(
            "token_type_embeddings", nn.initializers.normal(0.02), (cfg.type_vocab_size, cfg.hidden_size)
        )
        x = x + token_types[0]  # every token has type 0
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="embeddings_norm")(x)
        mask = mask.astype(bool)
        for i in range(cfg.num_layers):
            x = TextLayer(cfg, name=f"layer_{i}")(x, mask)
        pooled = jnp.tanh(Dense(cfg.hidden_size, name="pooler")(x[:, 0]))
        return Projection(cfg.projection_dim, name="projection")(pooled)


class RobertaTokenizer:
    """`tokenizer(texts) -> (ids [B, 77] int32, mask [B, 77] int32)`: transformers' `RobertaTokenizer` (the
    class audiocraft's `CLAPTextConsistencyMetric._tokenizer` calls) with `padding="max_length",
    truncation=True, max_length=77`. `files` (name -> bytes) rebuild it (`from_files`)."""

    def __init__(self, tokenizer, files: dict[str, bytes], length: int = 77):
        self._tokenizer = tokenizer
        self.files = files
        self.length = length

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, length: int = 77) -> RobertaTokenizer:
        """From a local directory or hub repo id (e.g. `roberta-base`) holding RoBERTa's tokenizer files."""
        path = resolve(source, list(TOKENIZER_FILES))
        directory = path.parent if path.is_file() else path
        files = {name: (directory / name).read_bytes() for name in TOKENIZER_FILES if (directory / name).is_file()}
        if not ({"vocab.json", "merges.txt"} <= set(files) or "tokenizer.json" in files):
            raise CheckpointError(f"{source}: no RoBERTa tokenizer files (vocab.json + merges.txt or tokenizer.json)")
        return cls.from_files(files, length)

    @classmethod
    def from_files(cls, files: dict[str, bytes], length: int = 77) -> RobertaTokenizer:
        """From the files' contents (as `files` holds them), through a temporary directory."""
        import tempfile

        from transformers import RobertaTokenizer as HFRobertaTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                (Path(tmp) / name).write_bytes(content)
            try:
                tokenizer = HFRobertaTokenizer.from_pretrained(tmp)
            except Exception as e:
                raise CheckpointError(f"cannot build the RoBERTa tokenizer: {type(e).__name__}: {e}") from e
        return cls(tokenizer, dict(files), length)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str) or not len(texts):
            raise ValueError(f"expected a non-empty list of texts, got {texts!r}")
        out = self._tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.length, return_tensors="np"
        )
        return np.asarray(out["input_ids"], np.int32), np.asarray(out["attention_mask"], np.int32)
