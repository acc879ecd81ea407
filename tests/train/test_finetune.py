"""Fine-tuning (`config.init_from`) and evaluation (`musicgen_jax.evaluate`) against transformers'
`MusicgenForConditionalGeneration` loss (1e-5 relative), with the tiny transformers-format MusicGen of the
LM tests (and its audiocraft-format twin): a run started from it takes its weights (the first step's loss
is the checkpoint's loss on the step's batch) and lowers the loss; `evaluate` gives the checkpoint's loss
on a split, and for a run the numbers of the trainer's own evaluation; a checkpoint of another
architecture is one clear error before anything compiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from tests.datasets import write_dataset
from tests.train.test_loss import reference_loss

pytestmark = pytest.mark.e2e

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
    config.update(
        data_dir=str(data),
        text_encoder=str(directory),
        init_from=str(directory),
        total_steps=STEPS,
        batch_size=EXAMPLES,
        frames=FRAMES,
        log_every=1,
        checkpoint_every=STEPS,
        cfg_dropout=0.0,
        word_dropout=0.0,
        eval_every=STEPS,
    )
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
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "musicgen_jax.evaluate",
            "--model",
            str(workdir),
            "--data",
            str(finetune_inputs[0]),
            "--frames",
            str(FRAMES),
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("eval_loss", *(f"eval_ppl_{k}" for k in range(4))):
        assert result[key] == pytest.approx(records[-1][key], rel=1e-5)


def test_another_architecture_is_refused_before_compiling(finetune_inputs, tmp_path):
    from musicgen_jax.train.loop import TrainingError, train

    data, _, directory = finetune_inputs
    with pytest.raises(
        TrainingError,
        match=r"another architecture than this run's: dim 32 \(checkpoint: 64\), "
        r"num_heads 2 \(checkpoint: 4\)",
    ):
        train(finetune_config(data, directory, dim=32, num_heads=2), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_stereo_run_starts_from_the_mono_checkpoint(finetune_inputs, tmp_path):
    """A mono checkpoint into a stereo run (8 interleaved codebooks): codebook k's embedding and head are
    the mono codebook k // 2's, the rest as converted (one step at learning rate 0 leaves them as set)."""
    import orbax.checkpoint as ocp

    from musicgen_jax.train.loop import train

    _, _, directory = finetune_inputs
    data = tmp_path / "stereo_tokens"
    write_dataset(data, [FRAMES] * 10, valid=2, codec=directory, stereo=True)
    config = finetune_config(data, directory)
    config.update(total_steps=2, checkpoint_every=1, eval_every=0)  # step 0 runs at learning rate 0
    train(config, tmp_path / "run", progress=False)
    params = ocp.StandardCheckpointer().restore(tmp_path / "run" / "checkpoints" / "1" / "state")["params"]["params"]
    mono = convert_checkpoint(directory).lm_params["params"]
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


@pytest.fixture(scope="module")
def lora_run(finetune_inputs, tmp_path_factory):
    """A `lora_rank=4` fine-tune of the tiny checkpoint."""
    from musicgen_jax.train.loop import train

    data, _, directory = finetune_inputs
    config = finetune_config(data, directory)
    config.update(lora_rank=4, eval_every=0)
    workdir = tmp_path_factory.mktemp("lora_run")
    train(config, workdir, progress=False)
    return workdir


