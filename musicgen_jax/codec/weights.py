"""EnCodec weights: transformers (HF) and audiocraft checkpoints into `Codec` parameters and back, and
this project's converted codec directory (`save_codec`, `load_native_codec`).

The key map is generated from the codec's own layer layout (`seanet.encoder_layers` /
`decoder_layers`): each HF key names one parameter of ours and how its tensor is laid out, so
import checks every key and shape, and export can walk the same table backwards.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import jax
import numpy as np
import yaml

from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import Target, assemble, check_tree, disassemble, param_shapes
from musicgen_jax.codec.model import Codec, EncodecModel
from musicgen_jax.codec.seanet import decoder_layers, encoder_layers
from musicgen_jax.config import CodecConfig

NATIVE_FORMAT = "musicgen_jax.codec"  # `save_codec`'s directories

# Quantizer state that only training (EMA k-means) uses; present in every checkpoint, unused at inference.
TRAINING_BUFFERS = ("inited", "cluster_size", "embed_avg")


def config_from_hf(cfg: dict) -> CodecConfig:
    """CodecConfig from a transformers `EncodecConfig` dict (`config.json`)."""
    if cfg.get("model_type", "encodec") != "encodec":
        raise CheckpointError(f"expected an EnCodec config, got model_type {cfg.get('model_type')!r}")
    unsupported = {
        "norm_type": (cfg.get("norm_type", "weight_norm"), "weight_norm"),
        "normalize": (bool(cfg.get("normalize", False)), False),
        "chunk_length_s": (cfg.get("chunk_length_s"), None),
    }
    bad = {k: v for k, (v, ok) in unsupported.items() if v != ok}
    if bad:
        raise CheckpointError(
            f"unsupported EnCodec settings {bad}: only the MusicGen-style codec "
            "(weight norm, no input renormalization, no chunking) is implemented"
        )
    hidden = cfg.get("hidden_size", 128)
    if cfg.get("codebook_dim") not in (None, hidden):
        raise CheckpointError(f"codebook_dim {cfg['codebook_dim']} != hidden_size {hidden} (projections unsupported)")
    ratios = tuple(cfg.get("upsampling_ratios", (8, 5, 4, 2)))
    sample_rate = cfg.get("sampling_rate", 24000)
    codebook_size = cfg.get("codebook_size", 1024)
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    bandwidths = cfg.get("target_bandwidths") or [1.5]
    num_codebooks = int(1000 * bandwidths[-1] // (frame_rate * math.ceil(math.log2(codebook_size))))
    return CodecConfig(
        sample_rate=sample_rate,
        channels=cfg.get("audio_channels", 1),
        dimension=hidden,
        n_filters=cfg.get("num_filters", 32),
        ratios=ratios,
        n_residual_layers=cfg.get("num_residual_layers", 1),
        kernel_size=cfg.get("kernel_size", 7),
        last_kernel_size=cfg.get("last_kernel_size", 7),
        residual_kernel_size=cfg.get("residual_kernel_size", 3),
        dilation_base=cfg.get("dilation_growth_rate", 2),
        compress=cfg.get("compress", 2),
        lstm_layers=cfg.get("num_lstm_layers", 2),
        pad_mode=cfg.get("pad_mode", "reflect"),
        causal=cfg.get("use_causal_conv", True),
        true_skip=not cfg.get("use_conv_shortcut", True),
        trim_right_ratio=cfg.get("trim_right_ratio", 1.0),
        num_codebooks=num_codebooks,
        codebook_size=codebook_size,
    )


def config_to_hf(config: CodecConfig) -> dict:
    """The transformers `EncodecConfig` dict of `config` (the inverse of `config_from_hf`)."""
    bandwidth = config.num_codebooks * config.frame_rate * math.ceil(math.log2(config.codebook_size)) / 1000
    cfg = {
        "model_type": "encodec",
        "sampling_rate": config.sample_rate,
        "audio_channels": config.channels,
        "hidden_size": config.dimension,
        "codebook_dim": config.dimension,
        "num_filters": config.n_filters,
        "upsampling_ratios": list(config.ratios),
        "num_residual_layers": config.n_residual_layers,
        "kernel_size": config.kernel_size,
        "last_kernel_size": config.last_kernel_size,
        "residual_kernel_size": config.residual_kernel_size,
        "dilation_growth_rate": config.dilation_base,
        "compress": config.compress,
        "num_lstm_layers": config.lstm_layers,
        "pad_mode": config.pad_mode,
        "use_causal_conv": config.causal,
        "use_conv_shortcut": not config.true_skip,
        "trim_right_ratio": config.trim_right_ratio,
        "codebook_size": config.codebook_size,
        "target_bandwidths": [bandwidth],
        "norm_type": "weight_norm",
        "normalize": False,
        "chunk_length_s": None,
    }
    if config_from_hf(cfg) != config:
        raise CheckpointError(f"the codec {config} has no transformers EncodecConfig")
    return cfg


def _resolve_interpolations(node, root):
    """Resolve OmegaConf `${a.b}` references in a YAML tree (audiocraft stores its config unresolved)."""
    if isinstance(node, dict):
        return {k: _resolve_interpolations(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_interpolations(v, root) for v in node]
    if isinstance(node, str) and (m := re.fullmatch(r"\$\{([\w.]+)\}", node)):
        value = root
        for part in m.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise CheckpointError(f"audiocraft config: unresolvable reference {node}")
            value = value[part]
        return _resolve_interpolations(value, root)
    return node


def parse_audiocraft_cfg(xp_cfg: str | dict) -> dict:
    """The `xp.cfg` of an audiocraft package (a YAML string) or of a solver checkpoint (a dict, read by
    `read_torch_pickle(configs=True)`) as a plain dict, references resolved."""
    try:
        cfg = yaml.safe_load(xp_cfg) if isinstance(xp_cfg, str) else xp_cfg
    except yaml.YAMLError as e:
        raise CheckpointError(f"audiocraft package: corrupt xp.cfg YAML: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError("audiocraft package: xp.cfg is not a YAML mapping")
    return _resolve_interpolations(cfg, cfg)


def config_from_audiocraft(cfg: dict) -> CodecConfig:
    """CodecConfig from a resolved audiocraft compression-model config (`seanet`, `rvq`, `encodec`)."""
    try:
        if cfg.get("compression_model", "encodec") != "encodec" or cfg["encodec"]["quantizer"] != "rvq":
            raise CheckpointError("audiocraft package: only EnCodec with an RVQ quantizer is supported")
        seanet = dict(cfg["seanet"])
        seanet.update(seanet.pop("encoder", None) or {})
        decoder_only = seanet.pop("decoder", None) or {}
        if cfg["encodec"].get("renormalize") or seanet.get("norm") not in ("weight_norm", "none"):
            raise CheckpointError(
                f"audiocraft package: unsupported renormalize/norm "
                f"({cfg['encodec'].get('renormalize')}, {seanet.get('norm')})"
            )
        if decoder_only.get("final_activation") or seanet.get("disable_norm_outer_blocks", 0):
            raise CheckpointError("audiocraft package: final activations / un-normalized outer blocks unsupported")
        if seanet.get("activation", "ELU") != "ELU" or (seanet.get("activation_params") or {}).get("alpha", 1.0) != 1.0:
            raise CheckpointError(f"audiocraft package: only ELU(alpha=1) is supported, got {seanet.get('activation')}")
        return CodecConfig(
            sample_rate=cfg["sample_rate"],
            channels=cfg["channels"],
            dimension=seanet["dimension"],
            n_filters=seanet["n_filters"],
            ratios=tuple(seanet["ratios"]),
            n_residual_layers=seanet["n_residual_layers"],
            kernel_size=seanet["kernel_size"],
            last_kernel_size=seanet["last_kernel_size"],
            residual_kernel_size=seanet["residual_kernel_size"],
            dilation_base=seanet["dilation_base"],
            compress=seanet["compress"],
            lstm_layers=seanet["lstm"],
            pad_mode=seanet["pad_mode"],
            causal=seanet["causal"],
            true_skip=seanet["true_skip"],
            trim_right_ratio=decoder_only.get("trim_right_ratio", 1.0),
            num_codebooks=cfg["rvq"]["n_q"],
            codebook_size=cfg["rvq"]["bins"],
        )
    except KeyError as e:
        raise CheckpointError(f"audiocraft package: xp.cfg lacks the setting {e}") from e


def audiocraft_to_hf_key(key: str) -> str:
    """`encoder.model.3.conv.conv.weight_g` -> `encoder.layers.3.conv.weight_g` (transformers'
    `convert_encodec_checkpoint_to_pytorch.py`)."""
    for old, new in (
        (".model.", ".layers."),
        (".conv.conv.", ".conv."),
        (".convtr.convtr.", ".conv."),
        ("quantizer.vq.layers.", "quantizer.layers."),
        ("._codebook.", ".codebook."),
    ):
        key = key.replace(old, new)
    return key


def audiocraft_cfg(config: CodecConfig) -> str:
    """The `xp.cfg` YAML of an audiocraft EnCodec package for `config` (the inverse of
    `config_from_audiocraft`), laid out as audiocraft's compression config (encodec / seanet / rvq)."""
    cfg = {
        "sample_rate": config.sample_rate,
        "channels": config.channels,
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": "${sample_rate}",
            "channels": "${channels}",
            "causal": config.causal,
            "renormalize": False,
        },
        "seanet": {
            "dimension": config.dimension,
            "channels": "${channels}",
            "causal": "${encodec.causal}",
            "n_filters": config.n_filters,
            "n_residual_layers": config.n_residual_layers,
            "ratios": list(config.ratios),
            "activation": "ELU",
            "activation_params": {"alpha": 1.0},
            "norm": "weight_norm",
            "norm_params": {},
            "kernel_size": config.kernel_size,
            "residual_kernel_size": config.residual_kernel_size,
            "last_kernel_size": config.last_kernel_size,
            "dilation_base": config.dilation_base,
            "pad_mode": config.pad_mode,
            "true_skip": config.true_skip,
            "compress": config.compress,
            "lstm": config.lstm_layers,
            "disable_norm_outer_blocks": 0,
            "decoder": {
                "trim_right_ratio": config.trim_right_ratio,
                "final_activation": None,
                "final_activation_params": None,
            },
            "encoder": {},
        },
        "rvq": {
            "n_q": config.num_codebooks,
            "q_dropout": False,
            "bins": config.codebook_size,
            "decay": 0.99,
            "kmeans_init": True,
            "kmeans_iters": 50,
            "threshold_ema_dead_code": 2,
        },
    }
    text = yaml.safe_dump(cfg, sort_keys=False)
    if config_from_audiocraft(parse_audiocraft_cfg(text)) != config:
        raise CheckpointError(f"the codec {config} has no audiocraft config")
    return text


