"""`train.py` runs of the debug config on a tiny token dataset and a tiny T5: SIGKILL then restart repeats
the uninterrupted run bitwise; SIGTERM saves and exits 0; a checkpoint of other settings, or a corrupt
one, is one clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.train.runs import REPO, STEPS, command, final_state, jax_leaves, losses, run, wait_for

pytestmark = pytest.mark.e2e


def test_sigkill_then_restart_repeats_the_uninterrupted_run_bitwise(inputs, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(command(inputs, workdir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(workdir / "metrics.jsonl", 10, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(losses(workdir)) < STEPS
    run(inputs, workdir)
    expected = losses(uninterrupted)
    assert [r[0] for r in expected] == list(range(1, STEPS + 1))
    assert losses(workdir) == expected
    assert expected[-1][1] < expected[0][1]  # it learns
    step, state = final_state(workdir)
    expected_step, expected_state = final_state(uninterrupted)
    assert step == expected_step == STEPS
    flat, reference = (jax_leaves(s) for s in (state, expected_state))
    assert len(flat) == len(reference) > 10
    for a, b in zip(flat, reference):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_the_current_step_and_exits_0(inputs, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        command(inputs, workdir, "--config.checkpoint_every=1000"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(workdir / "metrics.jsonl", 6, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    step, state = final_state(workdir)
    logged = losses(workdir)[-1][0]
    assert 6 <= step < STEPS and step in (logged, logged + 1) and int(state["step"]) == step


def test_other_settings_or_a_corrupt_checkpoint_are_refused(inputs, uninterrupted, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    other = subprocess.run(command(inputs, workdir, "--config.seed=3"), capture_output=True, text=True, cwd=REPO)
    assert other.returncode == 2 and "holds a run with other settings (seed)" in other.stderr
    for file in (workdir / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if file.is_file():
            file.write_bytes(b"garbage")
    corrupt = subprocess.run(
        command(inputs, workdir, "--config.total_steps=30"), capture_output=True, text=True, cwd=REPO
    )
    unreadable = f"checkpoint {workdir / 'checkpoints' / str(STEPS)} is unreadable"
    assert corrupt.returncode == 2 and unreadable in corrupt.stderr


def test_evaluation_uses_the_ema_weights_on_the_valid_split(inputs, uninterrupted, hf_tokenizer):
    """At eval_every the record has eval_loss and per-codebook perplexities: those of the EMA weights of
    that step's checkpoint on the 3 valid examples (first 24 frames, their plain description), recomputed
    here without the pipeline to 1e-5."""
    from configs.debug import get_config
    from musicgen_jax.data import read_examples
    from musicgen_jax.lm.model import LMModel
    from musicgen_jax.text.encoder import encode_ids
    from musicgen_jax.text.tokenizer import T5Tokenizer
    from musicgen_jax.text.weights import load_t5
    from musicgen_jax.train.loop import lm_config
    from musicgen_jax.train.loss import nll_sums, training_sequences

    record = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["step"] == STEPS
    ce = np.log([record[f"eval_ppl_{k}"] for k in range(4)])
    assert record["eval_loss"] == pytest.approx(ce.mean(), rel=1e-6)
    _, state = final_state(uninterrupted)
    config = get_config()
    t5_config, t5_params = load_t5(inputs[1])
    lm = lm_config(config, json.loads((inputs[0] / "dataset.json").read_text()), t5_config.d_model)
    tokenizer = T5Tokenizer.from_pretrained(inputs[1])
    total, count = 0.0, 0.0
    for example in read_examples(inputs[0], "valid"):
        codes = example["codes"][None, :, :24].astype(np.int32)
        ids, mask = tokenizer([example["metadata"]["description"]])
        inputs_, targets, valid = training_sequences(codes, np.ones(codes.shape, bool), lm.delays, lm.card)
        logits = LMModel(lm).apply(state["ema"], inputs_, encode_ids(t5_config, t5_params, ids, mask), mask)
        sums, counts = nll_sums(logits, targets, valid)
        total, count = total + np.asarray(sums), count + np.asarray(counts)
    np.testing.assert_allclose(np.exp(total / count), [record[f"eval_ppl_{k}"] for k in range(4)], rtol=1e-5)


def test_a_run_loads_as_a_musicgen_with_its_ema_weights(inputs, uninterrupted, tmp_path):
    """`MusicGen.get_pretrained(WORKDIR)` holds the latest checkpoint's EMA weights, the dataset's codec and the
    run's T5; it generates, and `sample.py --model WORKDIR` writes audio from it."""
    from musicgen_jax.musicgen import MusicGen

    model = MusicGen.get_pretrained(str(uninterrupted))
    _, state = final_state(uninterrupted)
    for a, b in zip(jax_leaves(model.lm_params), jax_leaves(state["ema"])):
        np.testing.assert_array_equal(a, b)
    assert model.lm_config.dim == 64 and model.lm_config.text_dim == 768 and model.sample_rate == 32000
    model.set_generation_params(duration=0.2, use_sampling=False)
    tokens = np.asarray(model.generate_tokens(["calm piano melody", None]))
    assert tokens.shape == (2, 4, 10) and tokens.max() < 2048
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "sample.py"),
            "--model",
            str(uninterrupted),
            "--duration",
            "0.2",
            "--prompt",
            "calm piano melody",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [p.suffix for p in (tmp_path / "out").iterdir()] == [".wav"]


def test_a_diverging_run_stops_before_saving_non_finite_weights(inputs, tmp_path):
    """lr 1e30 (0 at step 1, the warm-up's start) makes the second update 1e30-sized, the third step's loss
    NaN: the run stops with one error at the first check after it (here the step-3 checkpoint), the step-2
    checkpoint the latest one, nothing after it written."""
    from configs.debug import get_config
    from musicgen_jax.train.loop import TrainingError, train

    config = get_config()
    config.update(
        data_dir=str(inputs[0]),
        text_encoder=str(inputs[1]),
        total_steps=6,
        frames=24,
        log_every=100,
        checkpoint_every=1,
        eval_every=0,
    )
    config.optim.update(lr=1e30, warmup_steps=1)
    message = (
        r"step 3: the loss is nan and the gradient norm nan \(not finite\); nothing of this state is saved "
        r"\(the latest checkpoint, step 2, is intact\)"
    )
    with pytest.raises(TrainingError, match=message):
        train(config, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
