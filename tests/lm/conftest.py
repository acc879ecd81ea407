"""Tiny random transformers `MusicgenForConditionalGeneration` and `MusicgenMelodyForConditionalGeneration`
models, saved with `save_pretrained` as on the hub."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
)
from transformers import T5Config as HFT5Config

from musicgen_jax.components import save_converted
from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from tests.codec.conftest import tiny_hf_config, tiny_hf_model
from tests.torch_init import constant_parameters, randomize_constants

TEXT_VOCAB = 210  # the len() of the shared test tokenizer: 110 sentencepiece pieces + 100 extra ids


def tiny_hf_musicgen(seed: int = 0, audio_channels: int = 1, melody: bool = False, chroma_frames: int = 24):
    """A `MusicgenForConditionalGeneration` (melody: `MusicgenMelodyForConditionalGeneration`, 12 chroma bins,
    `chroma_frames` chroma frames: the released models have 235, fewer here give the few text positions
    after them a share of the attention that moves the logits), with the codec of `tiny_hf_model`. Random
    init (normal 0.02), every
    constant-initialized parameter of the text encoder, the projections and the decoder redrawn
    (`randomize_constants`: norm scales, norm biases, the projections' biases), then the conditioning
    paths scaled up so that the prompt (and the melody) change the logits."""
    torch.manual_seed(seed)
    text = HFT5Config(vocab_size=TEXT_VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0)
    sizes = dict(
        vocab_size=2048,
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        ffn_dim=256,
        num_codebooks=4 * audio_channels,
        audio_channels=audio_channels,
        dropout=0.0,
    )
    if melody:
        config = MusicgenMelodyConfig(
            text_encoder=text,
            audio_encoder=tiny_hf_config(),
            decoder=MusicgenMelodyDecoderConfig(**sizes),
            num_chroma=12,
            chroma_length=chroma_frames,
        )
        model = MusicgenMelodyForConditionalGeneration(config).eval()
        projections = (model.enc_to_dec_proj, model.audio_enc_to_dec_proj)
    else:
        config = MusicgenConfig(
            text_encoder=text, audio_encoder=tiny_hf_config(), decoder=MusicgenDecoderConfig(**sizes)
        )
        model = MusicgenForConditionalGeneration(config).eval()
        projections = (model.enc_to_dec_proj,)
    for i, part in enumerate((model.text_encoder, model.decoder, *projections)):
        randomize_constants(part, seed + i, bias_std=0.5)
    model.audio_encoder.load_state_dict(tiny_hf_model(seed=seed).state_dict())  # every codec tensor random too
    with torch.no_grad():
        for projection in projections:
            projection.weight.mul_(40.0)
        if not melody:
            for layer in model.decoder.model.decoder.layers:
                layer.encoder_attn.v_proj.weight.mul_(10.0)
                layer.encoder_attn.q_proj.weight.mul_(10.0)
        for name, p in model.decoder.named_parameters():
            if "layer_norm" not in name:
                p.mul_(3.0)
    return model


def save_hub_layout(model, directory, spiece_dir):
    """Weights and config (`save_pretrained`) and the tokenizer's spiece.model, as on the hub."""
    model.save_pretrained(directory)
    (directory / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    return model, directory


@pytest.fixture(scope="session")
def hf_musicgen(tmp_path_factory, spiece_dir, hf_tokenizer):
    """(model, directory) of the tiny mono MusicGen."""
    assert len(hf_tokenizer) == TEXT_VOCAB
    model = tiny_hf_musicgen()
    assert constant_parameters(model.text_encoder) == constant_parameters(model.decoder) == []
    return save_hub_layout(model, tmp_path_factory.mktemp("musicgen"), spiece_dir)


@pytest.fixture(scope="session")
def hf_musicgen_stereo(tmp_path_factory, spiece_dir):
    """(model, directory) of a tiny stereo MusicGen: 8 codebooks [L0, R0, L1, R1, ...], delays 0, 0, 1, 1, ..."""
    return save_hub_layout(tiny_hf_musicgen(seed=1, audio_channels=2), tmp_path_factory.mktemp("stereo"), spiece_dir)


@pytest.fixture(scope="session")
def hf_musicgen_melody(tmp_path_factory, spiece_dir):
    """(model, directory) of a tiny MusicGen-Melody (mono)."""
    model = tiny_hf_musicgen(seed=2, melody=True)
    assert constant_parameters(model.decoder) == constant_parameters(model.audio_enc_to_dec_proj) == []
    return save_hub_layout(model, tmp_path_factory.mktemp("melody"), spiece_dir)


@pytest.fixture(scope="session")
def converted(hf_musicgen, tmp_path_factory):
    """`hf_musicgen` as a converted directory: loaded in place, no conversion or model cache on use."""
    return save_converted(convert_checkpoint(hf_musicgen[1]), tmp_path_factory.mktemp("converted") / "tiny")


@pytest.fixture(scope="session")
def converted_melody(hf_musicgen_melody, tmp_path_factory):
    """`hf_musicgen_melody` as a converted directory."""
    return save_converted(convert_checkpoint(hf_musicgen_melody[1]), tmp_path_factory.mktemp("converted") / "melody")
