"""EnCodecs other than MusicGen's. One trained with audiocraft in a configuration MusicGen does not use (24 kHz,
causal, 8 codebooks of 1024, other ratios and widths): its solver checkpoint exported with audiocraft's own
`export_encodec`, loaded here and by audiocraft's `CompressionModel.get_pretrained`, every weight random; codes
equal, audio close. transformers' `facebook/encodec_24khz` architecture, real size, against its `EncodecModel`;
`encodec_48khz`'s settings (input renormalization, chunking, time group norm) refused by name."""

from __future__ import annotations

import functools
from unittest import mock

import jax
import numpy as np
import pytest
import torch
import yaml

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.convert.codec_loader import load_codec
from tests.audiocraft_api import audiocraft_models
from tests.codec.conftest import hf_decode, tiny_hf_model
from tests.torch_init import constant_parameters, randomize_constants

CFG = {
    "device": "cpu",
    "sample_rate": 24000,
    "channels": 1,
    "compression_model": "encodec",
    "encodec": {
        "autoencoder": "seanet",
        "quantizer": "rvq",
        "sample_rate": "${sample_rate}",  # interpolations, as audiocraft's configs write them
        "channels": "${channels}",
        "causal": True,
        "renormalize": False,
    },
    "seanet": {
        "dimension": 32,
        "channels": "${channels}",
        "causal": "${encodec.causal}",
        "n_filters": 8,
        "n_residual_layers": 1,
        "ratios": [6, 5, 4, 2],
        "activation": "ELU",
        "activation_params": {"alpha": 1.0},
        "norm": "weight_norm",
        "norm_params": {},
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 7,
        "dilation_base": 2,
        "pad_mode": "constant",
        "true_skip": True,
        "compress": 2,
        "lstm": 1,
        "disable_norm_outer_blocks": 0,
        "decoder": {"trim_right_ratio": 1.0, "final_activation": None, "final_activation_params": None},
        "encoder": {},
    },
    "rvq": {
        "n_q": 8,
        "q_dropout": False,
        "bins": 1024,
        "decay": 0.99,
        "kmeans_init": True,
        "kmeans_iters": 50,
        "threshold_ema_dead_code": 2,
    },
}
HOP = 6 * 5 * 4 * 2


