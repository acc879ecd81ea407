"""Training over DAC tokens, end to end (issue 32): audio coded by the codec audiocraft calls dac_44khz (here a
tiny random transformers `DacModel` in an offline hub cache as descript/dac_44khz) with its first 3 codebooks
(`prepare --num-codebooks 3`); the debug config with `codebooks` set as audiocraft's DAC recipe sets them learns
(its loss falls by more than half); the run samples and decodes with its dataset's codec, evaluates, and exports
to audiocraft naming the DAC; a `codebooks` setting that disagrees with the dataset is one error line, before
anything compiles."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch
import yaml

from musicgen_jax import export
from musicgen_jax.audio import write_audio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.codec.dac.model import DacCodec
from musicgen_jax.config import DacConfig
from musicgen_jax.convert import audiocraft
from musicgen_jax.data.prepare import Settings, prepare
from tests.codec.test_dac import hf_model, music
from tests.hub import add_repo, use_offline_cache
from tests.train.runs import REPO, command

TINY = DacConfig(encoder_dim=4, decoder_dim=16, n_codebooks=4, codebook_size=64, codebook_dim=2)  # 44.1 kHz rates
PROMPTS = ("calm piano melody", "energetic rock song with electric guitars and drums")
FRAMES = 86  # one 1 s segment: round(44100 / 512)
BOOKS = ["--config.codebooks.n_q=3", "--config.codebooks.card=64", "--config.codebooks.delays=(0, 1, 2)"]


@pytest.fixture(scope="module")
def dac_data(tmp_path_factory):
    """(dataset directory, the hub cache holding descript/dac_44khz): two 2 s clips, one prompt each."""
    root = tmp_path_factory.mktemp("dac_run")
    hf_model(TINY, seed=3).save_pretrained(root / "dac")
    add_repo(root / "hub", "descript/dac_44khz", root / "dac")
    audio = root / "audio"
    for i, prompt in enumerate(PROMPTS):
        write_audio(audio / f"clip{i}.wav", music(2 * 44100, 44100, seed=10 + i)[0], 44100)
        (audio / f"clip{i}.json").write_text(json.dumps({"description": prompt}))
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_offline_cache(monkeypatch, root / "hub")
        settings = Settings(str(audio), "dac_44khz", 1.0, 0.0, min_seconds=0.5, length_step=0.5, num_codebooks=3)
        prepare(settings, root / "data", batch_size=2, progress=False)
    return root / "data", root / "hub"


def test_the_dataset_records_the_dac_and_its_codebooks(dac_data):
    info = json.loads((dac_data[0] / "dataset.json").read_text())
    assert (info["num_codebooks"], info["card"]) == (3, 64)
    codec = info["codec"]
    assert (codec["source"], codec["sample_rate"], codec["channels"], codec["num_codebooks"]) == (
        "dac_44khz",
        44100,
        1,
        3,
    )
    assert codec["frame_rate"] == pytest.approx(44100 / 512) and codec["config"]["n_codebooks"] == 4
    assert info["splits"]["train"]["examples"] == 4  # two 1 s segments per clip


@pytest.mark.e2e
def test_the_debug_model_learns_dac_tokens_and_decodes_with_its_codec(dac_data, inputs, tmp_path, monkeypatch):
    data, hub = dac_data
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    workdir = tmp_path / "run"
    steps = ["--config.total_steps=300", "--config.checkpoint_every=300", "--config.log_every=10"]
    extra = [*BOOKS, *steps, f"--config.frames={FRAMES}", "--config.eval_every=0", "--config.word_dropout=0"]
    done = subprocess.run(
        command((data, inputs[1]), workdir, *extra), capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr[-8000:]
    losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] / 2, losses

    from musicgen_jax.musicgen import MusicGen

    use_offline_cache(monkeypatch, hub)
    model = MusicGen.get_pretrained(str(workdir))
    assert isinstance(model.codec, DacCodec) and model.codec.num_codebooks == 3 and model.lm_config.card == 64
    model.set_generation_params(use_sampling=False, duration=0.5, cfg_coef=3.0)
    wav = np.asarray(model.generate([PROMPTS[0]]))
    assert wav.shape == (1, 1, 43 * 512) and np.isfinite(wav).all()

    from musicgen_jax.audio import read_audio
    from musicgen_jax.cli import evaluate, sample

    out = tmp_path / "samples"  # sample.py decodes with the run's DAC
    assert sample.main(["--model", str(workdir), "--prompt", PROMPTS[1], "--duration", "0.5", "--out", str(out)]) == 0
    (clip,) = out.iterdir()
    assert read_audio(clip, 44100, 1)[0].shape == (1, 43 * 512)
    # the loss over the dataset, through the run's DAC codebooks

    args = ["--model", str(workdir), "--data", str(data), "--split", "train", "--frames", str(FRAMES)]
    assert evaluate.main([*args, "--out", str(tmp_path / "eval.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["examples"] == 4 and result["eval_loss"] < losses[0] / 2

    # audiocraft's format names the DAC as its recipe does (and the tiny T5 by its path); transformers' has no DAC
    monkeypatch.setitem(audiocraft.T5_DIMS, str(inputs[1]), model.text_encoder.config.d_model)
    out = export.export(str(workdir), "audiocraft", str(tmp_path / "audiocraft"))
    assert torch.load(out / "compression_state_dict.bin")["pretrained"] == "dac_44khz"
    cfg = yaml.safe_load(torch.load(out / "state_dict.bin")["xp.cfg"])
    assert (cfg["compression_model_checkpoint"], cfg["compression_model_n_q"]) == ("//pretrained/dac_44khz", 3)
    assert (cfg["transformer_lm"]["n_q"], cfg["transformer_lm"]["card"]) == (3, 64)
    exported = MusicGen.get_pretrained(str(out))
    assert exported.codec.num_codebooks == 3
    exported.set_generation_params(use_sampling=False, duration=0.5, cfg_coef=3.0)
    np.testing.assert_array_equal(np.asarray(exported.generate([PROMPTS[0]])), wav)
    with pytest.raises(CheckpointError, match="transformers' MusicGen codes with EnCodec; this model's codec is Dac"):
        export.export(str(workdir), "hf", str(tmp_path / "hf"))


@pytest.mark.e2e
def test_codebooks_that_disagree_with_the_dataset_are_one_error(dac_data, inputs, tmp_path):
    data, hub = dac_data
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    argv = command((data, inputs[1]), tmp_path / "run", "--config.codebooks.n_q=4")
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode != 0
    assert f"config.codebooks.n_q is 4, but the dataset {data} (dac_44khz) has 3" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
