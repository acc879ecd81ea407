"""A sentencepiece model trained here on a few lines, and tiny transformers T5 encoders (d_model 768)."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel
from transformers import T5Tokenizer as HFT5Tokenizer

LINES = [
    "A calm piano melody with soft strings in the background.",
    "Energetic rock song with electric guitars and drums!",
    "lofi hip hop beat, 90 bpm, chill, relaxing",
    "Orchestral film score: epic, dramatic; brass & timpani.",
    "Jazz trio — upright bass, brushed drums, and piano (live recording).",
    "80s synthwave with arpeggiated synths at 120 BPM",
    "Ambient drone, evolving pads, field recordings of rain",
    "Reggaeton con bajo fuerte y voces en español",
    "Techno 4/4 kick, hi-hats, acid 303 bassline",
]


@pytest.fixture(scope="session")
def spiece_dir(tmp_path_factory):
    """A directory with a T5-style sentencepiece model (pad 0, eos 1, unk 2, no bos; nmt_nfkc)."""
    import sentencepiece

    directory = tmp_path_factory.mktemp("spiece")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES * 20), model_writer=model, vocab_size=110, model_type="unigram",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc",
        character_coverage=1.0, minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    return directory


@pytest.fixture(scope="session")
def hf_tokenizer(spiece_dir):
    return HFT5Tokenizer.from_pretrained(spiece_dir)


def tiny_hf_t5(vocab_size: int, feed_forward_proj: str = "relu", seed: int = 0) -> T5EncoderModel:
    torch.manual_seed(seed)
    config = HFT5Config(vocab_size=vocab_size, d_model=768, d_kv=64, num_heads=12, d_ff=256, num_layers=2,
                        feed_forward_proj=feed_forward_proj, dropout_rate=0.0)
    config._attn_implementation = "eager"
    return T5EncoderModel(config).eval()


@pytest.fixture(scope="session", params=["relu", "gated-gelu"])
def hf_t5_dir(request, hf_tokenizer, spiece_dir, tmp_path_factory):
    """(model, directory) of a saved T5EncoderModel with its tokenizer files, per feed-forward variant."""
    model = tiny_hf_t5(len(hf_tokenizer), request.param)
    directory = tmp_path_factory.mktemp(f"t5_{request.param}")
    model.save_pretrained(directory)
    (directory / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    return model, directory
