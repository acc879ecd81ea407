"""A melody model's run (`config.melody`, a dataset with chroma): the batches' chroma reaches the step, the
evaluation is the EMA weights' loss conditioned on each valid example's stored chroma (recomputed here
from the shards, without the pipeline, to 1e-5), and the run loads as a melody `MusicGen` that follows
a melody."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from tests.datasets import write_dataset

pytestmark = pytest.mark.e2e

STEPS, FRAMES = 6, 24  # 24 code frames = 15360 samples: 1 + 16384 // 4096 = 5 chroma frames


@pytest.fixture(scope="module")
def melody_run(inputs, tmp_path_factory):
    from configs.debug import get_config
    from musicgen_jax.train.loop import train

    data = tmp_path_factory.mktemp("melody_tokens")
    write_dataset(
        data,
        [40, 30, 35, 50, 45, 38, 41, 33, 30, 26],
        valid=2,
        codec=json.loads((inputs[0] / "dataset.json").read_text())["codec"]["source"],
        chroma=True,
    )
    config = get_config()
    config.update(
        data_dir=str(data),
        text_encoder=str(inputs[1]),
        total_steps=STEPS,
        frames=FRAMES,
        log_every=1,
        checkpoint_every=STEPS,
        eval_every=STEPS,
        melody=True,
        melody_dropout=0.5,
    )
    config.optim.warmup_steps = 2
    workdir = tmp_path_factory.mktemp("melody_run")
    last = train(config, workdir, progress=False)
    return config, data, workdir, last


def test_melody_run_evaluates_with_the_stored_chroma(melody_run, inputs):
    import orbax.checkpoint as ocp

    from musicgen_jax.data import read_examples
    from musicgen_jax.data.shards import dataset_info
    from musicgen_jax.lm.model import LMModel
    from musicgen_jax.sharding import make_mesh
    from musicgen_jax.text.encoder import encode_ids
    from musicgen_jax.text.tokenizer import T5Tokenizer
    from musicgen_jax.text.weights import load_t5
    from musicgen_jax.train.loop import Evaluation, lm_config
    from musicgen_jax.train.loss import nll_sums, training_sequences
    from musicgen_jax.train.trainer import StepConfig

    config, data, workdir, last = melody_run
    t5_config, t5_params = load_t5(inputs[1])
    lm = lm_config(config, dataset_info(data), t5_config.d_model)
    assert lm.melody and lm.chroma_bins == 12 and lm.chroma_frames == 5
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(STEPS) / "state")
    tokenizer = T5Tokenizer.from_pretrained(inputs[1])
    examples = list(read_examples(data, "valid"))  # one batch: its texts padded to their longest, as sampling does
    codes = np.stack([ex["codes"][:, :FRAMES] for ex in examples]).astype(np.int32)
    ids, mask = tokenizer([ex["metadata"]["description"] for ex in examples])
    chroma = np.eye(12, dtype=np.float32)[np.stack([ex["chroma"][: lm.chroma_frames] for ex in examples])]
    inputs_, targets, valid = training_sequences(codes, np.ones(codes.shape, bool), lm.delays, lm.card)
    text = encode_ids(t5_config, t5_params, ids, mask)

    def perplexities(params, chroma) -> np.ndarray:
        sums, counts = nll_sums(LMModel(lm).apply(params, inputs_, text, mask, chroma), targets, valid)
        return np.exp(np.asarray(sums) / np.asarray(counts))

    np.testing.assert_allclose(perplexities(state["ema"], chroma), [last[f"eval_ppl_{k}"] for k in range(4)], rtol=1e-5)
    # the trained chroma projection is still small: with it scaled up, the melody moves the perplexities,
    # and the trainer's evaluation (the same `Evaluation`, pipeline and step) still matches the stored chroma's
    loud = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 300.0 if "chroma_projection" in jax.tree_util.keystr(p) else x, state["ema"]
    )
    null = np.eye(12, dtype=np.float32)[np.zeros(chroma.shape[:2], int)]
    assert np.abs(perplexities(loud, null) / perplexities(loud, chroma) - 1).max() > 1e-4  # 10x the tolerance
    evaluation = Evaluation(
        data,
        "valid",
        StepConfig(lm, t5_config),
        make_mesh(devices=jax.devices()[:1]),
        tokenizer,
        t5_params,
        config.batch_size,
        FRAMES,
        (config.text_length,),
    )
    got = evaluation(loud)
    np.testing.assert_allclose(perplexities(loud, chroma), [got[f"eval_ppl_{k}"] for k in range(4)], rtol=1e-5)


def test_melody_run_loads_as_a_melody_musicgen(melody_run):
    from musicgen_jax.musicgen import MusicGen

    _, _, workdir, _ = melody_run
    model = MusicGen.get_pretrained(str(workdir))
    assert model.lm_config.melody and model.lm_config.chroma_frames == 5
    model.set_generation_params(duration=0.2, use_sampling=False)
    t = np.arange(int(0.5 * model.sample_rate)) / model.sample_rate
    melody = np.sin(2 * np.pi * 440.0 * t)[None].astype(np.float32)
    tokens = np.asarray(
        model.generate_with_chroma(["calm piano melody"], melody, model.sample_rate, return_tokens=True)[1]
    )
    assert tokens.shape == (1, 4, 10) and tokens.max() < 2048
