"""PaSST and the KLD metric against their references: hear21passt 0.0.26's `base20sec` model (eval mode) and
audiocraft 1.3.0's `PasstKLDivergenceMetric(pretrained_length=20)`, both loading one real-size random checkpoint
saved as the released file is (the state dict of hear21passt's `PaSST` net), which our `convert` reads too.

Needs `pip install --no-deps hear21passt==0.0.26` and `pip install torchmetrics` (timm and torchaudio are stood in
for: see `hear21passt_api`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.metrics.kld import passt_kld
from musicgen_jax.metrics.passt import PaSST, PasstConfig
from musicgen_jax.metrics.passt.weights import convert, load_passt
from tests.metrics.hear21passt_api import reference
from tests.torch_init import constant_parameters

pytestmark = pytest.mark.slow  # real-size networks on both sides

SR = 32_000
RELEASED_NAME = "passt-s-f128-20sec-p16-s10-ap.474-swa.pt"


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Every parameter random, at scales that keep activations O(1) and make the logits spread (std ~1), so that
    label distributions differ between clips: matrices N(0, 1 / fan_in), norm scales U(0.5, 1.5), tokens and
    positional embeddings N(0, 0.5), biases N(0, 0.1); the final norm's scale and bias 100 times smaller."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "token" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
            elif name in ("norm.weight", "norm.bias"):  # small features: the head LayerNorm's eps (1e-5) matters
                p.copy_((torch.rand(p.shape, generator=generator) + 0.5) * 0.01)
            elif "norm" in name and name.endswith("weight") or name == "head.0.weight":
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def _music(seconds: float, seed: int, channels: int = 1) -> np.ndarray:
    """`[C, T]` float32 at 32 kHz: a few harmonic tones with a vibrato and a tremolo, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(channels):
        wav = 0.02 * rng.standard_normal(t.size)
        for f0 in rng.uniform(80, 1500, 3):
            phase = 2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
            tremolo = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t + rng.uniform(0, 6))
            wav += sum(0.1 / k * np.sin(k * phase) for k in range(1, 4)) * tremolo
        out.append(wav)
    return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(audiocraft's metric, whose `.model` is hear21passt's logits model, our PaSST), one random checkpoint."""
    path = tmp_path_factory.mktemp("passt") / RELEASED_NAME
    with reference(str(path)) as (base20sec, kld), contextlib.redirect_stdout(io.StringIO()):
        from hear21passt.models.passt import get_model

        net = get_model(arch="passt_20sec", pretrained=False, input_tdim=2000)
        _randomize(net, seed=0)
        assert not constant_parameters(net)
        torch.save(net.state_dict(), path)
        del net
        metric = kld.PasstKLDivergenceMetric(pretrained_length=20)  # loads `path` through get_basic_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSICGEN_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))
        ours = load_passt(str(path), batch_size=2)
    return metric, ours


def test_config_round_trip():
    config = PasstConfig(depth=7)
    assert PasstConfig.from_dict(config.to_dict()) == config
    assert (config.max_samples, config.min_samples) == (640_000, 4_800)


@pytest.mark.parametrize("seconds,batch", [(10.0, 1), (20.0, 1)])
def test_logits_match_hear21passt(models, seconds, batch):
    """Mel and logits of hear21passt's eval-mode model on the same clips: measured max relative error of the
    logits (max |diff| / max |logit|) 9.1e-7 (10 s) and 1.1e-6 (20 s), stated tolerance 1e-4; the mel's max
    absolute error 1.8e-5 (the log of tiny powers: the FFTs and mel banks differ in rounding), tolerance 1e-4."""
    metric, ours = models
    ours = PaSST(ours.params, ours.config, batch_size=batch)  # no padded rows to compute on this CPU
    wav = np.concatenate([_music(seconds, seed) for seed in range(batch)])
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        mel_ref = metric.model.mel(torch.from_numpy(wav)).numpy()
        logits_ref = metric.model(torch.from_numpy(wav)).numpy()
    mel = ours.mel(wav)
    assert mel.shape == mel_ref.shape == (batch, 128, int(seconds * 100))
    np.testing.assert_allclose(mel, mel_ref, atol=1e-4, rtol=0)
    logits = ours.logits(wav)
    assert logits.shape == (batch, 527) and logits_ref.std() > 0.5
    error = np.abs(logits - logits_ref).max() / np.abs(logits_ref).max()
    assert error < 1e-4, error


def test_kld_matches_audiocraft(models):
    """Per pair and overall KLD of audiocraft's metric (its `update` one pair at a time: the running sums give
    each pair's share). Both metrics split at 20 s (checked), then both at 2 s for this test (audiocraft's
    `max_input_frames`, our `max_seconds`), so that clips of several segments stay cheap on a CPU: a stereo
    2.5 s pair (segments of 2 s and 0.5 s), a 2.1 s pair (its 0.1 s tail dropped) and a 2 s pair passed
    zero-padded with its size (the three 2 s segments of a side make a full and a padded batch of 2). Measured
    max relative difference 4.4e-6 per pair, 1.7e-6 overall (KLDs of 0.03 to 0.06), stated tolerance 1e-4."""
    metric, ours = models
    assert metric.max_input_frames == ours.config.max_samples == 20 * SR
    assert metric.min_input_frames == ours.config.min_samples
    metric.max_input_frames = 2 * SR
    ours = PaSST(ours.params, dataclasses.replace(ours.config, max_seconds=2.0), batch_size=2)
    generated = [_music(2.5, 10, channels=2), _music(2.1, 11), _music(2.0, 12)]
    references = [_music(2.5, 20, channels=2), _music(2.1, 21), _music(2.0, 22)]
    expected = {"kld_pq": [], "kld_qp": [], "segments": []}
    metric.reset()
    last = np.zeros(3)
    for gen, ref in zip(generated, references):
        size = gen.shape[-1]
        pad = ((0, 0), (0, SR // 2))  # audiocraft's batches are padded: `sizes` cuts the padding off
        with contextlib.redirect_stdout(io.StringIO()):
            metric.update(
                torch.from_numpy(np.pad(gen, pad))[None],
                torch.from_numpy(np.pad(ref, pad))[None],
                torch.tensor([size]),
                torch.tensor([SR]),
            )
        sums = np.array([metric.kld_pq_sum.item(), metric.kld_qp_sum.item(), metric.weight.item()])
        pq, qp, count = sums - last
        last = sums
        expected["kld_pq"].append(pq / count)
        expected["kld_qp"].append(qp / count)
        expected["segments"].append(count)
    total = metric.compute()

    result = passt_kld(ours, generated, references, SR)
    np.testing.assert_array_equal(result.segments, [2, 1, 1])
    np.testing.assert_array_equal(expected["segments"], [2, 1, 1])
    assert min(expected["kld_pq"]) > 0.01  # distributions that differ: the comparison means something
    np.testing.assert_allclose(result.kld_pq, expected["kld_pq"], rtol=1e-4)
    np.testing.assert_allclose(result.kld_qp, expected["kld_qp"], rtol=1e-4)
    np.testing.assert_allclose(result.kld_both, result.kld_pq + result.kld_qp, rtol=1e-6)
    mean = result.mean()
    for key in ("kld", "kld_pq", "kld_qp", "kld_both"):
        np.testing.assert_allclose(mean[key], total[key], rtol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def small_state():
    """A small PaSST net's state dict (2 blocks, 128 wide), laid out as a released checkpoint."""
    with reference("unused"):
        from hear21passt.models.passt import PaSST as TorchPaSST

        net = TorchPaSST(img_size=(128, 200), stride=10, embed_dim=128, depth=2, num_heads=2, distilled=True)
    return net.state_dict()


def test_bad_checkpoint_names_the_key(small_state, tmp_path):
    torch.save(small_state, tmp_path / "good.pt")
    params, config = convert(tmp_path / "good.pt")
    assert (config["depth"], config["embed_dim"], config["time_patches"]) == (2, 128, 20)

    missing = {k: v for k, v in small_state.items() if k != "blocks.1.attn.proj.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.attn\.proj\.weight"):
        convert(tmp_path / "missing.pt")

    wrong = dict(small_state, **{"blocks.0.mlp.fc2.bias": torch.zeros(127)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match=r"wrong shapes \(1\): blocks\.0\.mlp\.fc2\.bias: \(127,\)"):
        convert(tmp_path / "wrong.pt")

    unexpected = dict(small_state, extra=torch.zeros(3))
    torch.save({"model": unexpected}, tmp_path / "unexpected.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): extra"):
        convert(tmp_path / "unexpected.pt")
