"""A sentencepiece model trained here on a few lines, and tiny transformers T5 encoders (d_model 768)."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel

from tests.torch_init import randomize_constants


def tiny_hf_t5(vocab_size: int, feed_forward_proj: str = "relu", seed: int = 0) -> T5EncoderModel:
    """Random init, RMSNorm scales included (`randomize_constants`)."""
    torch.manual_seed(seed)
    config = HFT5Config(
        vocab_size=vocab_size,
        d_model=768,
        d_kv=64,
        num_heads=12,
        d_ff=256,
        num_layers=2,
        feed_forward_proj=feed_forward_proj,
        dropout_rate=0.0,
    )
    config._attn_implementation = "eager"
    model = T5EncoderModel(config).eval()
    randomize_constants(model, seed)
    return model


@pytest.fixture(scope="session", params=["relu", "gated-gelu"])
def hf_t5_dir(request, hf_tokenizer, spiece_dir, tmp_path_factory):
    """(model, directory) of a saved T5EncoderModel with its tokenizer files, per feed-forward variant."""
    model = tiny_hf_t5(len(hf_tokenizer), request.param)
    directory = tmp_path_factory.mktemp(f"t5_{request.param}")
    model.save_pretrained(directory)
    (directory / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    return model, directory
