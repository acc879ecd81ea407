"""MusicGen LM weights from an audiocraft `state_dict.bin` (SPEC 2.7, 8.1) into `LMModel` parameters.

An audiocraft LM package is `{'best_state': <LM state dict>, 'xp.cfg': <YAML string>, 'version', 'exported'}`.
Its keys are renamed to the transformers MusicGen layout (SPEC 6.4), fused attention projections split
into q/k/v, and the result goes through the transformers key map (`convert.musicgen`), which checks
every key and shape. Only what this project implements is accepted: text-to-music (mono or stereo)
models with a T5 `description` conditioner fused by cross-attention and the delay pattern.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from musicgen_jax.config import LMConfig
from musicgen_jax.convert.encodec import parse_audiocraft_cfg
from musicgen_jax.convert.musicgen import lm_params_from_hf_state_dict
from musicgen_jax.convert.torch_io import CheckpointError, read_torch_pickle, tensors_to_numpy

# d_model of the T5 encoders audiocraft's T5Conditioner can load (its MODELS / MODELS_DIMS).
T5_DIMS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
           "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024}

_DECODER = "decoder.model.decoder"
_LAYER_NORMS = {"norm1": "self_attn_layer_norm", "norm_cross": "encoder_attn_layer_norm", "norm2": "final_layer_norm"}
_ATTENTION = {"self_attn": "self_attn", "cross_attention": "encoder_attn"}


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
        raise CheckpointError("audiocraft LM: only a T5 `description` conditioner is supported, got "
                              f"{description!r}")
    name = _get(description, "t5.name")
    if not isinstance(name, str):
        raise CheckpointError("audiocraft LM: xp.cfg lacks conditioners.description.t5.name")
    return name


def _t5_dim(name: str) -> int:
    dim = T5_DIMS.get(name.removeprefix("google-t5/"))
    if dim is None:
        raise CheckpointError(f"audiocraft LM: unknown T5 model {name!r} (known: {sorted(T5_DIMS)})")
    return dim


def _check_conditioning(cfg: dict) -> None:
    conditioners = {k: v for k, v in (_get(cfg, "conditioners") or {}).items() if k != "args"}
    fuser = _get(cfg, "fuser") or {}
    if "self_wav" in conditioners or fuser.get("prepend"):
        raise CheckpointError("audiocraft LM: melody models are not supported yet (this checkpoint conditions on "
                              f"`self_wav` / prepends {fuser.get('prepend')}); only text-to-music models load")
    others = sorted(set(conditioners) - {"description"})
    if others:
        raise CheckpointError(f"audiocraft LM: unsupported conditioners {others}; only `description` (T5) is")
    t5 = _get(conditioners, "description.t5") or {}
    if t5.get("finetune") or t5.get("normalize_text"):
        raise CheckpointError("audiocraft LM: fine-tuned T5 / text normalization (finetune, normalize_text) "
                              "are not supported")
    if list(fuser.get("cross") or []) != ["description"] or fuser.get("sum") or fuser.get("input_interpolate"):
        raise CheckpointError("audiocraft LM: only `description` fused by cross-attention is supported, got fuser "
                              f"cross={fuser.get('cross')} sum={fuser.get('sum')} "
                              f"input_interpolate={fuser.get('input_interpolate')}")
    if fuser.get("cross_attention_pos_emb"):
        raise CheckpointError("audiocraft LM: fuser.cross_attention_pos_emb is not supported")


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
    _check_conditioning(cfg)
    unsupported = {  # setting: (value, default in audiocraft's classes, supported value)
        "norm": ("layer_norm", "layer_norm"), "norm_first": (False, True), "activation": ("relu", "gelu"),
        "bias_ff": (True, False), "bias_attn": (True, False), "bias_proj": (True, False),
        "positional_embedding": ("sin", "sin"), "positional_scale": (1.0, 1.0), "causal": (False, True),
        "past_context": (None, None), "layer_scale": (None, None), "qk_layer_norm": (False, False),
        "qk_layer_norm_cross": (False, False), "kv_repeat": (1, 1)}
    bad = {name: lm.get(name, default) for name, (default, ok) in unsupported.items() if lm.get(name, default) != ok}
    if bad:
        raise CheckpointError(f"audiocraft LM: unsupported transformer_lm settings {bad}; supported: "
                              f"{ {name: ok for name, (_, ok) in unsupported.items()} }")
    stereo = _get(cfg, "interleave_stereo_codebooks") or {}
    if stereo.get("use") and stereo.get("per_timestep"):
        raise CheckpointError("audiocraft LM: stereo codes interleaved per timestep are not supported")
    try:
        n_q, dim = int(lm["n_q"]), int(lm["dim"])
        if stereo.get("use") and n_q % 2:
            raise CheckpointError(f"audiocraft LM: a stereo model needs an even n_q, got {n_q}")
        return LMConfig(dim=dim, num_heads=int(lm["num_heads"]), num_layers=int(lm["num_layers"]),
                        ffn_dim=int(lm.get("hidden_scale", 4) * dim), card=int(lm["card"]),
                        delays=_delays(cfg, n_q), text_dim=_t5_dim(t5_name_from_audiocraft(cfg)),
                        max_period=float(lm.get("max_period", 10000.0)))
    except KeyError as e:
        raise CheckpointError(f"audiocraft LM: xp.cfg lacks the setting transformer_lm.{e.args[0]}") from e
    except CheckpointError:
        raise
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"audiocraft LM: invalid transformer_lm settings: {e}") from e


def _rename(key: str) -> str | None:
    """The transformers name of one audiocraft LM key (anchored on whole key components), or None."""
    if m := re.fullmatch(r"emb\.(\d+)\.weight", key):
        return f"{_DECODER}.embed_tokens.{m[1]}.weight"
    if m := re.fullmatch(r"linears\.(\d+)\.weight", key):
        return f"decoder.lm_heads.{m[1]}.weight"
    if m := re.fullmatch(r"out_norm\.(weight|bias)", key):
        return f"{_DECODER}.layer_norm.{m[1]}"
    if m := re.fullmatch(r"condition_provider\.conditioners\.description\.output_proj\.(weight|bias)", key):
        return f"enc_to_dec_proj.{m[1]}"
    if not (m := re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", key)):
        return None
    layer, rest = f"{_DECODER}.layers.{m[1]}", m[2]
    if m := re.fullmatch(r"(self_attn|cross_attention)(?:\.mha)?\.out_proj\.weight", rest):
        return f"{layer}.{_ATTENTION[m[1]]}.out_proj.weight"
    if m := re.fullmatch(r"linear([12])\.weight", rest):
        return f"{layer}.fc{m[1]}.weight"
    if m := re.fullmatch(r"(norm1|norm2|norm_cross)\.(weight|bias)", rest):
        return f"{layer}.{_LAYER_NORMS[m[1]]}.{m[2]}"
    return None


_IN_PROJ = re.compile(r"transformer\.layers\.(\d+)\.(self_attn|cross_attention)(?:\.mha)?\.in_proj_weight")


def lm_state_to_hf(best_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """audiocraft LM state dict -> transformers MusicGen names (SPEC 6.4), each fused `in_proj_weight`
    [3D, D] split into `q_proj` / `k_proj` / `v_proj` (rows 0:D, D:2D, 2D:3D). Keys no rule recognizes
    (and an `in_proj_weight` whose rows are not a multiple of 3) pass through unchanged, so that the
    key map reports them as unexpected."""
    out: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}

    def put(name: str, value, source: str) -> None:
        if name in out:
            raise CheckpointError(f"audiocraft LM: {origin[name]!r} and {source!r} both map to {name!r}")
        out[name], origin[name] = value, source

    for key, value in best_state.items():
        m = _IN_PROJ.fullmatch(key)
        if m and np.ndim(value) == 2 and np.shape(value)[0] % 3 == 0:
            d = np.shape(value)[0] // 3
            prefix = f"{_DECODER}.layers.{m[1]}.{_ATTENTION[m[2]]}"
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                put(f"{prefix}.{proj}.weight", value[i * d:(i + 1) * d], key)
            continue
        put(_rename(key) or key, value, key)
    return out


def _audiocraft_name(hf_key: str) -> str:
    """For error messages: the audiocraft key a transformers MusicGen key comes from."""
    if m := re.fullmatch(rf"{re.escape(_DECODER)}\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\.weight",
                         hf_key):
        attn = {v: k for k, v in _ATTENTION.items()}[m[2]]
        return f"transformer.layers.{m[1]}.{attn}.in_proj_weight[{m[3]} rows]"
    reverse = [(rf"{re.escape(_DECODER)}\.embed_tokens\.(\d+)\.weight", r"emb.\1.weight"),
               (r"decoder\.lm_heads\.(\d+)\.weight", r"linears.\1.weight"),
               (rf"{re.escape(_DECODER)}\.layer_norm\.(weight|bias)", r"out_norm.\1"),
               (r"enc_to_dec_proj\.(weight|bias)", r"condition_provider.conditioners.description.output_proj.\1"),
               (rf"{re.escape(_DECODER)}\.layers\.(\d+)\.self_attn\.out_proj\.weight",
                r"transformer.layers.\1.self_attn.out_proj.weight"),
               (rf"{re.escape(_DECODER)}\.layers\.(\d+)\.encoder_attn\.out_proj\.weight",
                r"transformer.layers.\1.cross_attention.out_proj.weight"),
               (rf"{re.escape(_DECODER)}\.layers\.(\d+)\.fc([12])\.weight", r"transformer.layers.\1.linear\2.weight")]
    reverse += [(rf"{re.escape(_DECODER)}\.layers\.(\d+)\.{hf}\.(weight|bias)", rf"transformer.layers.\1.{ac}.\2")
                for ac, hf in _LAYER_NORMS.items()]
    for pattern, template in reverse:
        if re.fullmatch(pattern, hf_key):
            return re.sub(pattern, template, hf_key)
    return hf_key


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
        raise CheckpointError(f"{path} is not an exported audiocraft package: expected 'best_state' and "
                              f"'xp.cfg', found {found}")
    best_state, xp_cfg = package["best_state"], package["xp.cfg"]
    if not isinstance(xp_cfg, str):
        raise CheckpointError(f"{path}: 'xp.cfg' is a {type(xp_cfg).__name__}, expected a YAML string")
    if not isinstance(best_state, dict) or not all(hasattr(v, "shape") for v in best_state.values()):
        raise CheckpointError(f"{path}: 'best_state' is not a flat state dict of tensors (a training checkpoint? "
                              "export it with audiocraft.utils.export first)")
    cfg = parse_audiocraft_cfg(xp_cfg)
    config = lm_config_from_audiocraft(cfg)
    state = lm_state_to_hf(tensors_to_numpy(best_state))
    try:
        params = lm_params_from_hf_state_dict(state, config, f"audiocraft LM {path}")
    except CheckpointError as e:
        message = re.sub(r"[\w.]+", lambda m: _audiocraft_name(m[0]), str(e))
        raise CheckpointError(message) from e
    return config, params, t5_name_from_audiocraft(cfg), bool(_get(cfg, "interleave_stereo_codebooks.use", False))
