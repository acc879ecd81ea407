"""`python -m musicgen_jax.metrics` on folders: FAD end to end against a direct computation (julius'
resampling, audiocraft's peak normalization and 16-bit PCM, Google's FAD windows over torchvggish's front end
and network, numpy's covariance and scipy's sqrtm), the chroma cosine, and bad folders: one error naming the
problem, or a listed skip."""

from __future__ import annotations

import json
import types

import julius
import numpy as np
import pytest
import soundfile
import torch
from scipy import linalg

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


@pytest.mark.slow
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
    # measured 4.3e-6 apart (float32 front end and network); without the 16-bit write 3.3e-5, with soxr's
    # resampling in place of julius' 1e-3
    assert fad["value"] == pytest.approx(direct, rel=1.5e-5)
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


@pytest.fixture(scope="module")
def passt_file(tmp_path_factory):
    """A random 2-block PaSST (the released width and patch grid) in hear21passt's released layout, written
    through the key map's inverse (the network itself is tested against hear21passt in test_passt.py)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from musicgen_jax.checkpoint.keymap import disassemble
    from musicgen_jax.metrics.passt.model import PasstConfig, PasstNet, num_frames
    from musicgen_jax.metrics.passt.weights import key_map

    config = PasstConfig(depth=2)
    mel = jnp.zeros((1, config.n_mels, num_frames(config.sample_rate, config)))
    params = nn.unbox(PasstNet(config).init(jax.random.PRNGKey(0), mel))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    path = tmp_path_factory.mktemp("passt") / "passt.pt"
    torch.save({k: torch.from_numpy(v) for k, v in disassemble(params, key_map(config)).items()}, path)
    return path


@pytest.mark.slow
def test_kld_through_the_folders(folders, passt_file, tmp_path, monkeypatch, capsys):
    from musicgen_jax.metrics.kld import passt_kld
    from musicgen_jax.metrics.passt.weights import load_passt

    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    args = ["--generated", str(folders / "generated"), "--reference", str(folders / "reference"), "--metrics", "kld"]
    code, result, err = _run([*args, "--passt", str(passt_file), "--bootstrap", "10"], capsys)
    assert code == 0, err
    clips = {}
    for folder in ("generated", "reference"):
        for name in ("a", "b", "sub/c"):
            data, rate = soundfile.read(folders / folder / f"{name}.wav", dtype="float32", always_2d=True)
            clips[folder, name] = julius.resample_frac(torch.from_numpy(data.T).mean(0), rate, 32000).numpy()
    names = ["a", "b", "sub/c"]
    direct = passt_kld(
        load_passt(str(passt_file)),
        [clips["generated", n] for n in names],
        [clips["reference", n] for n in names],
        32000,
    )
    kld = result["metrics"]["kld"]
    # the stereo clip: mixed before resampling here, after in passt_kld (rounding: 5e-5 relative here)
    assert kld["value"] == pytest.approx(direct.mean()["kld"], rel=1e-4) and kld["value"] > 0
    assert kld["kld_both"] == pytest.approx(direct.mean()["kld_both"], rel=1e-4)
    assert [kld["per_clip"][n] for n in names] == pytest.approx(direct.kld_pq.tolist(), rel=1e-4)


class _FakeCLAP:
    """A stand-in CLAP (the network is tested against laion_clap and audiocraft in test_clap.py): here the
    pairing of clips with descriptions is under test. Audio -> (mean, std, peak, 1), text -> its length etc."""

    config = types.SimpleNamespace(audio=types.SimpleNamespace(sample_rate=48_000, projection_dim=4))

    def crop_offsets(self, batch, length, seed=0):
        return np.zeros(batch, np.int32)

    def audio_embeddings(self, wavs, offsets):
        return np.stack([wavs.mean(1) * 100, wavs.std(1), np.abs(wavs).max(1), np.ones(len(wavs))], 1)

    def text_embeddings(self, texts):
        return np.array([[len(t), t.count("e"), t.count(" "), 1.0] for t in texts], np.float32)


@pytest.mark.parametrize("form", ["jsonl", "lines", "sidecars"])
def test_clap_pairs_each_clip_with_its_description(folders, tmp_path, monkeypatch, capsys, form):
    from musicgen_jax.metrics import suite
    from musicgen_jax.metrics.clap_score import text_consistency

    monkeypatch.setattr(suite, "load_clap", lambda source, tokenizer=None, mesh=None: _FakeCLAP())
    names, texts = ["a", "b", "sub/c"], ["gentle piano", "an energetic rock song here", "ambient pads"]
    generated = tmp_path / "gen"
    for name in names:
        (generated / name).parent.mkdir(parents=True, exist_ok=True)
        (generated / f"{name}.wav").write_bytes((folders / "generated" / f"{name}.wav").read_bytes())
    args = ["--generated", str(generated), "--metrics", "clap", "--bootstrap", "0"]
    if form == "jsonl":
        rows = [json.dumps({"name": n, "description": t}) for n, t in reversed(list(zip(names, texts)))]
        (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
        args += ["--descriptions", str(tmp_path / "d.jsonl")]
    elif form == "lines":
        (tmp_path / "d.txt").write_text("\n".join(texts) + "\n")
        args += ["--descriptions", str(tmp_path / "d.txt")]
    else:
        for name, text in zip(names, texts):
            (generated / f"{name}.json").write_text(json.dumps({"description": text}))
    code, result, err = _run(args, capsys)
    assert code == 0, err
    clips = []
    for name in names:
        data, rate = soundfile.read(generated / f"{name}.wav", dtype="float32", always_2d=True)
        clips.append(julius.resample_frac(torch.from_numpy(data.T).mean(0), rate, 48000).numpy())
    expected = text_consistency(_FakeCLAP(), clips, texts, 48000)
    clap = result["metrics"]["clap"]
    assert [clap["per_clip"][n] for n in names] == pytest.approx(expected.tolist(), abs=1e-5)
    assert clap["value"] == pytest.approx(expected.mean(), abs=1e-5) and len(set(expected.round(4))) == 3


def test_descriptions_must_cover_the_clips(folders, tmp_path, capsys):
    args = ["--generated", str(folders / "generated"), "--metrics", "clap"]
    (tmp_path / "d.txt").write_text("one\ntwo\n")
    code, _, err = _run([*args, "--descriptions", str(tmp_path / "d.txt")], capsys)
    assert code == 2 and "2 descriptions for 3 clips" in err
    (tmp_path / "d.jsonl").write_text(json.dumps({"name": "a", "description": "x"}) + "\n")
    code, _, err = _run([*args, "--descriptions", str(tmp_path / "d.jsonl")], capsys)
    assert code == 2 and "no descriptions for (2): b, sub/c" in err
    code, _, err = _run(args, capsys)
    assert code == 2 and "no description for clip 'a'" in err and "a.json is missing" in err
