"""T5 tokenizer: ids identical to transformers' `T5Tokenizer` (audiocraft's `T5Conditioner`).

From `spiece.model` through sentencepiece, or from `tokenizer.json` (the `tokenizers` library) when
that is all a repository has. `</s>` is appended, batches are padded with id 0 to the longest
prompt, and an empty (or None) prompt gets an all-zero mask row, as audiocraft does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_json, resolve

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
_FILES = ["spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


class T5Tokenizer:
    """`tokenizer(texts) -> (ids [B, N] int32, mask [B, N] int32)`; `tokenizer.encode(text)` -> ids."""

    def __init__(self, encode: Callable[[str], list[int]], pad_id: int, eos_id: int, files: dict[str, bytes]):
        self._encode = encode
        self.pad_id = pad_id
        self.eos_id = eos_id
        self.files = files  # name -> content of the files `from_pretrained` rebuilds this tokenizer from

    def save(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer's files into `directory` (which `from_pretrained` then reads)."""
        for name, content in self.files.items():
            (Path(directory) / name).write_bytes(content)

    @classmethod
    def from_spiece(cls, path: str | os.PathLike, extra_ids: int = 100) -> T5Tokenizer:
        """From a sentencepiece model. Special tokens written in the text (`<pad>`, `</s>`, `<unk>`,
        `<extra_id_N>` with N < extra_ids, numbered down from the top of the vocabulary) are single
        tokens, as in transformers."""
        import sentencepiece

        try:
            sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"cannot read sentencepiece model {path}: {e}") from e
        specials = {PAD: sp.piece_to_id(PAD), EOS: sp.piece_to_id(EOS), UNK: sp.piece_to_id(UNK)}
        specials.update({f"<extra_id_{i}>": sp.get_piece_size() + extra_ids - 1 - i for i in range(extra_ids)})
        splitter = re.compile("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")")

        def encode(text: str) -> list[int]:
            ids = []
            for i, segment in enumerate(splitter.split(text)):
                ids += [specials[segment]] if i % 2 else sp.encode(segment)
            return ids + [specials[EOS]]

        files = {
            "spiece.model": Path(path).read_bytes(),
            "tokenizer_config.json": json.dumps({"extra_ids": extra_ids}).encode(),
        }
        return cls(encode, pad_id=specials[PAD], eos_id=specials[EOS], files=files)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> T5Tokenizer:
        """From a `tokenizers` JSON file, with transformers' T5 post-processing (`</s>` appended)."""
        from tokenizers import Tokenizer, processors

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise CheckpointError(f"cannot read tokenizer file {path}: {e}") from e
        pad_id, eos_id = tok.token_to_id(PAD), tok.token_to_id(EOS)
        if pad_id is None or eos_id is None:
            raise CheckpointError(f"{path}: not a T5 tokenizer (no {PAD} or {EOS} token)")
        tok.post_processor = processors.TemplateProcessing(single=["$A", EOS], special_tokens=[(EOS, eos_id)])
        tok.no_padding()
        tok.no_truncation()
        return cls(
            lambda text: tok.encode(text).ids,
            pad_id=pad_id,
            eos_id=eos_id,
            files={"tokenizer.json": Path(path).read_bytes()},
        )

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike) -> T5Tokenizer:
        """From a hub id or local directory holding `spiece.model` (preferred) or `tokenizer.json`."""
        path = resolve(source, _FILES)
        directory = path.parent if path.is_file() else path
        if (directory / "spiece.model").exists():
            config = directory / "tokenizer_config.json"
            extra_ids = read_json(config).get("extra_ids", 100) if config.exists() else 100
            return cls.from_spiece(directory / "spiece.model", extra_ids)
        if (directory / "tokenizer.json").exists():
            return cls.from_tokenizer_json(directory / "tokenizer.json")
        raise CheckpointError(f"{source}: no spiece.model or tokenizer.json in {directory}")

    def encode(self, text: str) -> list[int]:
        """Token ids of one prompt, `</s>` appended."""
        return self._encode(text)

    def __call__(
        self, texts: Sequence[str | None], length: int | None = None, truncate: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(ids [B, N] int32, mask [B, N] int32)`, N the longest prompt (or `length`, if given, >= it).

        An empty or None prompt keeps its ids (`</s>` then padding) but has an all-zero mask row. A prompt
        longer than `length` raises ValueError, or with `truncate` keeps its first `length - 1` tokens
        and `</s>`.
        """
        if isinstance(texts, str) or not len(texts):
            raise ValueError(f"expected a non-empty list of prompts, got {texts!r}")
        encoded = [self.encode(text or "") for text in texts]
        longest = max(map(len, encoded))
        n = longest if length is None else length
        if n < longest:
            if not truncate:
                raise ValueError(f"padding length {n} is shorter than the longest prompt ({longest} tokens)")
            if n < 1:
                raise ValueError(f"cannot truncate prompts to {n} tokens")
            encoded = [tokens if len(tokens) <= n else tokens[: n - 1] + [self.eos_id] for tokens in encoded]
        ids = np.full((len(texts), n), self.pad_id, np.int32)
        mask = np.zeros((len(texts), n), np.int32)
        for row, (text, tokens) in enumerate(zip(texts, encoded, strict=True)):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1 if text else 0
        return ids, mask
