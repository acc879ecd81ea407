"""`python -m musicgen_jax.export --to hf` against transformers: the tiny transformers MusicGen checkpoints
(mono, stereo, melody; tests/lm/conftest.py) converted and exported load in `from_pretrained` with no
missing, unexpected or mismatched key, with the same tensors, every one back exactly, and configs that
import reads back to the same models. A codec whose checkpoint is not at hand (or holds other weights)
is exported as an equivalent split of the weight-norm pairs and LSTM biases that import folds: the same
weights and bias sums, exactly, and transformers' decoding within 1e-6."""

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
        np.testing.assert_array_equal(exported[key], value, err_msg=key)

    config, reference = (json.loads((d / "config.json").read_text()) for d in (out, directory))
    assert musicgen.lm_config_from_hf(config) == musicgen.lm_config_from_hf(reference)
    assert t5.config_from_hf(config["text_encoder"]) == t5.config_from_hf(reference["text_encoder"])
    assert encodec.config_from_hf(config["audio_encoder"]) == encodec.config_from_hf(reference["audio_encoder"])
    from transformers import AutoTokenizer

    prompt = "Energetic rock song with electric guitars and drums!"
    assert AutoTokenizer.from_pretrained(out)(prompt)["input_ids"] == hf_tokenizer(prompt)["input_ids"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == generation["pad_token_id"] == 2048


@pytest.mark.parametrize("source", [None, "other"], ids=["no-source", "other-checkpoint"])
def test_a_codec_without_its_checkpoint_exports_the_same_weights(hf_musicgen, hf_musicgen_stereo, source, tmp_path):
    """The codec's recorded source gone (None) or another checkpoint (the stereo model's codec, other
    weights): the derived split, which imports to the same weights and decodes as the original."""
    import dataclasses

    from musicgen_jax.convert import pretrained
    from musicgen_jax.convert.hf_export import export_hf

    model, directory = hf_musicgen
    components = pretrained.convert(directory)
    codec = dataclasses.replace(components.codec, source=None if source is None else str(hf_musicgen_stereo[1]))
    out = export_hf(dataclasses.replace(components, codec=codec), tmp_path / "hf")
    loaded, info = type(model).from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    source_state, exported = load_file(directory / "model.safetensors"), load_file(out / "model.safetensors")
    assert sorted(exported) == sorted(source_state)
    assert any(not np.array_equal(exported[k], source_state[k]) for k in exported)  # the split, not the original
    ours, theirs = codec_weights(exported), codec_weights(source_state)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    codes = torch.randint(0, 2048, (1, 1, 4, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wav, expected = (m.audio_encoder.decode(codes, [None]).audio_values for m in (loaded, model))
    np.testing.assert_allclose(wav.numpy(), expected.numpy(), atol=1e-6 * float(expected.abs().max()))


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
