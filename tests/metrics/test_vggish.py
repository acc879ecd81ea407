"""VGGish against torchvggish (the PyTorch port of AudioSet's TensorFlow VGGish, whose released checkpoint
Google's `frechet_audio_distance` and fadtk load), at real size with random weights saved as the released
`.pth`, front end included.

The reference embedding is the FAD one, computed directly: Google's `AudioSetModel.extract_features`
(divide by max(0.1, the clip's maximum), 1 s windows every 8000 samples) over torchvggish's own
`mel_features` (numpy, float64), then torchvggish's `VGG` without its last ReLU (fadtk's `VGGishModel`).

Measured (CPU, float32): log-mel examples within 1.6e-5 of the float64 reference (asserted 2e-4, absolute: values
are logs near -3 .. 4), embeddings within 2e-6 of their largest magnitude (asserted 1e-4).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvggish import mel_features
from torchvggish.torchvggish import Postprocessor, _vgg

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.metrics.vggish import model as vggish_model
from musicgen_jax.metrics.vggish.weights import load_vggish

RATE = 16_000


def music(seconds: float, seed: int) -> np.ndarray:
    """A chord with harmonics, a melody and some noise: `[T]` float64 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wav = sum(0.2 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t)) for f in (220.0, 277.2, 329.6))
    melody = np.repeat(rng.choice([440.0, 493.9, 523.3, 587.3], size=int(seconds * 4) + 1), RATE // 4)[: t.size]
    wav = wav + 0.15 * np.sin(2 * np.pi * np.cumsum(melody) / RATE) + 0.02 * rng.standard_normal(t.size)
    return wav


def reference_examples(wav: np.ndarray) -> np.ndarray:
    """Google's FAD feature extraction over torchvggish's numpy front end: `[E, 96, 64]` float64."""
    wav = wav / max(0.1, wav.max())
    examples = []
    for start in range(0, wav.size - RATE + 1, 8000):
        log_mel = mel_features.log_mel_spectrogram(
            wav[start : start + RATE],
            audio_sample_rate=RATE,
            log_offset=0.01,
            window_length_secs=0.025,
            hop_length_secs=0.010,
            num_mel_bins=64,
            lower_edge_hertz=125,
            upper_edge_hertz=7500,
        )
        examples.append(mel_features.frame(log_mel, window_length=96, hop_length=96))
    return np.concatenate(examples)


@pytest.fixture(scope="module")
def torch_vggish():
    torch.manual_seed(0)
    model = _vgg(postprocess=False).eval()
    with torch.no_grad():  # default init: 9 layers would shrink the signal; scale to keep it O(1)
        for p in model.parameters():
            p.mul_(2.0)
    return model


@pytest.fixture(scope="module")
def released(tmp_path_factory, torch_vggish):
    """The checkpoint as torchvggish's release has it (the `VGG` state dict) and random PCA parameters."""
    directory = tmp_path_factory.mktemp("vggish")
    torch.save(torch_vggish.state_dict(), directory / "vggish-10086976.pth")
    rng = np.random.default_rng(1)
    pca = {"pca_eigen_vectors": rng.standard_normal((128, 128)) * 0.1, "pca_means": rng.standard_normal((128, 1))}
    torch.save(pca, directory / "vggish_pca_params-970ea276.pth")
    return directory


@pytest.fixture(scope="module")
def vggish(released, tmp_path_factory):
    import os

    os.environ["MUSICGEN_JAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return load_vggish(released / "vggish-10086976.pth", pca=released / "vggish_pca_params-970ea276.pth")
    finally:
        del os.environ["MUSICGEN_JAX_CACHE"]


def torch_embeddings(model, examples: np.ndarray) -> np.ndarray:
    """torchvggish's `VGG` without the final ReLU: fc2's output."""
    with torch.no_grad():
        x = model.features(torch.from_numpy(examples).float()[:, None])
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return model.embeddings[:-1](x).numpy()


@pytest.mark.parametrize("seconds", [1.0, 3.3, 10.0])
def test_examples_equal_google_fad_front_end(seconds):
    wav = music(seconds, seed=int(seconds * 10))
    ours = np.asarray(vggish_model.fad_examples(wav[None].astype(np.float32)))[0]
    ref = reference_examples(wav)
    assert ours.shape == ref.shape == (vggish_model.num_examples(wav.size), 96, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)


def test_mel_matrix_equals_mel_features():
    ref = mel_features.spectrogram_to_mel_matrix(64, 257, 16000, 125, 7500)
    np.testing.assert_allclose(vggish_model.mel_matrix(), ref, atol=1e-6)


def test_embeddings_equal_torchvggish(vggish, torch_vggish):
    clips = np.stack([music(4.0, seed=s) for s in (1, 2)]).astype(np.float32)
    ours = vggish.embed(clips)
    assert ours.shape == (2, 7, 128)
    for clip, emb in zip(clips, ours):
        ref = torch_embeddings(torch_vggish, reference_examples(clip.astype(np.float64)))
        np.testing.assert_allclose(emb, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


def test_postprocess_equals_torchvggish(vggish, torch_vggish, released):
    clip = music(2.0, seed=5).astype(np.float32)
    processor = Postprocessor.__new__(Postprocessor)  # its __init__ downloads the released parameters
    params = torch.load(released / "vggish_pca_params-970ea276.pth", weights_only=False)
    processor._pca_matrix = torch.as_tensor(params["pca_eigen_vectors"]).float()
    processor._pca_means = torch.as_tensor(params["pca_means"].reshape(-1, 1)).float()
    with torch.no_grad():
        fc2 = torch.from_numpy(vggish.embed(clip[None])[0].copy())
        ref = processor.postprocess(fc2).numpy()
    ours = vggish.embed(clip[None], postprocess=True)[0]
    assert np.mean(ours == ref) > 0.99  # float32 rounding may move a value across a quantization step
    np.testing.assert_allclose(ours, ref, atol=1)


def test_short_clips_have_no_examples(vggish):
    assert vggish.embed(np.zeros((2, RATE - 1), np.float32)).shape == (2, 0, 128)


def test_bad_checkpoint_names_the_key(released, tmp_path, torch_vggish):
    state = torch_vggish.state_dict()
    del state["features.3.weight"]
    state["embeddings.4.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"features\.3\.weight(.|\n)*embeddings\.4\.bias"):
        load_vggish(tmp_path / "bad.pth")