def test_lora_finetuning_starts_from_the_checkpoint_and_loads_merged(hf_musicgen, finetune_inputs, lora_run):
    """`lora_rank=4`: the first loss is the checkpoint's (the adapters start at zero), the loss falls, the
    base weights stay the checkpoint's, the EMA holds the adapters alone, and the run loads with the
    adapters' EMA merged into the kernels."""
    import orbax.checkpoint as ocp
    from flax.traverse_util import flatten_dict

    from musicgen_jax.lm.model import is_lora, merge_lora
    from musicgen_jax.musicgen import MusicGen
    from musicgen_jax.train.loop import metrics_lines
    from musicgen_jax.train.rundir import ema_weights

    _, examples, directory = finetune_inputs
    losses = [record["loss"] for record in metrics_lines(lora_run)]
    assert losses[0] == pytest.approx(checkpoint_loss(hf_musicgen, examples), rel=1e-5) and losses[-1] < losses[0]
    state = ocp.StandardCheckpointer().restore(lora_run / "checkpoints" / str(STEPS) / "state")
    mono = convert_checkpoint(directory).lm_params["params"]
    np.testing.assert_array_equal(
        state["params"]["params"]["layers_0"]["fc1"]["kernel"], mono["layers_0"]["fc1"]["kernel"]
    )
    assert all(is_lora(path) for path in flatten_dict(state["ema"])) and flatten_dict(state["ema"])
    model = MusicGen.get_pretrained(str(lora_run))
    for a, b in zip(
        jax_leaves(model.lm_params), jax_leaves(merge_lora(ema_weights(state["params"], state["ema"]))), strict=True
    ):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_hf_export_of_a_run_generates_the_tokens_of_sample_py(hf_musicgen, finetuned, tmp_path):
    """`export --to hf` of the fine-tuned run: transformers loads it with no missing or unexpected key and
    its greedy `generate` gives the tokens `sample.py --model WORKDIR` gives (the run's EMA weights, not
    the checkpoint it started from)."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from musicgen_jax.cli import export as export_cli
    from musicgen_jax.cli import sample
    from tests.lm.test_generate import hf_generate_codes

    workdir, out, codes_file = finetuned[0], tmp_path / "hf", tmp_path / "codes.npy"
    assert export_cli.main(["--checkpoint", str(workdir), "--to", "hf", str(out)]) == 0
    model, info = MusicgenForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    source = hf_musicgen[0].decoder.model.decoder.layers[0].fc1.weight
    assert not torch.equal(model.decoder.model.decoder.layers[0].fc1.weight, source)
    prompt = "calm piano melody"
    assert (
        sample.main(
            [
                "--model",
                str(workdir),
                "--prompt",
                prompt,
                "--duration",
                "1",
                "--top-k",
                "1",
                "--cfg-coef",
                "3",
                "--save-codes",
                str(codes_file),
                "--out",
                str(tmp_path / "songs"),
            ]
        )
        == 0
    )
    batch = AutoTokenizer.from_pretrained(out)([prompt])
    expected = hf_generate_codes(model.eval(), np.array(batch["input_ids"]), np.array(batch["attention_mask"]), 50)
    assert len(np.unique(expected)) > 20  # not a degenerate sequence
    np.testing.assert_array_equal(np.load(codes_file), expected)


def test_hf_export_of_a_lora_run_gives_the_adapted_logits(lora_run, tmp_path):
    """The LoRA run exported (adapters merged): transformers' teacher-forced logits equal those of the run's
    LM with its adapters unmerged (`LMModel(lora_rank=4)` on the EMA weights) within 1e-5 of their peak."""
    import orbax.checkpoint as ocp
    from transformers import MusicgenForConditionalGeneration

    from musicgen_jax.cli import export as export_cli
    from musicgen_jax.lm.model import LMModel
    from musicgen_jax.text.encoder import encode_ids
    from musicgen_jax.train.rundir import ema_weights, load_run
    from tests.lm.test_parity import hf_logits, inputs, rel_max

    out = tmp_path / "hf"
    assert export_cli.main(["--checkpoint", str(lora_run), "--to", "hf", str(out)]) == 0
    model = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    ids, mask, sequence = inputs()
    components = load_run(lora_run)
    text = encode_ids(components.text_encoder.config, components.text_encoder.params, ids, mask)
    state = ocp.StandardCheckpointer().restore(lora_run / "checkpoints" / str(STEPS) / "state")
    adapted = np.asarray(
        LMModel(components.lm_config, lora_rank=4).apply(
            ema_weights(state["params"], state["ema"]), sequence, text, mask
        )
    )
    assert rel_max(hf_logits(model, ids, mask, sequence), adapted) < 1e-5
