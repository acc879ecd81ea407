"""Fine-tuning (`config.init_from`): a run started from the tiny transformers-format MusicGen of the LM
tests takes its weights (the first step's loss is transformers' `MusicgenForConditionalGeneration` loss
of that checkpoint on the step's batch, 1e-5 relative) and lowers the loss; a checkpoint of another
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
                  word_dropout=0.0)
    config.text.update(merge_text_p=0.0)  # each text is its example's description
    config.optim.update(warmup_steps=1, lr=3e-3)
    config.model.update(model)
    return config


def test_finetuning_starts_from_the_checkpoint_and_lowers_the_loss(hf_musicgen, finetune_inputs, tmp_path):
    from musicgen_jax.text.tokenizer import T5Tokenizer
    from musicgen_jax.train.loop import metrics_lines, train

    data, examples, directory = finetune_inputs
    train(finetune_config(data, directory), tmp_path, progress=False)
    losses = [record["loss"] for record in metrics_lines(tmp_path)]
    ids, text_mask = T5Tokenizer.from_pretrained(directory)([ex["metadata"]["description"] for ex in examples])
    codes = np.stack([ex["codes"] for ex in examples]).astype(np.int32)
    expected = reference_loss(hf_musicgen[0], ids, text_mask, codes, np.ones(codes.shape, bool))
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert len(losses) == STEPS and losses[-1] < 0.9 * losses[0]


def test_another_architecture_is_refused_before_compiling(finetune_inputs, tmp_path):
    from musicgen_jax.train.loop import TrainingError, train

    data, _, directory = finetune_inputs
    with pytest.raises(TrainingError, match=r"another architecture than this run's: dim 32 \(checkpoint: 64\), "
                                            r"num_heads 2 \(checkpoint: 4\)"):
        train(finetune_config(data, directory, dim=32, num_heads=2), tmp_path, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()
