"""Fine-tuning (`config.init_from`) and evaluation (`musicgen_jax.evaluate`) against transformers'
`MusicgenForConditionalGeneration` loss (1e-5 relative), with the tiny transformers-format MusicGen of the
LM tests (and its audiocraft-format twin): a run started from it takes its weights (the first step's loss
is the checkpoint's loss on the step's batch) and lowers the loss; `evaluate` gives the checkpoint's loss
on a split, and for a run the numbers of the trainer's own evaluation; a checkpoint of another
architecture is one clear error before anything compiles."""

from __future__ import annotations

import numpy as np
import pytest

from tests.datasets import write_dataset
from tests.train.test_loss import reference_loss

STEPS, FRAMES, EXAMPLES = 8, 24, 8


@pytest.fixture(scope="module")
def finetune_inputs(hf_musicgen, tmp_path_factory):
    """(data directory, its train examples, the checkpoint directory): 8 train examples of 24 frames, so
    that every batch of 8 holds all of them, uncropped."""
    directory = hf_musicgen[1]
    data = tmp_path_factory.mktemp("finetune_tokens")
    examples = write_dataset(data, [FRAMES] * (EXAMPLES + 2), valid=2, codec=directory)
    return data, examples[:EXAMPLES], directory


def finetune_config(data, directory, **model):
    from configs.debug import get_config

    config = get_config()
    config.update(data_dir=str(data), text_encoder=str(directory), init_from=str(directory), total_steps=STEPS,
                  batch_size=EXAMPLES, frames=FRAMES, log_every=1, checkpoint_every=STEPS, cfg_dropout=0.0,
                  word_dropout=0.0, eval_every=STEPS)
    config.text.update(merge_text_p=0.0)  # each text is its example's description
    config.optim.update(warmup_steps=1, lr=3e-3)
    config.model.update(model)
    return config


def checkpoint_loss(hf_musicgen, examples) -> float:
    """transformers' loss of the checkpoint on `examples` (whole, with their descriptions)."""
    from musicgen_jax.text.tokenizer import T5Tokenizer

    ids, text_mask = T5Tokenizer.from_pretrained(hf_musicgen[1])([ex["metadata"]["description"] for ex in examples])
    codes = np.stack([ex["codes"] for ex in examples]).astype(np.int32)
    return reference_loss(hf_musicgen[0], ids, text_mask, codes, np.ones(codes.shape, bool))


@pytest.fixture(scope="module")
def finetuned(finetune_inputs, tmp_path_factory):
    from musicgen_jax.train.loop import metrics_lines, train

    data, _, directory = finetune_inputs
    workdir = tmp_path_factory.mktemp("finetune_run")
    train(finetune_config(data, directory), workdir, progress=False)
    return workdir, metrics_lines(workdir)


def test_finetuning_starts_from_the_checkpoint_and_lowers_the_loss(hf_musicgen, finetune_inputs, finetuned):
    losses = [record["loss"] for record in finetuned[1]]
    assert losses[0] == pytest.approx(checkpoint_loss(hf_musicgen, finetune_inputs[1]), rel=1e-5)
    assert len(losses) == STEPS and losses[-1] < 0.9 * losses[0]


def test_evaluate_gives_the_checkpoint_loss(hf_musicgen, finetune_inputs):
    """On the train split in batches of 3 (the last one padded): transformers' loss on all 8 examples."""
    from musicgen_jax.evaluate import evaluate

    data, examples, directory = finetune_inputs
    result = evaluate(str(directory), str(data), "train", batch_size=3, frames=FRAMES)
    assert result["eval_loss"] == pytest.approx(checkpoint_loss(hf_musicgen, examples), rel=1e-5)
    assert result["examples"] == EXAMPLES and result["split"] == "train"


def test_evaluate_cli_on_a_run_gives_the_trainers_numbers(finetune_inputs, finetuned, tmp_path):
    """`python -m musicgen_jax.evaluate --model WORKDIR`: the EMA weights' numbers of the run's last record."""
    import json
    import subprocess
    import sys

    workdir, records = finetuned
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "musicgen_jax.evaluate", "--model", str(workdir), "--data",
                          str(finetune_inputs[0]), "--frames", str(FRAMES), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("eval_loss", *(f"eval_ppl_{k}" for k in range(4))):
        assert result[key] == pytest.approx(records[-1][key], rel=1e-5)


