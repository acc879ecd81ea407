"""`python -m musicgen_jax.metrics` on folders: FAD end to end against a direct computation (julius'
resampling, audiocraft's peak normalization and 16-bit PCM, Google's FAD windows over torchvggish's front end
and network, numpy's covariance and scipy's sqrtm), the chroma cosine, and bad folders: one error naming the
problem, or a listed skip."""

from __future__ import annotations

import json

import julius
import numpy as np
import pytest
import soundfile
import torch
from scipy import linalg
from torchvggish.torchvggish import _vgg

from musicgen_jax.cli.metrics import main
from musicgen_jax.metrics import chroma_cosine
from tests.metrics.test_vggish import reference_examples, torch_embeddings


def _clip(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    """`[T, C]` float32: tones and noise, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freqs = rng.uniform(150, 900, size=3)
    wav = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs) + 0.05 * rng.standard_normal(t.size)
    return np.stack([wav * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def vggish_file(tmp_path_factory):
    torch.manual_seed(3)
    model = _vgg(postprocess=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """3 generated clips (32 kHz, one stereo, one in a subfolder) and their references (44.1 kHz)."""
    root = tmp_path_factory.mktemp("clips")
    for i, name in enumerate(["a", "b", "sub/c"]):
        for folder, rate, seed in (("generated", 32000, i), ("reference", 44100, 10 + i)):
            path = root / folder / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, _clip(3.2, rate, seed, channels=2 if i == 1 else 1), rate, subtype="FLOAT")
    return root


def _reference_fad_inputs(path, model) -> np.ndarray:
    """A clip's FAD embeddings as audiocraft + Google's tool compute them, written out with the references."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(data.T).mean(dim=0, keepdim=True)
    wav = julius.resample_frac(mono, rate, 16000)[0].double().numpy()
    wav = wav * (10 ** (-1 / 20) / np.abs(wav).max())  # audio_write(strategy="peak"): -1 dBFS
    pcm = np.clip(np.round(wav * 32768), -32768, 32767)
    return torch_embeddings(model, reference_examples(pcm))


def _run(args, capsys) -> tuple[int, dict | None, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else None), out.err


def test_fad_equals_direct_computation(folders, vggish_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    path, model = vggish_file
    out = tmp_path / "metrics.json"
    args = ["--generated", str(folders / "generated"), "--reference", str(folders / "reference"), "--metrics", "fad"]
    code, result, err = _run([*args, "--vggish", str(path), "--bootstrap", "20", "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads(out.read_text()) == result
    fad = result["metrics"]["fad"]
    assert list(result["metrics"]) == ["fad"] and fad["clips"] == 3 and result["skipped"] == []
    sets = [
        np.concatenate([_reference_fad_inputs(folders / f / f"{n}.wav", model) for n in ("a", "b", "sub/c")])
        for f in ("generated", "reference")
    ]
    assert sets[0].shape == (3 * 5, 128)  # 3.2 s: windows at 0, 0.5, ..., 2.0 s
    (mu_a, mu_b), (s_a, s_b) = [s.mean(0) for s in sets], [np.cov(s, rowvar=False) for s in sets]
    direct = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b) - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real)
    assert fad["value"] == pytest.approx(direct, rel=1e-3)
    assert fad["interval"][0] <= fad["value"] <= fad["interval"][1] * 1.5
    assert sorted(fad["per_clip"]) == ["a", "b", "sub/c"]


def test_chroma_through_the_folders(folders, capsys):
    args = ["--generated", str(folders / "generated"), "--melody", str(folders / "reference")]
    code, result, err = _run(args, capsys)
    assert code == 0, err
    chroma = result["metrics"]["chroma"]
    cosines = []
    for name in ("a", "b", "sub/c"):
        clips = []
        for folder in ("generated", "reference"):
            data, rate = soundfile.read(folders / folder / f"{name}.wav", dtype="float32", always_2d=True)
            mono = torch.from_numpy(data.T).mean(dim=0)
            clips.append(julius.resample_frac(mono, rate, 32000).numpy())
        length = min(c.size for c in clips)
        cosines.append(chroma_cosine.frame_cosines(clips[0][:length], clips[1][:length]))
        assert chroma["per_clip"][name] == pytest.approx(cosines[-1].mean(), abs=1e-6)
    assert chroma["value"] == pytest.approx(np.concatenate(cosines).mean(), abs=1e-6)


def _write(path, wav, rate=32000):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav, rate)


def test_bad_folders(tmp_path, vggish_file, monkeypatch, capsys):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    for name, seconds in (("x", 2.0), ("y", 2.0), ("short", 0.5)):
        _write(gen / f"{name}.wav", _clip(seconds, 32000, 1))
        _write(ref / f"{name}.wav", _clip(seconds, 32000, 2))
    _write(gen / "quiet.wav", np.zeros(64000, np.float32))
    _write(ref / "quiet.wav", _clip(2.0, 32000, 3))
    vggish = ["--vggish", str(vggish_file[0]), "--bootstrap", "0", "--metrics", "fad"]

    code, result, err = _run(["--generated", str(gen), "--reference", str(ref), *vggish], capsys)
    assert code == 0, err
    assert result["metrics"]["fad"]["clips"] == 2
    assert result["skipped"] == [
        {"name": "quiet", "metric": "fad", "reason": "silent"},
        {"name": "short", "metric": "fad", "reason": "8000 samples, under the 16000 it needs"},
    ]

    _write(ref / "extra.wav", _clip(2.0, 32000, 4))
    code, _, err = _run(["--generated", str(gen), "--reference", str(ref), *vggish], capsys)
    assert code == 2 and "reference clips without a generated clip (1): extra" in err
    (ref / "extra.wav").unlink()

    (gen / "y.wav").write_bytes(b"not audio")
    code, _, err = _run(["--generated", str(gen), "--reference", str(ref), *vggish], capsys)
    assert code == 2 and "y.wav" in err and err.count("error:") == 1

    code, _, err = _run(["--generated", str(tmp_path / "none"), "--reference", str(ref)], capsys)
    assert code == 2 and "none is not a folder" in err

    with pytest.raises(SystemExit):
        main(["--generated", str(gen)])
    assert "no metric has its inputs" in capsys.readouterr().err
    code, _, err = _run(["--generated", str(gen), *vggish], capsys)
    assert code == 2 and "fad needs --reference" in err
