"""`python -m musicgen_jax.export --to hf` against transformers: the tiny transformers MusicGen checkpoints
(mono, stereo, melody; tests/lm/conftest.py) converted and exported load in `from_pretrained` with no
missing, unexpected or mismatched key, with the same tensors, every one back exactly, and configs that
import reads back to the same models. A codec whose checkpoint is not at hand (or holds other weights)
is exported as an equivalent split of the weight-norm pairs and LSTM biases that import folds: the same
weights and bias sums, exactly, and transformers' decoding within 1e-6."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from transformers import MusicgenMelodyForConditionalGeneration

from musicgen_jax.checkpoint.keymap import strip_prefix
from musicgen_jax.cli import export as export_cli
from musicgen_jax.codec import weights as encodec
from musicgen_jax.config import ChromaConfig
from musicgen_jax.lm import weights as musicgen
from musicgen_jax.text import weights as t5

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
    assert export_cli.main(["--checkpoint", str(directory), "--to", "hf", str(out)]) == 0
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
    frame_rate = model.config.audio_encoder.frame_rate  # the released generation_config: 30 s of frames
    assert (generation["max_length"], generation["guidance_scale"], generation["do_sample"]) == (
        30 * frame_rate,
        3.0,
        True,
    )
    check_processor(out, model)


def check_processor(directory, model) -> None:
    """transformers reads the exported `preprocessor_config.json` as the hub's: `AutoProcessor` takes audio
    of the model's channels (`[C, N]`) at the codec's rate to `input_values [1, C, N]` (a mono extractor
    refuses stereo audio); a melody model's (whose extractor needs torchaudio, absent here) names
    transformers' classes and holds the chroma settings `musicgen_jax.chroma` computes with, every key one
    `MusicgenMelodyFeatureExtractor` takes."""
    from transformers import AutoProcessor
    from transformers.feature_extraction_utils import FeatureExtractionMixin
    from transformers.models.musicgen_melody.feature_extraction_musicgen_melody import MusicgenMelodyFeatureExtractor

    rate = model.config.audio_encoder.sampling_rate
    if isinstance(model, MusicgenMelodyForConditionalGeneration):
        saved, _ = FeatureExtractionMixin.get_feature_extractor_dict(str(directory))
        chroma = ChromaConfig(sample_rate=rate, bins=model.config.num_chroma)
        assert saved["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
        assert saved["processor_class"] == "MusicgenMelodyProcessor"
        assert (
            saved["sampling_rate"],
            saved["num_chroma"],
            saved["feature_size"],
            saved["hop_length"],
            saved["n_fft"],
        ) == (rate, chroma.bins, chroma.bins, chroma.hop_length, chroma.n_fft)
        accepted = inspect.signature(MusicgenMelodyFeatureExtractor.__init__).parameters
        assert not set(saved) - set(accepted) - {"feature_extractor_type", "processor_class"}
        return
    processor, channels = AutoProcessor.from_pretrained(directory), model.config.decoder.audio_channels
    assert type(processor).__name__ == "MusicgenProcessor"
    assert processor.feature_extractor.sampling_rate == rate and processor.feature_extractor.feature_size == channels
    audio = np.random.default_rng(0).normal(size=(channels, rate // 2)).astype(np.float32)
    values = processor(audio=audio if channels == 2 else audio[0], sampling_rate=rate, return_tensors="np")[
        "input_values"
    ]
    np.testing.assert_array_equal(values, audio[None])


def test_export_to_a_bucket_writes_the_local_export(hf_musicgen, gcs, tmp_path):
    """`export ... gs://...` (`tests/gcs.py`'s emulator) writes the files a local export writes, byte for byte
    (both formats write through `native.atomic_directory`)."""
    from musicgen_jax import fileio

    url = f"{gcs.bucket('export')}/out"
    for out in (str(tmp_path / "local"), url):
        assert export_cli.main(["--checkpoint", str(hf_musicgen[1]), "--to", "hf", out]) == 0
    local, remote = (
        {p.relative_to(fileio.path(root)).as_posix(): fileio.read_bytes(p) for p in fileio.walk_files(root)}
        for root in (tmp_path / "local", url)
    )
    assert remote == local and len(remote) >= 3
