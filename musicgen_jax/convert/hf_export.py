"""A MusicGen model -> transformers' format: the directory that `MusicgenForConditionalGeneration`
(`MusicgenMelodyForConditionalGeneration` for melody models) `.from_pretrained` loads with no missing or
unexpected keys, as on the hub (the `facebook/musicgen-*` hub repos).

A model converted or trained here goes back to the libraries that read the hub's checkpoints: `export_hf`
writes the directory, `hf_state_dict` its tensors (the import key maps walked backwards).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from etils import epath

from musicgen_jax import fileio
from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import same_tree
from musicgen_jax.codec import weights as enc
from musicgen_jax.codec.model import Codec
from musicgen_jax.components import Components
from musicgen_jax.config import ChromaConfig
from musicgen_jax.convert import codec_loader
from musicgen_jax.lm import weights as mg
from musicgen_jax.text import weights as t5

MAX_SHARD_SIZE = "5GB"  # transformers' default shard size
GENERATION_SECONDS = 30  # the released generation_config's max_length, in seconds of audio


def codec_state_dict(codec: Codec) -> dict[str, np.ndarray]:
    """The codec's transformers `EncodecModel` tensors: those of the checkpoint it was read from
    (`codec.source`) when that is a transformers checkpoint whose tensors import to exactly these
    parameters (the frozen codec of a run or a conversion), else `encodec.hf_state_dict`'s split."""
    params = jax.device_get(codec.params)
    derived = enc.hf_state_dict(params, codec.config)
    original = codec_loader.hf_codec_tensors(codec.source) if codec.source else None
    if original is None or sorted(original) != sorted(derived):
        return derived
    try:
        imported = enc.params_from_hf_state_dict(original, codec.config)
    except CheckpointError:
        return derived
    return {k: np.ascontiguousarray(v) for k, v in original.items()} if same_tree(params, imported) else derived


def hf_state_dict(components: Components) -> dict[str, np.ndarray]:
    """Every tensor of the transformers checkpoint of `components`, by its key: the import key maps walked
    backwards (`keymap.disassemble`), per component: the LM and T5 exactly as a transformers checkpoint holds
    them; the codec's weight-norm pairs and LSTM biases, which import folds, as the transformers checkpoint
    the codec came from holds them (`codec_state_dict`), or else in an equivalent split
    (`encodec.hf_state_dict`)."""
    text = components.text_encoder
    state = {f"text_encoder.{k}": v for k, v in t5.hf_state_dict(jax.device_get(text.params), text.config).items()}
    state.update({f"audio_encoder.{k}": v for k, v in codec_state_dict(components.codec).items()})
    state.update(mg.hf_state_dict(jax.device_get(components.lm_params), components.lm_config))
    return state


def hf_config(components: Components) -> dict:
    """The `config.json` of `components`: what differs from the defaults of transformers' config class."""
    from transformers import MusicgenConfig, MusicgenMelodyConfig

    lm = components.lm_config
    cfg = mg.config_to_hf(
        lm, t5.config_to_hf(components.text_encoder.config), enc.config_to_hf(components.codec.config)
    )
    cls, architecture = (
        (MusicgenMelodyConfig, "MusicgenMelodyForConditionalGeneration")
        if lm.melody
        else (MusicgenConfig, "MusicgenForConditionalGeneration")
    )
    return cls(**{k: v for k, v in cfg.items() if k != "model_type"}, architectures=[architecture]).to_diff_dict()


def _generation_config(components: Components) -> dict:
    card = components.lm_config.card
    return {
        "decoder_start_token_id": card,
        "pad_token_id": card,
        "bos_token_id": card,
        "do_sample": True,
        "guidance_scale": 3.0,
        "max_length": GENERATION_SECONDS * components.codec.frame_rate,
    }


def _preprocessor_config(components: Components) -> dict:
    rate, lm = components.codec.sample_rate, components.lm_config
    if lm.melody:
        chroma = ChromaConfig(sample_rate=rate, bins=lm.chroma_bins)
        return {
            "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
            "processor_class": "MusicgenMelodyProcessor",
            "feature_size": chroma.bins,
            "num_chroma": chroma.bins,
            "sampling_rate": rate,
            "hop_length": chroma.hop_length,
            "n_fft": chroma.n_fft,
            "chunk_length": GENERATION_SECONDS,
            "padding_value": 0.0,
            "return_attention_mask": True,
            "stem_indices": [3, 2],
        }
    return {
        "feature_extractor_type": "EncodecFeatureExtractor",
        "processor_class": "MusicgenProcessor",
        "feature_size": 2 if components.codec.stereo else 1,
        "sampling_rate": rate,
        "padding_side": "left",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "chunk_length_s": None,
        "overlap": None,
    }


def _write_weights(directory: Path, state: dict[str, np.ndarray], max_shard_size: int | str) -> None:
    from huggingface_hub import split_state_dict_into_shards_factory
    from safetensors.numpy import save_file

    split = split_state_dict_into_shards_factory(
        state,
        get_storage_size=lambda a: a.nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size,
    )
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, str(directory / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {
            "metadata": {"total_size": sum(a.nbytes for a in state.values())},
            "weight_map": split.tensor_to_filename,
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def export_hf(
    components: Components, directory: str | os.PathLike, max_shard_size: int | str = MAX_SHARD_SIZE
) -> epath.Path:
    """Write `components` in transformers' format to `directory`, atomically (replacing it if it exists):

    config.json                     MusicgenConfig / MusicgenMelodyConfig (text_encoder, audio_encoder, decoder)
    generation_config.json          the converter's generation settings (transformers'
                                    `convert_musicgen_transformers.py`)
    preprocessor_config.json        EncodecFeatureExtractor (melody: MusicgenMelodyFeatureExtractor)
    model.safetensors               or model-0000i-of-0000n.safetensors + model.safetensors.index.json
                                    (`max_shard_size`, 5 GB shards)
    spiece.model, tokenizer files   the T5 tokenizer's

    transformers' MusicGen decodes with EnCodec: a model over another codec's tokens is a CheckpointError.
    """
    if not isinstance(components.codec, Codec):
        raise CheckpointError(
            f"transformers' MusicGen codes with EnCodec; this model's codec is {type(components.codec).__name__} "
            f"({components.codec.source}): export it to audiocraft (--to audiocraft)"
        )
    config, state = hf_config(components), hf_state_dict(components)
    with native.atomic_directory(directory) as tmp:
        for name, content in (
            ("config.json", config),
            ("generation_config.json", _generation_config(components)),
            ("preprocessor_config.json", _preprocessor_config(components)),
        ):
            (tmp / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        _write_weights(tmp, state, max_shard_size)
        components.text_encoder.tokenizer.save(tmp)
    return fileio.path(directory)