def music(samples: int, rate: int, seed: int) -> np.ndarray:
    """`[1, 1, samples]`: a melody of random notes (three harmonics each) every 50 ms under an envelope, a
    little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    f = 220.0 * 2 ** (rng.integers(0, 24, int(t[-1] / 0.05) + 1)[(t / 0.05).astype(int)] / 12)
    phase = 2 * np.pi * np.cumsum(f) / rate
    wav = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) / 3
    return (wav + 0.01 * rng.standard_normal(samples))[None, None].astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(audiocraft's model loaded from the export, the export's path): a solver checkpoint of random weights,
    the codebooks drawn at the scale of the encoder's latents (stage q at 0.5**q) so that codes follow the
    input, exported by `audiocraft.utils.export.export_encodec`."""
    from omegaconf import OmegaConf

    directory = tmp_path_factory.mktemp("own_codec")
    with audiocraft_models():
        from audiocraft.models import CompressionModel, builders
        from audiocraft.utils.export import export_encodec

        torch.manual_seed(0)
        model = builders.get_compression_model(OmegaConf.create(CFG)).eval()
        randomize_constants(model, seed=1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("weight_g"):
                    p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
            latents = model.encoder(torch.randn(4, 1, 12000)).transpose(1, 2).reshape(-1, 32)
            for q, layer in enumerate(model.quantizer.vq.layers):
                embed = torch.randn(1024, 32) * latents.std(0) * 0.5**q + (latents.mean(0) if q == 0 else 0.0)
                layer._codebook.embed.copy_(embed)
                layer._codebook.inited.fill_(1.0)
        assert not constant_parameters(model)
        optimizer = torch.optim.Adam(model.parameters())
        checkpoint = directory / "checkpoint.th"  # as a compression solver saves it (audiocraft's StandardSolver)
        torch.save(
            {
                "model": {k: v + 0.01 for k, v in model.state_dict().items()},  # the latest, not the best, weights
                "optimizer": optimizer.state_dict(),
                "best_state": {"model": model.state_dict()},
                "history": [{"train": {"loss": 1.5}, "valid": {"sisnr": 3.0}}],
                "xp.cfg": OmegaConf.create(CFG),
            },
            checkpoint,
        )
        # audiocraft 1.3 reads its own solver checkpoint (an OmegaConf config inside) with torch.load's
        # default, which torch >= 2.6 turned to weights_only=True
        with mock.patch.object(torch, "load", functools.partial(torch.load, weights_only=False)):
            package = export_encodec(checkpoint, directory / "compression_state_dict.bin")
        reference = CompressionModel.get_pretrained(str(package))
    return reference, package, checkpoint


@pytest.mark.parametrize("samples", [HOP * 40, HOP * 40 + 77])
def test_codes_equal_audiocraft_and_audio_is_close(exported, samples):
    reference, package, _ = exported
    codec = load_codec(package)
    assert (codec.sample_rate, codec.num_codebooks, codec.config.codebook_size) == (24000, 8, 1024)
    assert codec.config.causal and codec.frame_rate == reference.frame_rate == 100
    wav = music(samples, 24000, seed=samples)
    with torch.no_grad():
        codes, scale = reference.encode(torch.from_numpy(wav))
        assert scale is None
        expected_audio = reference.decode(codes).numpy()
    ours = np.asarray(codec.encode(wav))
    np.testing.assert_array_equal(ours, codes.numpy())
    assert min(len(np.unique(ours[:, q])) for q in range(1, 8)) > 15  # the residual stages follow the input
    audio = np.asarray(codec.decode(codes.numpy()))
    assert audio.shape == expected_audio.shape
    np.testing.assert_allclose(audio, expected_audio, atol=2e-6 * np.abs(expected_audio).max())  # seen: 4.2e-7


def test_the_solver_checkpoint_loads_as_its_export(exported):
    """The solver's `checkpoint.th` (its config an OmegaConf object, read without omegaconf) gives the codec of
    the package `export_encodec` made from it."""
    _, package, checkpoint = exported
    cfg = yaml.safe_load(torch.load(package, weights_only=False)["xp.cfg"])
    assert cfg["rvq"] == CFG["rvq"] and cfg["seanet"]["ratios"] == [6, 5, 4, 2]
    from_solver, from_package = load_codec(checkpoint), load_codec(package)
    assert from_solver.config == from_package.config
    assert jax.tree.all(jax.tree.map(np.array_equal, from_solver.params, from_package.params))
    wav = music(HOP * 10, 24000, seed=3)
    np.testing.assert_array_equal(np.asarray(from_solver.encode(wav)), np.asarray(from_package.encode(wav)))


ENCODEC_24KHZ = dict(  # transformers' `EncodecConfig()` defaults: facebook/encodec_24khz
    sampling_rate=24000,
    num_filters=32,
    hidden_size=128,
    upsampling_ratios=[8, 5, 4, 2],
    target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0],
    codebook_size=1024,
    use_causal_conv=True,
    use_conv_shortcut=True,
)


def test_transformers_encodec_24khz_codes_equal(tmp_path):
    """All 32 codebooks (24 kbps) of the real-size 24 kHz architecture, a length off the hop."""
    model = tiny_hf_model("reflect", seed=2, **ENCODEC_24KHZ)
    model.save_pretrained(tmp_path)
    codec = load_codec(tmp_path)
    assert (codec.sample_rate, codec.num_codebooks, codec.frame_rate) == (24000, 32, 75)
    wav = music(320 * 30 + 101, 24000, seed=5)
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(wav), bandwidth=24.0).audio_codes[0].numpy()
    codes = np.asarray(codec.encode(wav))
    np.testing.assert_array_equal(codes, expected)
    audio, reference = np.asarray(codec.decode(codes)), hf_decode(model, codes)
    np.testing.assert_allclose(audio, reference[..., : audio.shape[-1]], atol=2e-6 * np.abs(reference).max())


def test_transformers_encodec_48khz_settings_are_named(tmp_path):
    settings = dict(normalize=True, chunk_length_s=1.0, overlap=0.01, norm_type="time_group_norm")
    tiny_hf_model("reflect", seed=3, sampling_rate=48000, **settings).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="unsupported EnCodec settings") as error:
        load_codec(tmp_path)
    assert all(name in str(error.value) for name in ("norm_type", "normalize", "chunk_length_s"))