def audiocraft_state_dict(params, config: CodecConfig) -> dict[str, np.ndarray]:
    """audiocraft EnCodec `best_state` tensors of codec `params` (`hf_state_dict`'s split, weight norm as
    `weight_g` / `weight_v`, under audiocraft's names: the inverse of `audiocraft_to_hf_key`)."""
    convtr = {i for i, (kind, _) in enumerate(decoder_layers(config)) if kind == "convtr"}
    out = {}
    for key, value in hf_state_dict(params, config).items():
        hf_name = key.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        )
        name = hf_name.replace("quantizer.layers.", "quantizer.vq.layers.").replace(".codebook.", "._codebook.")
        if layer := re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", name):
            part, index, rest = layer.groups()
            conv = "convtr.convtr." if part == "decoder" and int(index) in convtr else "conv.conv."
            rest = re.sub(r"^((?:block\.\d+\.|shortcut\.)?)conv\.", lambda m, conv=conv: m.group(1) + conv, rest)
            name = f"{part}.model.{index}.{rest}"
        if audiocraft_to_hf_key(name) != hf_name:
            raise CheckpointError(f"no audiocraft name for the codec tensor {key} (got {name})")
        out[name] = value
    return out


def fold_weight_norm(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace weight-norm pairs (`weight_g`/`weight_v` or `parametrizations.weight.original0/1`)
    by `weight = v * g / ||v||`, the norm over all dims but 0, in float32."""
    out, pairs = {}, {}
    for key, value in state.items():
        m = re.fullmatch(r"(.*)\.(?:weight_(g|v)|parametrizations\.weight\.original([01]))", key)
        if m:
            part = m.group(2) or "gv"[int(m.group(3))]
            pairs.setdefault(m.group(1), {})[part] = (key, value)
        else:
            out[key] = value
    for base, parts in pairs.items():
        if set(parts) != {"g", "v"}:
            ((key, value),) = parts.values()
            out[key] = value  # an unpaired half: reported as unexpected, its partner as missing
            continue
        g, v = parts["g"][1].astype(np.float32), parts["v"][1].astype(np.float32)
        norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
        out[f"{base}.weight"] = v * (g / norm)
    return out


def hf_key_map(config: CodecConfig) -> dict[str, Target]:
    """Every HF EncodecModel key that the codec needs, mapped to its parameter."""
    keys = {}
    for part, layers in (("encoder", encoder_layers(config)), ("decoder", decoder_layers(config))):
        for i, (kind, kwargs) in enumerate(layers):
            hf, ours = f"{part}.layers.{i}", (part, f"layers_{i}")
            convs = {
                "conv": [("conv", (), "conv")],
                "convtr": [("conv", (), "convtr")],
                "res": [(f"block.{j}.conv", (f"block_{j}",), "conv") for j in (1, 3)]
                + ([] if config.true_skip else [("shortcut.conv", ("shortcut",), "conv")]),
            }.get(kind, [])
            for name, sub, layout in convs:
                keys[f"{hf}.{name}.weight"] = Target(ours + sub + ("kernel",), layout)
                keys[f"{hf}.{name}.bias"] = Target(ours + sub + ("bias",))
            if kind == "lstm":
                for n in range(kwargs["num_layers"]):
                    layer = ours + (f"layer_{n}",)
                    keys[f"{hf}.lstm.weight_ih_l{n}"] = Target(layer + ("kernel_ih",), "linear")
                    keys[f"{hf}.lstm.weight_hh_l{n}"] = Target(layer + ("kernel_hh",), "linear")
                    keys[f"{hf}.lstm.bias_ih_l{n}"] = Target(layer + ("bias",), "sum")
                    keys[f"{hf}.lstm.bias_hh_l{n}"] = Target(layer + ("bias",), "sum")
    for q in range(config.num_codebooks):
        keys[f"quantizer.layers.{q}.codebook.embed"] = Target(("quantizer", "codebooks"), "stack", q)
    return keys


def hf_state_dict(params, config: CodecConfig) -> dict[str, np.ndarray]:
    """transformers `EncodecModel` tensors of codec `params` (the inverse of `params_from_hf_state_dict`):
    each convolution weight w as weight norm `original0` g = ||w|| (over all dims but 0) and `original1`
    v = w, which fold back to w exactly; each LSTM layer's bias as `bias_ih`, `bias_hh` zeros; the
    quantizer's training buffers as a trained codebook's with unit cluster sizes (`embed_avg` = `embed`)."""
    keys = hf_key_map(config)
    state = {}
    for key, value in disassemble(params, keys).items():
        if key.endswith(".weight") and keys[key].layout in ("conv", "convtr"):
            base = key[: -len(".weight")] + ".parametrizations.weight"
            state[f"{base}.original0"] = np.sqrt(np.sum(value * value, axis=(1, 2), keepdims=True))
            state[f"{base}.original1"] = value
        else:
            state[key] = value
    for q in range(config.num_codebooks):
        prefix = f"quantizer.layers.{q}.codebook"
        state[f"{prefix}.inited"] = np.ones(1, np.float32)
        state[f"{prefix}.cluster_size"] = np.ones(config.codebook_size, np.float32)
        state[f"{prefix}.embed_avg"] = state[f"{prefix}.embed"].copy()
    return state


def expected_shapes(config: CodecConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every codec parameter, keyed by its path below "params"."""
    return param_shapes(
        lambda: EncodecModel(config).init(
            jax.random.key(0), np.zeros((1, config.channels, config.hop_length), np.float32)
        )
    )


def describe(config: CodecConfig, source: str) -> str:
    return (
        f"{source} (EnCodec, {config.num_codebooks} codebooks, {config.n_filters} filters, "
        f"ratios {list(config.ratios)})"
    )


def params_from_hf_state_dict(state: dict[str, np.ndarray], config: CodecConfig, source: str = "checkpoint"):
    """Codec parameters from HF-named EnCodec tensors (weight norm folded here); raises CheckpointError
    listing every missing key, unexpected key and wrong shape."""
    unused = [f"quantizer.layers.{q}.codebook.{b}" for q in range(config.num_codebooks) for b in TRAINING_BUFFERS]
    return assemble(
        fold_weight_norm(state), hf_key_map(config), expected_shapes(config), describe(config, source), unused
    )


def check_params(params, config: CodecConfig, source: str):
    """Converted codec parameters checked against the config (see `keymap.check_tree`)."""
    return check_tree(params, expected_shapes(config), describe(config, source))


def save_codec(codec: Codec, directory: str | os.PathLike) -> Path:
    """Write `codec` in this project's format (`config.json` + `params.safetensors`)."""
    meta = {
        "format": NATIVE_FORMAT,
        "version": 1,
        "stereo": codec.stereo,
        "config": codec.config.to_dict(),
        "source": codec.source,
    }
    return native.save_tree(directory, jax.device_get(codec.params), meta)


def load_native_codec(directory: str | os.PathLike, stereo: bool | None = None) -> Codec:
    """A codec written by `save_codec` (`stereo` overrides the recorded layout)."""
    params, meta = native.load_tree(Path(directory))
    if meta.get("format") != NATIVE_FORMAT:
        raise CheckpointError(f"{directory}: not a converted codec (format {meta.get('format')!r})")
    config = CodecConfig.from_dict(meta["config"])
    params = check_params(params, config, str(directory))
    return Codec(config, params, meta["stereo"] if stereo is None else stereo, meta.get("source"))
