"""Token ids equal transformers' `T5Tokenizer` (the reference) from spiece.model and tokenizer.json."""

from __future__ import annotations

import numpy as np
import pytest

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.text.tokenizer import T5Tokenizer

TRICKY = [
    "",
    " ",
    "hello world",
    "  leading and   repeated   spaces  ",
    "tabs\tand\nnewlines\r\n",
    "ÉÀÇ café naïve résumé 😀 漢字 ﬁ ｆｕｌｌｗｉｄｔｈ",
    "a\u0301 combining accents",
    "\u00a0nbsp\u2003em space",
    "12345 3.14159 1,000,000 -42 4/4 120BPM",
    "!!! ??? ... ;;; --- (( )) [[ ]] {{ }} @#$%^&*_+=|\\~`",
    "Ünïcödé™ ® © ½ ² x²",
    "<pad> </s> <unk> <extra_id_0> <extra_id_99>",
    "a<pad>b x</s>y <extra_id_100>",
    "zzzzqqq xylophone",
    "piano " * 400,
]


@pytest.fixture(scope="module")
def tokenizer_json_dir(hf_tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokjson")
    hf_tokenizer.save_pretrained(directory)
    (directory / "spiece.model").unlink(missing_ok=True)
    assert (directory / "tokenizer.json").exists()
    return directory


@pytest.mark.parametrize("text", TRICKY)
def test_ids_equal_transformers(text, hf_tokenizer, spiece_dir, tokenizer_json_dir):
    expected = hf_tokenizer(text)["input_ids"]
    assert T5Tokenizer.from_pretrained(spiece_dir).encode(text) == expected
    assert T5Tokenizer.from_pretrained(tokenizer_json_dir).encode(text) == expected


def test_batch_padding_and_mask(hf_tokenizer, spiece_dir):
    texts = ["calm piano", "", "energetic rock song with electric guitars and drums", None]
    ids, mask = T5Tokenizer.from_pretrained(spiece_dir)(texts)
    reference = hf_tokenizer([t or "" for t in texts], padding=True)
    np.testing.assert_array_equal(ids, np.array(reference["input_ids"]))
    expected_mask = np.array(reference["attention_mask"])
    expected_mask[[1, 3]] = 0  # empty / None prompts: all-zero mask rows, as audiocraft
    np.testing.assert_array_equal(mask, expected_mask)
    assert ids.dtype == mask.dtype == np.int32 and ids[1, 0] == 1 and ids[1, 1:].sum() == 0


def test_truncation_equals_transformers(hf_tokenizer, spiece_dir):
    """`truncate=True` keeps the first `length - 1` tokens and `</s>`, as transformers' `truncation=True`."""
    texts = ["energetic rock song with electric guitars and drums", "calm piano", None]
    ids, mask = T5Tokenizer.from_pretrained(spiece_dir)(texts, length=6, truncate=True)
    reference = hf_tokenizer([t or "" for t in texts], max_length=6, truncation=True, padding="max_length")
    np.testing.assert_array_equal(ids, np.array(reference["input_ids"]))
    np.testing.assert_array_equal(mask[:2], np.array(reference["attention_mask"])[:2])
    assert ids[0, -1] == 1 and mask[2].sum() == 0


def test_bad_input(spiece_dir, tmp_path):
    tok = T5Tokenizer.from_pretrained(spiece_dir)
    with pytest.raises(ValueError, match="non-empty list of prompts"):
        tok([])
    with pytest.raises(ValueError, match="non-empty list of prompts"):
        tok("a single string")
    with pytest.raises(ValueError, match="shorter than the longest prompt"):
        tok(["a b c d e f"], length=2)
    with pytest.raises(CheckpointError, match="no spiece.model or tokenizer.json"):
        T5Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot read sentencepiece model"):
        T5Tokenizer.from_pretrained(tmp_path)
