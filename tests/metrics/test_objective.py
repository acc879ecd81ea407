"""`evaluate --objective`: clips generated for a split's examples with audiocraft's evaluation settings, each
scored against its example's audio (the source file's stretch where the dataset's audio folder has it, else the
codes decoded), with the tiny MusicGen of the LM tests and a random VGGish."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from musicgen_jax.cli.evaluate import main
from musicgen_jax.evaluate import objective
from musicgen_jax.fileio import read_json, save_json
from musicgen_jax.musicgen import MusicGen
from tests.datasets import write_dataset

pytestmark = pytest.mark.e2e
FRAMES = 150  # 3 s: five FAD windows a clip


@pytest.fixture(scope="module")
def dataset(hf_musicgen, tmp_path_factory):
    """3 valid examples of 3 s; the dataset's audio folder holds the source files of the first two."""
    data = tmp_path_factory.mktemp("objective_tokens")
    examples = write_dataset(data, [FRAMES] * 5, valid=3, codec=hf_musicgen[1])
    audio = tmp_path_factory.mktemp("objective_audio")
    rng = np.random.default_rng(0)
    for example in examples[2:4]:
        soundfile.write(audio / example["path"], rng.standard_normal((4 * 44100, 2)) * 0.1, 44100, subtype="FLOAT")
    info = read_json(data / "dataset.json")
    save_json(data / "dataset.json", {**info, "settings": {"audio": str(audio), "segment_seconds": 30.0}})
    return data, examples[2:], audio


def test_objective_generates_and_scores(hf_musicgen, dataset, vggish_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    data, examples, audio = dataset
    out = tmp_path / "clips"
    from musicgen_jax.metrics.suite import Sources

    model = MusicGen.get_pretrained(str(hf_musicgen[1]))
    sources = Sources(str(vggish_file[0]))
    result = objective(
        str(hf_musicgen[1]), str(data), str(out), metrics=["fad"], sources=sources, rounds=20, musicgen=model
    )
    assert result["reference_audio"] == "codes decoded (1 of 3)"
    fad = result["metrics"]["fad"]
    assert fad["clips"] == 3 and np.isfinite(fad["value"]) and fad["interval"][0] <= fad["interval"][1]
    names = sorted(p.stem for p in (out / "generated").iterdir())
    assert names == sorted(p.stem for p in (out / "reference").iterdir()) and len(names) == 3
    lines = [json.loads(line) for line in (out / "descriptions.jsonl").read_text().splitlines()]
    assert [line["description"] for line in lines] == [e["metadata"]["description"] or "" for e in examples]

    source, rate = soundfile.read(audio / examples[0]["path"], dtype="float32")
    reference, ref_rate = soundfile.read(out / "reference" / f"{names[0]}.wav", dtype="float32")
    assert ref_rate == rate and np.array_equal(reference, source[: 3 * rate])

    model = MusicGen.get_pretrained(str(hf_musicgen[1]))  # a fresh one: audiocraft's settings are its defaults
    model.set_generation_params(duration=FRAMES / 50)
    decoded = model.generate_audio(examples[2]["codes"][None].astype(np.int32))[0]
    np.testing.assert_allclose(soundfile.read(out / "reference" / f"{names[2]}.wav")[0], decoded[0], atol=1e-6)
    for i, name in enumerate(names):
        expected = model.generate([examples[i]["metadata"]["description"]], seed=[i])[0]
        np.testing.assert_allclose(soundfile.read(out / "generated" / f"{name}.wav")[0], expected[0], atol=1e-6)


def test_objective_cli(hf_musicgen, dataset, vggish_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    args = ["--model", str(hf_musicgen[1]), "--data", str(dataset[0]), "--objective", "--num-samples", "2"]
    code = main([*args, "--metrics", "fad", "--vggish", str(vggish_file[0]), "--bootstrap", "0", "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["metrics"]["fad"]["clips"] == 2 and result["reference_audio"] == "source files"


def test_a_bad_network_source_fails_before_generating(hf_musicgen, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    args = ["--model", str(hf_musicgen[1]), "--data", str(dataset[0]), "--objective", "--metrics", "kld"]
    out = tmp_path / "clips"
    missing = tmp_path / "nowhere" / "passt.pt"
    code = main([*args, "--passt", str(missing), "--clips", str(out), "--no-progress"])
    assert code == 2 and f"checkpoint path {missing} does not exist" in capsys.readouterr().err
    assert not out.exists()
