"""MusicGen LM weights from an audiocraft `state_dict.bin` (audiocraft's `utils/export.py`) into `LMModel` parameters.

An audiocraft LM package is `{'best_state': <LM state dict>, 'xp.cfg': <YAML string>, 'version', 'exported'}`.
Its keys are renamed to the transformers MusicGen layout (transformers' `convert_musicgen_transformers.py`), fused
attention projections split into q/k/v, and the result goes through the transformers key map (`lm.weights`), which
checks every key and shape. Only what this project implements is accepted: the delay pattern and a T5
`description` conditioner, fused by cross-attention (text-to-music) or, in melody models, prepended after
a `self_wav` chroma conditioner (audiocraft's `ChromaStemConditioner` and `ConditionFuser`); mono or stereo.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import yaml

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.files import read_torch_pickle, tensors_to_numpy
from musicgen_jax.chroma import hann_window
from musicgen_jax.codec.weights import parse_audiocraft_cfg
from musicgen_jax.config import ChromaConfig, LMConfig, T5Config
from musicgen_jax.lm.weights import lm_params_from_hf_state_dict

# d_model of the T5 encoders audiocraft's T5Conditioner can load (its MODELS / MODELS_DIMS).
T5_DIMS = {
    "t5-small": 512,
    "t5-base": 768,
    "t5-large": 1024,
    "t5-3b": 1024,
    "t5-11b": 1024,
    "google/flan-t5-small": 512,
    "google/flan-t5-base": 768,
    "google/flan-t5-large": 1024,
}

_DECODER = "decoder.model.decoder"
_LAYER_NORMS = {"norm1": "self_attn_layer_norm", "norm_cross": "encoder_attn_layer_norm", "norm2": "final_layer_norm"}
_ATTENTION = {"self_attn": "self_attn", "cross_attention": "encoder_attn"}
_CHROMA = (
    ChromaConfig()
)  # the chroma this project computes (audiocraft's `ChromaStemConditioner`): 32 kHz, n_fft 2**14, hop n_fft / 4
# The torchaudio Spectrogram's Hann window buffer of a melody model's chroma extractor: checked, not a parameter.
CHROMA_WINDOW = "condition_provider.conditioners.self_wav.chroma.spec.window"

# (audiocraft key, transformers key) templates, read in both directions. Fields: {i} an index, {p} weight or bias,
# {mha} the `.mha` of audiocraft's non-custom attention (nn.MultiheadAttention), empty on the way back, {qkv} one
# projection of a fused `in_proj_weight`.
_FIELDS = {"i": r"\d+", "p": r"weight|bias", "mha": r"(?:\.mha)?", "qkv": r"[qkv]"}
_AC_LAYER, _HF_LAYER = "transformer.layers.{i}", _DECODER + ".layers.{i}"
_RULES = [
    ("emb.{i}.weight", _DECODER + ".embed_tokens.{i}.weight"),
    ("linears.{i}.weight", "decoder.lm_heads.{i}.weight"),
    ("out_norm.{p}", _DECODER + ".layer_norm.{p}"),
    ("condition_provider.conditioners.description.output_proj.{p}", "enc_to_dec_proj.{p}"),
    ("condition_provider.conditioners.self_wav.output_proj.{p}", "audio_enc_to_dec_proj.{p}"),
    (_AC_LAYER + ".linear1.weight", _HF_LAYER + ".fc1.weight"),
    (_AC_LAYER + ".linear2.weight", _HF_LAYER + ".fc2.weight"),
]
_RULES += [
    (f"{_AC_LAYER}.{ac}{{mha}}.out_proj.weight", f"{_HF_LAYER}.{hf}.out_proj.weight") for ac, hf in _ATTENTION.items()
]
_RULES += [(f"{_AC_LAYER}.{ac}.{{p}}", f"{_HF_LAYER}.{hf}.{{p}}") for ac, hf in _LAYER_NORMS.items()]
# Fused q | k | v rows (audiocraft) <-> three projections (transformers).
_IN_PROJ = [
    (f"{_AC_LAYER}.{ac}{{mha}}.in_proj_weight", f"{_HF_LAYER}.{hf}.{{qkv}}_proj.weight")
    for ac, hf in _ATTENTION.items()
]


@functools.cache
def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(part) if j % 2 == 0 else f"(?P<{part}>{_FIELDS[part]})" for j, part in enumerate(parts))
    )


def _match(template: str, key: str) -> dict[str, str] | None:
    """The fields of `key` if the whole key matches `template` (its literal text exactly), else None."""
    m = _pattern(template).fullmatch(key)
    return None if m is None else {"mha": "", **m.groupdict()}


def _get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def t5_name_from_audiocraft(cfg: dict) -> str:
    """The T5 model audiocraft loads for the `description` conditioner (`conditioners.description.t5.name`)."""
    description = _get(cfg, "conditioners.description")
    if not isinstance(description, dict) or description.get("model") != "t5":
        raise CheckpointError(f"audiocraft LM: only a T5 `description` conditioner is supported, got {description!r}")
    name = _get(description, "t5.name")
    if not isinstance(name, str):
        raise CheckpointError("audiocraft LM: xp.cfg lacks conditioners.description.t5.name")
    return name


def _t5_dim(name: str) -> int:
    dim = T5_DIMS.get(name.removeprefix("google-t5/"))
    if dim is None:
        raise CheckpointError(f"audiocraft LM: unknown T5 model {name!r} (known: {sorted(T5_DIMS)})")
    return dim


def _chroma_settings(cfg: dict) -> dict:
    """`chroma_bins` / `chroma_frames` of a melody model's `self_wav` chroma_stem conditioner (audiocraft's
    `ChromaStemConditioner`)."""
    self_wav = _get(cfg, "conditioners.self_wav")
    if not isinstance(self_wav, dict) or self_wav.get("model") != "chroma_stem":
        raise CheckpointError(
            f"audiocraft LM: only a `chroma_stem` (melody) `self_wav` conditioner is supported, got {self_wav!r}"
        )
    stem = self_wav.get("chroma_stem") or {}
    inert = {"match_len_on_eval", "eval_wavs", "n_eval_wavs", "cache_path"}  # evaluation / training data only
    supported = {"sample_rate": _CHROMA.sample_rate, "radix2_exp": _CHROMA.n_fft.bit_length() - 1, "argmax": True}
    unknown = sorted(set(stem) - inert - set(supported) - {"n_chroma"})
    if unknown:
        raise CheckpointError(f"audiocraft LM: unsupported conditioners.self_wav.chroma_stem settings {unknown}")
    missing = sorted({"sample_rate", "n_chroma", "radix2_exp"} - set(stem))
    if missing:
        raise CheckpointError(f"audiocraft LM: xp.cfg lacks conditioners.self_wav.chroma_stem settings {missing}")
    bad = {name: stem.get(name, False) for name, ok in supported.items() if stem.get(name, False) != ok}
    if type(stem["n_chroma"]) is not int or stem["n_chroma"] <= 0:
        bad["n_chroma"] = stem["n_chroma"]
    if bad:
        raise CheckpointError(
            f"audiocraft LM: unsupported conditioners.self_wav.chroma_stem settings {bad}; "
            f"supported: {supported} and a positive n_chroma"
        )
    duration = _get(cfg, "dataset.segment_duration")
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise CheckpointError(
            f"audiocraft LM: a melody model needs dataset.segment_duration (the chroma length), got {duration!r}"
        )
    # ChromaStemConditioner._get_chroma_len: the chroma frames of int(sample_rate * duration) zeros, padded to n_fft
    samples = max(int(_CHROMA.sample_rate * duration), _CHROMA.n_fft)
    return {"chroma_bins": stem["n_chroma"], "chroma_frames": 1 + samples // _CHROMA.hop_length}


def _check_conditioning(cfg: dict) -> dict:
    """The LMConfig melody settings of the conditioners and fuser (audiocraft's `ConditionFuser`, prepend); {} for a
    text-to-music model."""
    conditioners = {k: v for k, v in (_get(cfg, "conditioners") or {}).items() if k != "args"}
    fuser = _get(cfg, "fuser") or {}
    others = sorted(set(conditioners) - {"description", "self_wav"})
    if others:
        raise CheckpointError(
            f"audiocraft LM: unsupported conditioners {others}; only `description` (T5) and "
            "`self_wav` (chroma_stem) are"
        )
    t5 = _get(conditioners, "description.t5") or {}
    if t5.get("finetune") or t5.get("normalize_text"):
        raise CheckpointError(
            "audiocraft LM: fine-tuned T5 / text normalization (finetune, normalize_text) are not supported"
        )
    melody = "self_wav" in conditioners
    cross, prepend = list(fuser.get("cross") or []), list(fuser.get("prepend") or [])
    expected = ([], ["self_wav", "description"]) if melody else (["description"], [])
    if (cross, prepend) != expected or fuser.get("sum") or fuser.get("input_interpolate"):
        raise CheckpointError(
            "audiocraft LM: only `description` fused by cross-attention (text-to-music) or "
            "prepend [self_wav, description] without cross-attention (melody) is supported, got "
            f"conditioners {sorted(conditioners)} and fuser cross={fuser.get('cross')} "
            f"prepend={fuser.get('prepend')} sum={fuser.get('sum')} "
            f"input_interpolate={fuser.get('input_interpolate')}"
        )
    if fuser.get("cross_attention_pos_emb"):
        raise CheckpointError("audiocraft LM: fuser.cross_attention_pos_emb is not supported")
    return _chroma_settings(cfg) if melody else {}


def _delays(cfg: dict, n_q: int) -> tuple[int, ...]:
    pattern = _get(cfg, "codebooks_pattern") or {}
    modeling = pattern.get("modeling")
    if modeling is None and _get(cfg, "transformer_lm.q_modeling") is not None:
        modeling, pattern = _get(cfg, "transformer_lm.q_modeling"), {}  # audiocraft's fallback: default delays
    if modeling != "delay":
        raise CheckpointError(f"audiocraft LM: only the delay codebook pattern is supported, got {modeling!r}")
    delay = pattern.get("delay") or {}
    if delay.get("flatten_first", 0) or delay.get("empty_initial", 0):
        raise CheckpointError("audiocraft LM: delay pattern with flatten_first / empty_initial is not supported")
    delays = delay.get("delays")
    delays = list(range(n_q)) if delays is None else list(delays)
    if len(delays) != n_q:
        raise CheckpointError(f"audiocraft LM: transformer_lm.n_q {n_q} != {len(delays)} delays {delays}")
    return tuple(int(d) for d in delays)


def lm_config_from_audiocraft(cfg: dict) -> LMConfig:
    """LMConfig from the resolved `xp.cfg` of an audiocraft LM package (`parse_audiocraft_cfg`).

    Missing `transformer_lm` settings take the defaults of audiocraft's classes (what audiocraft would
    build), so an incomplete config is judged as audiocraft would run it."""
    if _get(cfg, "lm_model", "transformer_lm") != "transformer_lm":
        raise CheckpointError(f"audiocraft LM: lm_model {cfg.get('lm_model')!r} is not supported")
    lm = _get(cfg, "transformer_lm")
    if not isinstance(lm, dict):
        raise CheckpointError("audiocraft LM: xp.cfg lacks the transformer_lm section")
    melody = _check_conditioning(cfg)
    unsupported = {  # setting: (value, default in audiocraft's classes, supported value)
        "norm": ("layer_norm", "layer_norm"),
        "norm_first": (False, True),
        "activation": ("relu", "gelu"),
        "bias_ff": (True, False),
        "bias_attn": (True, False),
        "bias_proj": (True, False),
        "positional_embedding": ("sin", "sin"),
        "positional_scale": (1.0, 1.0),
        "causal": (False, True),
        "past_context": (None, None),
        "layer_scale": (None, None),
        "qk_layer_norm": (False, False),
        "qk_layer_norm_cross": (False, False),
        "kv_repeat": (1, 1),
    }
    bad = {name: lm.get(name, default) for name, (default, ok) in unsupported.items() if lm.get(name, default) != ok}
    if bad:
        raise CheckpointError(
            f"audiocraft LM: unsupported transformer_lm settings {bad}; supported: "
            f"{ {name: ok for name, (_, ok) in unsupported.items()} }"
        )
    stereo = _get(cfg, "interleave_stereo_codebooks") or {}
    if stereo.get("use") and stereo.get("per_timestep"):
        raise CheckpointError("audiocraft LM: stereo codes interleaved per timestep are not supported")
    try:
        n_q, dim = int(lm["n_q"]), int(lm["dim"])
        if stereo.get("use") and n_q % 2:
            raise CheckpointError(f"audiocraft LM: a stereo model needs an even n_q, got {n_q}")
        return LMConfig(
            dim=dim,
            num_heads=int(lm["num_heads"]),
            num_layers=int(lm["num_layers"]),
            ffn_dim=int(lm.get("hidden_scale", 4) * dim),
            card=int(lm["card"]),
            delays=_delays(cfg, n_q),
            text_dim=_t5_dim(t5_name_from_audiocraft(cfg)),
            max_period=float(lm.get("max_period", 10000.0)),
            **melody,
        )
    except KeyError as e:
        raise CheckpointError(f"audiocraft LM: xp.cfg lacks the setting transformer_lm.{e.args[0]}") from e
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"audiocraft LM: invalid transformer_lm settings: {e}") from e


def _rename(key: str) -> str | None:
    """The transformers name of one audiocraft LM key (anchored on whole key components), or None."""
    for ac, hf in _RULES:
        if (fields := _match(ac, key)) is not None:
            return hf.format(**fields)
    return None


def lm_state_to_hf(best_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """audiocraft LM state dict -> transformers MusicGen names (transformers' `convert_musicgen_transformers.py`),
    each fused `in_proj_weight` [3D, D] split into `q_proj` / `k_proj` / `v_proj` (rows 0:D, D:2D, 2D:3D). Keys no
    rule recognizes (and an `in_proj_weight` whose rows are not a multiple of 3) pass through unchanged, so that the
    key map reports them as unexpected."""
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}

    def put(name: str, value, source: str) -> None:
        if name in out:
            raise CheckpointError(f"audiocraft LM: {origin[name]!r} and {source!r} both map to {name!r}")
        out[name], origin[name] = value, source

    for key, value in best_state.items():
        fused = next(((hf, fields) for ac, hf in _IN_PROJ if (fields := _match(ac, key)) is not None), None)
        if fused and np.ndim(value) == 2 and np.shape(value)[0] % 3 == 0:
            hf, fields = fused
            d = np.shape(value)[0] // 3
            for j, qkv in enumerate("qkv"):
                put(hf.format(**fields, qkv=qkv), value[j * d : (j + 1) * d], key)
            continue
        put(_rename(key) or key, value, key)
    return out


def lm_state_from_hf(hf_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers MusicGen LM tensors -> audiocraft's `best_state` (the inverse of `lm_state_to_hf`: the
    rules read backwards, audiocraft's custom attention layout without `.mha`, each layer's q / k / v
    projections stacked into one `in_proj_weight`; a melody package's `CHROMA_WINDOW` buffer is not a
    parameter and not among them)."""
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for key, value in hf_state.items():
        hit = next(((ac, fields) for ac, hf in _IN_PROJ if (fields := _match(hf, key)) is not None), None)
        if hit:
            fused.setdefault(hit[0].format(**hit[1]), {})[hit[1]["qkv"]] = value
            continue
        name = next((ac.format(**fields) for ac, hf in _RULES if (fields := _match(hf, key)) is not None), None)
        if name is None:
            raise CheckpointError(f"no audiocraft name for the MusicGen tensor {key}")
        out[name] = value
    for name, parts in fused.items():
        out[name] = np.concatenate([parts[qkv] for qkv in "qkv"])
    return out


def t5_name_for(text_config: T5Config, source: str | None) -> str:
    """The hub name audiocraft loads the text encoder by: `source` when it is one of `T5_DIMS`' models, or
    t5-base for an encoder of t5-base's architecture (the released MusicGens' embedded T5); CheckpointError
    otherwise (audiocraft's T5 conditioner takes no weights but the hub's)."""
    name = (source or "").removeprefix("google-t5/")
    if name in T5_DIMS and T5_DIMS[name] == text_config.d_model:
        return name
    if text_config == T5Config():
        return "t5-base"
    raise CheckpointError(
        f"audiocraft loads its T5 by hub name ({', '.join(sorted(T5_DIMS))}): this model's text "
        f"encoder (from {source}) is none of them"
    )


def xp_cfg(
    config: LMConfig,
    t5_name: str,
    sample_rate: int,
    stereo: bool,
    cfg_dropout: float = 0.3,
    checkpoint: str | None = None,
    n_q: int | None = None,
) -> str:
    """An `xp.cfg` YAML for `config`, laid out as audiocraft's merged MusicGen config (solver musicgen, model
    lm/musicgen_lm, conditioner text2music or chroma2music), that `lm_config_from_audiocraft` reads back as
    `config`. `checkpoint`, `n_q`: its `compression_model_checkpoint` and `compression_model_n_q` (a DAC's
    `//pretrained/dac_44khz`, with as many codebooks as the LM models)."""
    melody = config.melody
    conditioners = {
        "description": {
            "model": "t5",
            "t5": {"name": t5_name, "finetune": False, "word_dropout": cfg_dropout, "normalize_text": False},
        }
    }
    if melody:
        conditioners = {
            "self_wav": {
                "model": "chroma_stem",
                "chroma_stem": {
                    "sample_rate": "${sample_rate}",
                    "n_chroma": config.chroma_bins,
                    "radix2_exp": _CHROMA.n_fft.bit_length() - 1,
                    "argmax": True,
                    "match_len_on_eval": False,
                    "eval_wavs": None,
                    "n_eval_wavs": 100,
                    "cache_path": None,
                },
            },
            **conditioners,
        }
    # the chroma frames come from the segment duration: the released models' 30 s where it gives them
    frames = config.chroma_frames
    duration = next(
        (
            d
            for d in (30, (frames - 1) * _CHROMA.hop_length / sample_rate)
            if 1 + max(int(sample_rate * d), _CHROMA.n_fft) // _CHROMA.hop_length == frames
        ),
        30,
    )
    dim = config.dim
    cfg = {
        "device": "cpu",
        "dtype": "float32",
        "solver": "musicgen",
        "sample_rate": sample_rate,
        "channels": 2 if stereo else 1,
        "compression_model_checkpoint": checkpoint,
        "compression_model_n_q": n_q,
        "interleave_stereo_codebooks": {"use": stereo, "per_timestep": False},
        "dataset": {"segment_duration": duration},
        "classifier_free_guidance": {"training_dropout": cfg_dropout, "inference_coef": 3.0},
        "attribute_dropout": (
            {"args": {"active_on_eval": False}, "text": {}, "wav": {"self_wav": 0.5}} if melody else {}
        ),
        "fuser": {
            "cross_attention_pos_emb": False,
            "cross_attention_pos_emb_scale": 1,
            "sum": [],
            "prepend": ["self_wav", "description"] if melody else [],
            "cross": [] if melody else ["description"],
            "input_interpolate": [],
        },
        "conditioners": conditioners,
        "lm_model": "transformer_lm",
        "codebooks_pattern": {
            "modeling": "delay",
            "delay": {"delays": list(config.delays), "flatten_first": 0, "empty_initial": 0},
        },
        "transformer_lm": {
            "dim": dim,
            "num_heads": config.num_heads,
            "num_layers": config.num_layers,
            "hidden_scale": config.ffn_dim // dim if config.ffn_dim % dim == 0 else config.ffn_dim / dim,
            "n_q": config.num_codebooks,
            "card": config.card,
            "dropout": 0.0,
            "emb_lr": None,
            "activation": "gelu",
            "norm_first": True,
            "bias_ff": False,
            "bias_attn": False,
            "bias_proj": False,
            "past_context": None,
            "causal": True,
            "custom": False,
            "memory_efficient": True,
            "attention_as_float32": False,
            "layer_scale": None,
            "positional_embedding": "sin",
            "max_period": config.max_period,
            "xpos": False,
            "checkpointing": "none",
            "weight_init": "gaussian",
            "depthwise_init": "current",
            "zero_bias_init": True,
            "norm": "layer_norm",
            "cross_attention": not melody,
            "qk_layer_norm": False,
            "qk_layer_norm_cross": False,
            "attention_dropout": None,
            "kv_repeat": 1,
            "two_step_cfg": False,
        },
    }
    text = yaml.safe_dump(cfg, sort_keys=False)
    if lm_config_from_audiocraft(parse_audiocraft_cfg(text)) != config:
        raise CheckpointError(f"the LM {config} has no audiocraft config (its feed-forward width or chroma length)")
    return text


def _audiocraft_name(hf_key: str) -> str:
    """For error messages: the audiocraft key a transformers MusicGen key comes from (the rules read backwards)."""
    for ac, hf in _IN_PROJ:
        if (fields := _match(hf, hf_key)) is not None:
            return f"{ac.format(**fields)}[{fields['qkv']} rows]"
    for ac, hf in _RULES:
        if (fields := _match(hf, hf_key)) is not None:
            return ac.format(**fields)
    return hf_key


def _check_window(window: np.ndarray | None) -> None:
    """The chroma spectrogram's window buffer: torch.hann_window(n_fft) (periodic), what this project uses."""
    if window is None:
        raise CheckpointError(
            f"audiocraft LM: the melody package lacks {CHROMA_WINDOW} (the chroma spectrogram's window)"
        )
    n = _CHROMA.n_fft
    if np.shape(window) != (n,) or not np.allclose(window, hann_window(n), atol=1e-3):
        raise CheckpointError(
            f"audiocraft LM: {CHROMA_WINDOW} (shape {np.shape(window)}) is not the periodic Hann "
            f"window of length {n} (n_fft = 2**radix2_exp) that the chroma extractor uses"
        )


def _state_dict_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "state_dict.bin"
    if not path.is_file():
        raise CheckpointError(f"audiocraft LM checkpoint {path} does not exist")
    return path


def load_audiocraft_lm(state_dict_bin_path: str | os.PathLike) -> tuple[LMConfig, dict, str, bool]:
    """(LMConfig, `{"params": ...}`, T5 hub name, stereo) from an audiocraft `state_dict.bin` (or the
    directory holding one). Key and shape errors name the audiocraft keys."""
    path = _state_dict_path(state_dict_bin_path)
    package = read_torch_pickle(path)
    if not isinstance(package, dict) or "best_state" not in package or "xp.cfg" not in package:
        found = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise CheckpointError(
            f"{path} is not an exported audiocraft package: expected 'best_state' and 'xp.cfg', found {found}"
        )
    best_state, xp_cfg = package["best_state"], package["xp.cfg"]
    if not isinstance(xp_cfg, str):
        raise CheckpointError(f"{path}: 'xp.cfg' is a {type(xp_cfg).__name__}, expected a YAML string")
    if not isinstance(best_state, dict) or not all(hasattr(v, "shape") for v in best_state.values()):
        raise CheckpointError(
            f"{path}: 'best_state' is not a flat state dict of tensors (a training checkpoint? "
            "export it with audiocraft.utils.export first)"
        )
    cfg = parse_audiocraft_cfg(xp_cfg)
    config = lm_config_from_audiocraft(cfg)
    state = tensors_to_numpy(best_state)
    if config.melody:
        _check_window(state.pop(CHROMA_WINDOW, None))
    state = lm_state_to_hf(state)
    try:
        params = lm_params_from_hf_state_dict(state, config, f"audiocraft LM {path}")
    except CheckpointError as e:
        message = re.sub(r"[\w.]+", lambda m: _audiocraft_name(m[0]), str(e))
        raise CheckpointError(message) from e
    return config, params, t5_name_from_audiocraft(cfg), bool(_get(cfg, "interleave_stereo_codebooks.use", False))