def test_another_architecture_is_refused_before_compiling(finetune_inputs, tmp_path):
    from musicgen_jax.train.loop import TrainingError, train

    data, _, directory = finetune_inputs
    with pytest.raises(TrainingError, match=r"another architecture than this run's: dim 32 \(checkpoint: 64\), "
                                            r"num_heads 2 \(checkpoint: 4\)"):
        train(finetune_config(data, directory, dim=32, num_heads=2), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_stereo_run_starts_from_the_mono_checkpoint(finetune_inputs, tmp_path):
    """A mono checkpoint into a stereo run (8 interleaved codebooks): codebook k's embedding and head are
    the mono codebook k // 2's, the rest as converted (one step at learning rate 0 leaves them as set)."""
    import orbax.checkpoint as ocp

    from musicgen_jax.convert import pretrained
    from musicgen_jax.train.loop import train

    _, _, directory = finetune_inputs
    data = tmp_path / "stereo_tokens"
    write_dataset(data, [FRAMES] * 10, valid=2, codec=directory, stereo=True)
    config = finetune_config(data, directory)
    config.update(total_steps=2, checkpoint_every=1, eval_every=0)  # step 0 runs at learning rate 0
    train(config, tmp_path / "run", progress=False)
    params = ocp.StandardCheckpointer().restore(tmp_path / "run" / "checkpoints" / "1" / "state")["params"]["params"]
    mono = pretrained.convert(directory).lm_params["params"]
    assert sorted(k for k in params if k.startswith("heads_")) == [f"heads_{k}" for k in range(8)]
    for k in range(8):
        for name in ("embeddings", "heads"):
            for a, b in zip(jax_leaves(params[f"{name}_{k}"]), jax_leaves(mono[f"{name}_{k // 2}"]), strict=True):
                np.testing.assert_array_equal(a, b)
    for a, b in zip(jax_leaves(params["layers_1"]), jax_leaves(mono["layers_1"]), strict=True):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_finetuning_from_an_audiocraft_checkpoint(hf_musicgen, finetune_inputs, tmp_path, monkeypatch):
    """The transformers checkpoint's audiocraft twin (state_dict.bin + compression_state_dict.bin, its T5
    on an offline hub): the first step's loss is again transformers' loss of those weights."""
    from musicgen_jax.convert import audiocraft
    from musicgen_jax.train.loop import metrics_lines, train
    from tests.lm.test_audiocraft import TINY_T5, audiocraft_directory, xp_cfg

    monkeypatch.setitem(audiocraft.T5_DIMS, TINY_T5, 32)
    data, examples, directory = finetune_inputs
    package = audiocraft_directory(hf_musicgen[0], directory, tmp_path, monkeypatch, xp_cfg(), num_codebooks=4)
    config = finetune_config(data, directory)
    config.update(init_from=str(package), total_steps=2, eval_every=0)
    train(config, tmp_path / "run", progress=False)
    loss = metrics_lines(tmp_path / "run")[0]["loss"]
    assert loss == pytest.approx(checkpoint_loss(hf_musicgen, examples), rel=1e-5)


def test_lora_finetuning_starts_from_the_checkpoint_and_loads_merged(hf_musicgen, finetune_inputs, tmp_path):
    """`lora_rank=4`: the first loss is the checkpoint's (the adapters start at zero), the loss falls, the
    base weights stay the checkpoint's, and the run loads with the adapters merged into the kernels."""
    import orbax.checkpoint as ocp

    from musicgen_jax.convert import pretrained
    from musicgen_jax.lm.model import merge_lora
    from musicgen_jax.musicgen import MusicGen
    from musicgen_jax.train.loop import metrics_lines, train

    data, examples, directory = finetune_inputs
    config = finetune_config(data, directory)
    config.update(lora_rank=4, eval_every=0)
    train(config, tmp_path, progress=False)
    losses = [record["loss"] for record in metrics_lines(tmp_path)]
    assert losses[0] == pytest.approx(checkpoint_loss(hf_musicgen, examples), rel=1e-5) and losses[-1] < losses[0]
    state = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / str(STEPS) / "state")
    mono = pretrained.convert(directory).lm_params["params"]
    np.testing.assert_array_equal(state["params"]["params"]["layers_0"]["fc1"]["kernel"],
                                  mono["layers_0"]["fc1"]["kernel"])
    model = MusicGen.get_pretrained(str(tmp_path))
    for a, b in zip(jax_leaves(model.lm_params), jax_leaves(merge_lora(state["ema"])), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
