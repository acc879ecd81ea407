"""Tiny transformers `EncodecModel`s with the 32 kHz structure (narrow channels), random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

CODEBOOK_SIZE = 2048
HIDDEN = 16


def tiny_hf_config(pad_mode: str = "reflect", **overrides) -> EncodecConfig:
    kwargs = dict(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=HIDDEN,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=CODEBOOK_SIZE,
        use_causal_conv=False,
        use_conv_shortcut=False,
        pad_mode=pad_mode,
        normalize=False,
        num_lstm_layers=2,
        compress=2,
    )
    return EncodecConfig(**{**kwargs, **overrides})


def tiny_hf_model(pad_mode: str = "reflect", seed: int = 0, **overrides) -> EncodecModel:
    """Random init; weight-norm gains (equal to ||v|| at init) are randomized so that folding
    matters, every bias (the convolutions' and both of each LSTM layer's) redrawn, and the codebooks
    (zeros in HF's init) are drawn at the scale of the encoder's latents, stage q at 0.5**q of it, so
    that codes vary with the input as in a trained codec."""
    torch.manual_seed(seed)
    model = EncodecModel(tiny_hf_config(pad_mode, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("original0"):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            elif name.endswith("bias") or ".bias_" in name:  # LSTM biases: bias_ih_l0, bias_hh_l0, ...
                p.normal_(0.0, 0.05)
        hidden, size = model.config.hidden_size, model.config.codebook_size
        latents = model.encoder(torch.randn(8, 1, 16000)).transpose(1, 2).reshape(-1, hidden)
        mean, std = latents.mean(0), latents.std(0)
        for q, layer in enumerate(model.quantizer.layers):
            embed = torch.randn(size, hidden) * std * 0.5**q + (mean if q == 0 else 0.0)
            layer.codebook.embed.copy_(embed)
    return model


@pytest.fixture(scope="session", params=["reflect", "constant"])
def hf_encodec(request):
    """(pad_mode, model) for both padding modes."""
    return request.param, tiny_hf_model(request.param)


def hf_encode(model, wav: np.ndarray) -> np.ndarray:
    """[B, 1, T] -> codes [B, K, T'] from transformers."""
    with torch.no_grad():
        return model.encode(torch.from_numpy(wav)).audio_codes[0].numpy()


def hf_decode(model, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(codes)[None], [None]).audio_values.numpy()


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
