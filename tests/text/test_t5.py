"""Parity of the Flax T5 encoder with transformers' `T5EncoderModel` (eager attention, float32).

Tolerance: max abs difference 1e-4 on hidden states, at every position.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.text import T5TextEncoder
from musicgen_jax.text.encoder import encode_ids, length_bucket
from musicgen_jax.text.t5 import relative_position_buckets
from tests.hub import add_repo, use_offline_cache
from tests.text.conftest import tiny_hf_t5

PROMPTS = [
    "calm piano",
    "Energetic rock song with electric guitars, drums and a screaming solo at 140 bpm!",
    "lofi hip hop",
    "Orchestral film score: epic, dramatic; brass & timpani. " * 3,
]


def hf_hidden(model, hf_tokenizer, texts):
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return hidden.numpy(), batch["attention_mask"].numpy()


def test_hidden_states_match_transformers(hf_t5_dir, hf_tokenizer):
    model, directory = hf_t5_dir
    encoder = T5TextEncoder.from_pretrained(directory)
    assert encoder.config.feed_forward_proj == model.config.feed_forward_proj
    hidden, mask = encoder(PROMPTS)
    expected, expected_mask = hf_hidden(model, hf_tokenizer, PROMPTS)
    assert hidden.shape == expected.shape and hidden.shape[-1] == 768 and hidden.dtype == np.float32
    assert expected.shape[1] > 64  # long enough for the logarithmic position buckets
    np.testing.assert_array_equal(np.asarray(mask), expected_mask)
    assert np.abs(np.asarray(hidden) - expected).max() < 1e-4


def test_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    pos = torch.arange(600)
    reference = T5Attention._relative_position_bucket(pos[None, :] - pos[:, None], True, 32, 128).numpy()
    np.testing.assert_array_equal(relative_position_buckets(600, 32, 128), reference)


def test_padding_bucket_does_not_change_outputs_or_recompile(hf_t5_dir):
    _, directory = hf_t5_dir
    encoder = T5TextEncoder.from_pretrained(directory)
    alone, _ = encoder(["calm piano"])
    together, _ = encoder(["calm piano", "lofi hip hop beat with vinyl crackle"])
    n = alone.shape[1]
    assert (length_bucket(alone.shape[1]), length_bucket(together.shape[1])) == (8, 32)  # different padding
    assert np.abs(np.asarray(alone[0]) - np.asarray(together[0, :n])).max() < 1e-5
    compiled = encode_ids._cache_size()
    encoder(["calm"])  # another length, same bucket and batch size: no new compilation
    assert encode_ids._cache_size() == compiled
    assert (length_bucket(1), length_bucket(16), length_bucket(17), length_bucket(100)) == (8, 16, 24, 104)


def test_full_t5_and_musicgen_checkpoints_load_the_same(hf_t5_dir, hf_tokenizer, tmp_path):
    """T5ForConditionalGeneration weights (decoder unused) and a MusicGen checkpoint's text_encoder.*."""
    model, directory = hf_t5_dir
    reference = T5TextEncoder.from_pretrained(directory)
    expected, _ = reference(PROMPTS)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    full = tmp_path / "full"
    full.mkdir()
    full_state = {
        **state,
        "decoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4),
        "lm_head.weight": torch.zeros(3, 3),
    }
    full_state.pop("shared.weight")  # the tied embedding stored only under the encoder's name
    torch.save(full_state, full / "pytorch_model.bin")
    (full / "config.json").write_text((directory / "config.json").read_text())

    musicgen = tmp_path / "musicgen"
    musicgen.mkdir()
    save_file(
        {f"text_encoder.{k}": v for k, v in state.items()} | {"decoder.lm_heads.0.weight": torch.zeros(2, 2)},
        str(musicgen / "model.safetensors"),
    )
    config = {
        "model_type": "musicgen",
        "text_encoder": json.loads((directory / "config.json").read_text()),
        "audio_encoder": {},
        "decoder": {},
    }
    (musicgen / "config.json").write_text(json.dumps(config))

    for source in (full, musicgen):
        encoder = T5TextEncoder.from_pretrained(source, tokenizer=directory)
        np.testing.assert_array_equal(np.asarray(encoder(PROMPTS)[0]), np.asarray(expected))


def test_hub_id_loading_offline(hf_t5_dir, tmp_path, monkeypatch):
    _, directory = hf_t5_dir
    use_offline_cache(monkeypatch, tmp_path / "cache")
    add_repo(tmp_path / "cache", "google-t5/t5-base", directory)
    hidden, _ = T5TextEncoder.from_pretrained("google-t5/t5-base")(PROMPTS[:1])
    local, _ = T5TextEncoder.from_pretrained(directory)(PROMPTS[:1])
    np.testing.assert_array_equal(np.asarray(hidden), np.asarray(local))
    with pytest.raises(CheckpointError, match="cannot fetch 't5-small'"):
        T5TextEncoder.from_pretrained("t5-small")


def test_mismatched_checkpoint_and_tokenizer(hf_t5_dir, hf_tokenizer, tmp_path):
    model, directory = hf_t5_dir
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["encoder.block.1.layer.0.layer_norm.weight"]
    state["encoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(768, 10)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError) as info:
        T5TextEncoder.from_pretrained(tmp_path, tokenizer=directory)
    message = str(info.value)
    assert "missing keys (1): encoder.block.1.layer.0.layer_norm.weight" in message
    assert "encoder.block.0.layer.0.SelfAttention.q.weight: (768, 10) (expected (768, 768))" in message

    small = tiny_hf_t5(50)
    small.save_pretrained(tmp_path / "small")
    encoder = T5TextEncoder.from_pretrained(tmp_path / "small", tokenizer=directory)
    with pytest.raises(ValueError, match="outside the T5 vocabulary"):
        encoder(["<extra_id_0>"])
