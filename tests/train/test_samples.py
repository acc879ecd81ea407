"""Samples during training (`config.generate_every`): at steps 2 and 4 of a debug run, one wav per prompt
and the settings in WORKDIR/samples/STEP/; the step-4 audio is what the run's checkpoint at step 4 (its
EMA weights, loaded as a `MusicGen`) generates for those prompts and that seed in the config's
`sample_dtype`, loudness-normalized (to 16-bit rounding)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

PROMPTS = ("calm piano melody", "Energetic rock, drums!")


def test_samples_are_the_ema_weights_generations(inputs, tmp_path):
    from configs.debug import get_config
    from musicgen_jax.audio import normalize_audio, read_audio
    from musicgen_jax.musicgen import MusicGen
    from musicgen_jax.train.loop import train

    data, t5 = inputs
    config = get_config()
    config.update(
        data_dir=str(data),
        text_encoder=str(t5),
        total_steps=4,
        frames=24,
        log_every=1,
        checkpoint_every=4,
        generate_every=2,
        sample_prompts=PROMPTS,
        sample_seconds=0.2,
        sample_seed=3,
        sample_dtype="bfloat16",
    )
    config.optim.warmup_steps = 1
    train(config, tmp_path, progress=False)
    samples = tmp_path / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["2", "4"]
    names = ["000_calm_piano_melody.wav", "001_energetic_rock_drums.wav"]
    assert sorted(p.name for p in (samples / "4").iterdir()) == names + ["settings.json"]
    settings = json.loads((samples / "4" / "settings.json").read_text())
    assert settings["prompts"] == list(PROMPTS) and settings["seed"] == 3 and settings["sampling"]["top_k"] == 250
    assert settings["dtype"] == "bfloat16"
    model = MusicGen.get_pretrained(str(tmp_path), dtype="bfloat16")
    model.set_generation_params(duration=0.2)
    expected = model.generate(list(PROMPTS), seed=3)
    for name, wav in zip(names, expected, strict=True):
        got, rate = read_audio(samples / "4" / name)
        assert rate == model.sample_rate and got.shape == wav.shape
        np.testing.assert_allclose(got, normalize_audio(wav, rate, "loudness"), atol=2 / 32768)
    other, _ = read_audio(samples / "2" / names[0])
    assert np.abs(other - read_audio(samples / "4" / names[0])[0]).max() > 1e-3  # the weights moved


def test_bad_sample_dtype_is_named(inputs, tmp_path):
    import pytest

    from configs.debug import get_config
    from musicgen_jax.train.loop import TrainingError, train

    data, t5 = inputs
    config = get_config()
    config.update(
        data_dir=str(data), text_encoder=str(t5), total_steps=2, frames=24, generate_every=1, sample_dtype="int4"
    )
    config.optim.warmup_steps = 1
    with pytest.raises(
        TrainingError, match="config.sample_dtype must be auto or one of float32, bfloat16, float16, got 'int4'"
    ):
        train(config, tmp_path, progress=False)


def test_objective_metrics_are_logged(inputs, vggish_file, tmp_path, monkeypatch):
    """`config.objective_every`: at step 2, clips of the EMA weights for the first 2 valid examples (what the
    step-2 checkpoint generates for their descriptions with seeds 5, 6) and their FAD against the examples'
    decoded codes, logged to metrics.jsonl and kept in WORKDIR/objective/2/ (where the CLI scores them again)."""
    from configs.debug import get_config
    from musicgen_jax.audio import read_audio
    from musicgen_jax.fileio import read_json
    from musicgen_jax.metrics.suite import Run, Sources
    from musicgen_jax.musicgen import MusicGen
    from musicgen_jax.train.loop import metrics_lines, train
    from tests.datasets import write_dataset

    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    data, t5 = inputs
    longer = tmp_path / "tokens"
    examples = write_dataset(
        longer, [40] * 8 + [60] * 3, valid=3, codec=read_json(data / "dataset.json")["codec"]["source"]
    )
    config = get_config()
    config.update(
        data_dir=str(longer),
        text_encoder=str(t5),
        total_steps=2,
        frames=24,
        log_every=1,
        checkpoint_every=2,
        objective_every=2,
        objective_samples=2,
        objective_metrics=("fad",),
        objective_sources={"vggish": str(vggish_file[0])},
        sample_seed=5,
    )
    config.optim.warmup_steps = 1
    workdir = tmp_path / "run"
    train(config, workdir, progress=False)
    logged = metrics_lines(workdir)[-1]
    folder = workdir / "objective" / "2"
    result = read_json(folder / "metrics.json")
    assert logged["objective_fad"] == result["metrics"]["fad"]["value"] and result["metrics"]["fad"]["clips"] == 2
    assert result["reference_audio"] == "codes decoded (2 of 2)"
    again = Run(folder / "generated", folder / "reference", sources=Sources(str(vggish_file[0])), rounds=0)
    assert again.compute(["fad"])["metrics"]["fad"]["value"] == pytest.approx(logged["objective_fad"], rel=1e-6)
    model = MusicGen.get_pretrained(str(workdir))
    model.set_generation_params(duration=60 / 50)
    clips = sorted((folder / "generated").iterdir())
    for i, (example, clip) in enumerate(zip(examples[8:10], clips)):
        expected = model.generate([example["metadata"]["description"] or None], seed=[5 + i])[0]
        np.testing.assert_allclose(read_audio(clip)[0], expected, atol=1e-5)
