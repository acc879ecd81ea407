"""`python -m musicgen_jax.export --to hf` against transformers: the tiny transformers MusicGen checkpoints
(mono, stereo, melody; tests/lm/conftest.py) converted and exported load in `from_pretrained` with no
missing, unexpected or mismatched key, with the same file of tensors: every LM and text-encoder tensor
back exactly, the codec's the same weights (import folds its weight-norm pairs and adds its LSTM biases,
so those come back as an equivalent split: the weights and bias sums they make exactly, transformers'
decoding within 1e-6), and configs that import reads back to the same models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from musicgen_jax import export
from musicgen_jax.convert import encodec, musicgen, t5
from musicgen_jax.convert.keymap import strip_prefix

FIXTURES = ["hf_musicgen", "hf_musicgen_stereo", "hf_musicgen_melody"]


def codec_weights(state: dict) -> dict:
    """The codec tensors of a MusicGen state dict as import sees them: weight norm folded, LSTM biases
    summed (into the `bias_ih` key), the training buffers dropped."""
    state = encodec.fold_weight_norm(strip_prefix(state, "audio_encoder."))
    for key in [k for k in state if "bias_hh" in k]:
        state[key.replace("bias_hh", "bias_ih")] = state[key.replace("bias_hh", "bias_ih")] + state.pop(key)
    return {k: v for k, v in state.items() if not k.endswith(tuple(encodec.TRAINING_BUFFERS))}


@pytest.mark.parametrize("fixture", FIXTURES, ids=["mono", "stereo", "melody"])
def test_export_of_a_conversion_gives_back_the_checkpoint(request, fixture, hf_tokenizer, tmp_path):
    model, directory = request.getfixturevalue(fixture)
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(directory), "--to", "hf", str(out)]) == 0
    loaded, info = type(model).from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info

    source, exported = load_file(directory / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(exported) == sorted(source)
    for key, value in source.items():
        if not key.startswith("audio_encoder."):
            np.testing.assert_array_equal(exported[key], value, err_msg=key)
    ours, theirs = codec_weights(exported), codec_weights(source)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)

    config, reference = (json.loads((d / "config.json").read_text()) for d in (out, directory))
    assert musicgen.lm_config_from_hf(config) == musicgen.lm_config_from_hf(reference)
    assert t5.config_from_hf(config["text_encoder"]) == t5.config_from_hf(reference["text_encoder"])
    assert encodec.config_from_hf(config["audio_encoder"]) == encodec.config_from_hf(reference["audio_encoder"])
    codes = torch.randint(0, 2048, (1, 1, 4, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wav, expected = (m.audio_encoder.decode(codes, [None]).audio_values for m in (loaded, model))
    np.testing.assert_allclose(wav.numpy(), expected.numpy(), atol=1e-6 * float(expected.abs().max()))

    from transformers import AutoTokenizer

    prompt = "Energetic rock song with electric guitars and drums!"
    assert AutoTokenizer.from_pretrained(out)(prompt)["input_ids"] == hf_tokenizer(prompt)["input_ids"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == generation["pad_token_id"] == 2048


def test_export_shards_past_the_size_limit(hf_musicgen, tmp_path):
    """`--max-shard-size`: shards and an index as `save_pretrained` writes them, which transformers loads."""
    model, directory = hf_musicgen
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(directory), "--to", "hf", "--max-shard-size", "1MB", str(out)]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == sorted(p.name for p in out.glob("model-*.safetensors"))
    loaded, info = type(model).from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    for key, value in model.decoder.state_dict().items():
        torch.testing.assert_close(loaded.decoder.state_dict()[key], value, rtol=0, atol=0)


def test_export_errors(tmp_path, capsys):
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(tmp_path / "missing"), "--to", "hf", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        export.main(["--checkpoint", str(tmp_path), "--to", "onnx", str(out)])
