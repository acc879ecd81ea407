"""CLAP checkpoints -> `CLAP` parameters: transformers' `ClapModel` (`config.json` + `model.safetensors`,
e.g. `laion/larger_clap_music`) and laion_clap's `.pt` (`{"state_dict": ...}`, keys under `module.`, e.g.
`music_audioset_epoch_15_esc_90.14.pt`, which audiocraft reads with `load_clap_state_dict`).

Both key maps are generated from the config (stage depths, text layers), so every tensor is checked:
a missing, unexpected or wrongly shaped key raises a CheckpointError naming it. Buffers derived from
the config (relative position indices, shift masks, STFT and mel kernels) and the training-only heads
(HTSAT's classifier, laion_clap's `*_transform` MLPs, logit scales) are read as unused.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.checkpoint import files
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.checkpoint.keymap import Target, assemble, param_shapes
from musicgen_jax.metrics import networks
from musicgen_jax.metrics.clap.audio import AudioConfig, AudioTower
from musicgen_jax.metrics.clap.model import CLAP, DEFAULT_SOURCE, DEFAULT_TOKENIZER, CLAPConfig
from musicgen_jax.metrics.clap.text import RobertaTokenizer, TextConfig, TextTower


def shapes(config: CLAPConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every parameter's shape, paths under ("audio", ...) and ("text", ...)."""
    audio, text = AudioTower(config.audio), TextTower(config.text)
    mel = jnp.zeros((1, config.audio.frames, config.audio.mel_bins))
    ids = jnp.zeros((1, config.text.context_length), jnp.int32)
    out = {("audio", *p): s for p, s in param_shapes(lambda: audio.init(jax.random.PRNGKey(0), mel)).items()}
    out.update({("text", *p): s for p, s in param_shapes(lambda: text.init(jax.random.PRNGKey(0), ids, ids)).items()})
    return out


def _linear(key: str, path: tuple[str, ...], bias: bool = True) -> dict[str, Target]:
    out = {f"{key}.weight": Target(path + ("kernel",), "linear")}
    if bias:
        out[f"{key}.bias"] = Target(path + ("bias",))
    return out


def _norm(key: str, path: tuple[str, ...]) -> dict[str, Target]:
    return {f"{key}.weight": Target(path + ("scale",)), f"{key}.bias": Target(path + ("bias",))}


def _text_map(config: TextConfig, prefix: str) -> dict[str, Target]:
    """RoBERTa's keys (transformers' `RobertaModel` / `ClapTextModel` names) under `prefix`."""
    t = ("text",)
    m = {
        f"{prefix}embeddings.word_embeddings.weight": Target(t + ("word_embeddings", "embedding")),
        f"{prefix}embeddings.position_embeddings.weight": Target(t + ("position_embeddings", "embedding")),
        f"{prefix}embeddings.token_type_embeddings.weight": Target(t + ("token_type_embeddings",)),
        **_norm(f"{prefix}embeddings.LayerNorm", t + ("embeddings_norm",)),
        **_linear(f"{prefix}pooler.dense", t + ("pooler",)),
    }
    for i in range(config.num_layers):
        k, p = f"{prefix}encoder.layer.{i}.", t + (f"layer_{i}",)
        for name in ("query", "key", "value"):
            m.update(_linear(f"{k}attention.self.{name}", p + (name,)))
        m.update(_linear(f"{k}attention.output.dense", p + ("attention_out",)))
        m.update(_norm(f"{k}attention.output.LayerNorm", p + ("attention_norm",)))
        m.update(_linear(f"{k}intermediate.dense", p + ("intermediate",)))
        m.update(_linear(f"{k}output.dense", p + ("output",)))
        m.update(_norm(f"{k}output.LayerNorm", p + ("output_norm",)))
    return m


def _audio_map(config: AudioConfig, prefix: str, names: dict[str, str]) -> dict[str, Target]:
    """HTSAT's keys under `prefix`; `names` spells the per-block modules (they differ between layouts)."""
    a = ("audio", "htsat")
    m = {
        f"{prefix}{names['bn']}.weight": Target(a + ("scale",)),
        f"{prefix}{names['bn']}.bias": Target(a + ("bias",)),
        f"{prefix}{names['bn']}.running_mean": Target(a + ("mean",)),
        f"{prefix}{names['bn']}.running_var": Target(a + ("var",)),
        **_linear(f"{prefix}patch_embed.proj", a + ("patch_embed",)),  # the 4 x 4 conv, flattened by `_flat_conv`
        **_norm(f"{prefix}patch_embed.norm", a + ("patch_norm",)),
        **_norm(f"{prefix}norm", a + ("norm",)),
    }
    for s, depth in enumerate(config.depths):
        for i in range(depth):
            k, p = f"{prefix}layers.{s}.blocks.{i}.", a + (f"layers_{s}_blocks_{i}",)
            m.update(_norm(k + names["norm1"], p + ("norm1",)))
            m.update(_norm(k + names["norm2"], p + ("norm2",)))
            for name in ("query", "key", "value"):
                m.update(_linear(k + names[name], p + ("attn", name)))
            m.update(_linear(k + names["proj"], p + ("attn", "proj")))
            m[k + names["table"]] = Target(p + ("attn", "relative_position_bias_table"))
            m.update(_linear(k + names["fc1"], p + ("fc1",)))
            m.update(_linear(k + names["fc2"], p + ("fc2",)))
        if s < len(config.depths) - 1:
            k, p = f"{prefix}layers.{s}.downsample.", a + (f"layers_{s}_downsample",)
            m.update(_linear(k + "reduction", p + ("reduction",), bias=False))
            m.update(_norm(k + "norm", p + ("norm",)))
    return m


HF_NAMES = {
    "bn": "batch_norm",
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "proj": "attention.output.dense",
    "table": "attention.self.relative_position_bias_table",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
}
LAION_NAMES = {
    "bn": "bn0",
    "norm1": "norm1",
    "norm2": "norm2",
    "query": "attn.qkv[query]",  # the fused qkv projection, split by `_split_qkv`
    "key": "attn.qkv[key]",
    "value": "attn.qkv[value]",
    "proj": "attn.proj",
    "table": "attn.relative_position_bias_table",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}


def hf_key_map(config: CLAPConfig) -> dict[str, Target]:
    """transformers' `ClapModel` state dict keys -> our parameters."""
    return {
        **_audio_map(config.audio, "audio_model.audio_encoder.", HF_NAMES),
        **_linear("audio_projection.linear1", ("audio", "projection", "linear1")),
        **_linear("audio_projection.linear2", ("audio", "projection", "linear2")),
        **_text_map(config.text, "text_model."),
        **_linear("text_projection.linear1", ("text", "projection", "linear1")),
        **_linear("text_projection.linear2", ("text", "projection", "linear2")),
    }


def laion_key_map(config: CLAPConfig) -> dict[str, Target]:
    """laion_clap's `CLAP` state dict keys (`module.` removed) -> our parameters."""
    return {
        **_audio_map(config.audio, "audio_branch.", LAION_NAMES),
        **_linear("audio_projection.0", ("audio", "projection", "linear1")),
        **_linear("audio_projection.2", ("audio", "projection", "linear2")),
        **_text_map(config.text, "text_branch."),
        **_linear("text_projection.0", ("text", "projection", "linear1")),
        **_linear("text_projection.2", ("text", "projection", "linear2")),
    }


# Keys a checkpoint carries that the embeddings do not use (buffers rebuilt from the config, heads).
HF_UNUSED = re.compile(
    r"logit_scale_[at]|.*\.num_batches_tracked|.*relative_position_index|.*\.position_ids|.*\.token_type_ids"
)
LAION_UNUSED = re.compile(
    r"logit_scale_[at]|.*\.num_batches_tracked|.*relative_position_index|.*attn_mask|.*\.position_ids"
    r"|audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\..*|(audio|text)_transform\..*"
)


def _flat_conv(state: dict[str, np.ndarray], key: str) -> None:
    """The patch embedding's conv [out, in, kh, kw] as the linear map [out, in * kh * kw] of a patch."""
    if key in state and state[key].ndim == 4:
        state[key] = state[key].reshape(state[key].shape[0], -1)


def _split_qkv(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """laion_clap's fused `attn.qkv` ([3C, C], rows q, k, v) as `attn.qkv[query]` etc."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"(.*attn\.qkv)\.(weight|bias)", key)
        if not m:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise CheckpointError(f"{key}: {value.shape[0]} rows, not a fused q, k, v projection")
        for name, part in zip(("query", "key", "value"), np.split(value, 3), strict=True):
            out[f"{m.group(1)}[{name}].{m.group(2)}"] = part
    return out


def config_from_hf(hf: dict, preprocessor: dict | None) -> CLAPConfig:
    """CLAPConfig from a transformers `ClapConfig` dict and its `preprocessor_config.json` (if any)."""
    if hf.get("model_type") != "clap":
        raise CheckpointError(f"config.json has model_type {hf.get('model_type')!r}, expected 'clap'")
    a, t = hf.get("audio_config") or {}, hf.get("text_config") or {}
    if a.get("enable_fusion"):
        raise CheckpointError("a CLAP with feature fusion: only enable_fusion=False (what audiocraft uses) is ported")
    acts = {
        "audio projection_hidden_act": (a.get("projection_hidden_act", "relu"), "relu"),
        "text projection_hidden_act": (t.get("projection_hidden_act", "relu"), "relu"),
        "audio hidden_act": (a.get("hidden_act", "gelu"), "gelu"),
        "text hidden_act": (t.get("hidden_act", "gelu"), "gelu"),
        "patch_size": (a.get("patch_size", 4), 4),
        "patch_stride": (list(np.broadcast_to(a.get("patch_stride", 4), 2)), [4, 4]),
    }
    bad = {name: found for name, (found, ok) in acts.items() if found != ok}
    if bad:
        raise CheckpointError(f"unsupported CLAP settings {bad}: expected {dict((k, v[1]) for k, v in acts.items())}")
    pre = preprocessor or {}
    projection = hf.get("projection_dim", 512)
    default = AudioConfig()
    audio = AudioConfig(
        sample_rate=pre.get("sampling_rate", default.sample_rate),
        clip_samples=pre.get("max_length_s", 10) * pre.get("sampling_rate", default.sample_rate),
        window_size=pre.get("fft_window_size", default.window_size),
        hop_size=pre.get("hop_length", default.hop_size),
        mel_bins=a.get("num_mel_bins", default.mel_bins),
        fmin=pre.get("frequency_min", default.fmin),
        fmax=pre.get("frequency_max", default.fmax),
        spec_size=a.get("spec_size", default.spec_size),
        embed_dim=a.get("patch_embeds_hidden_size", default.embed_dim),
        depths=tuple(a.get("depths", default.depths)),
        num_heads=tuple(a.get("num_attention_heads", default.num_heads)),
        window=a.get("window_size", default.window),
        mlp_ratio=a.get("mlp_ratio", default.mlp_ratio),
        layer_norm_eps=a.get("layer_norm_eps", default.layer_norm_eps),
        projection_dim=projection,
    )
    text = TextConfig(
        vocab_size=t.get("vocab_size", 50265),
        hidden_size=t.get("hidden_size", 768),
        num_layers=t.get("num_hidden_layers", 12),
        num_heads=t.get("num_attention_heads", 12),
        intermediate_size=t.get("intermediate_size", 3072),
        max_positions=t.get("max_position_embeddings", 514),
        type_vocab_size=t.get("type_vocab_size", 1),
        pad_token_id=t.get("pad_token_id", 1),
        layer_norm_eps=t.get("layer_norm_eps", 1e-12),
        projection_dim=projection,
    )
    return CLAPConfig(audio, text)


def config_from_laion(state: dict[str, np.ndarray]) -> CLAPConfig:
    """CLAPConfig of a laion_clap state dict, read off its tensors' shapes (the audio front end and the
    text tower's heads / eps are laion_clap's `HTSAT-*.json` and roberta-base's, which its keys don't hold)."""
    try:
        embed_dim = state["audio_branch.patch_embed.proj.weight"].shape[0]
        depths, heads = [], []
        while f"audio_branch.layers.{len(depths)}.blocks.0.norm1.weight" in state:
            s = len(depths)
            depths.append(
                sum(1 for k in state if re.fullmatch(rf"audio_branch\.layers\.{s}\.blocks\.\d+\.norm1\.weight", k))
            )
            heads.append(state[f"audio_branch.layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1])
        rows = state["audio_branch.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        hidden = state["text_branch.embeddings.word_embeddings.weight"].shape[1]
        audio = AudioConfig(
            mel_bins=state["audio_branch.bn0.weight"].shape[0],
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(heads),
            window=(round(rows**0.5) + 1) // 2,
            projection_dim=state["audio_projection.0.weight"].shape[0],
        )
        text = TextConfig(
            vocab_size=state["text_branch.embeddings.word_embeddings.weight"].shape[0],
            hidden_size=hidden,
            num_layers=sum(
                1 for k in state if re.fullmatch(r"text_branch\.encoder\.layer\.\d+\.output\.dense\.bias", k)
            ),
            num_heads=hidden // 64,
            intermediate_size=state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
            max_positions=state["text_branch.embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=state["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
            projection_dim=state["text_projection.0.weight"].shape[0],
        )
    except KeyError as e:
        raise CheckpointError(f"not a laion_clap HTSAT + RoBERTa checkpoint: no {e.args[0]}") from e
    if not depths:
        raise CheckpointError("not a laion_clap HTSAT checkpoint: no audio_branch.layers.0.blocks.0 keys")
    return CLAPConfig(audio, text)


def read_laion(path: Path) -> dict[str, np.ndarray]:
    """A laion_clap checkpoint's tensors: its `state_dict` (or the pickle itself), `module.` removed."""
    raw = files.read_torch_pickle(path)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a laion_clap checkpoint (no state_dict)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return files.tensors_to_numpy({k: v for k, v in state.items() if hasattr(v, "shape")})


def _tokenizer_files(source: str | os.PathLike) -> dict[str, str]:
    tok = RobertaTokenizer.from_pretrained(source)
    return {name: content.decode("latin-1") for name, content in tok.files.items()}


def convert(path: Path, tokenizer: str | os.PathLike = DEFAULT_TOKENIZER) -> tuple[dict, dict]:
    """`({"params": {"audio": ..., "text": ...}}, config dict)` of a transformers `ClapModel` directory or
    a laion_clap `.pt`. The config dict is `CLAPConfig.to_dict()` plus `"tokenizer"`: RoBERTa's tokenizer
    files (name -> text), from the checkpoint directory if it has them, else from `tokenizer`."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        config = config_from_hf(
            files.read_json(path / "config.json"),
            files.read_json(path / "preprocessor_config.json")
            if (path / "preprocessor_config.json").is_file()
            else None,
        )
        state = files.read_hf_weights(path)
        _flat_conv(state, "audio_model.audio_encoder.patch_embed.proj.weight")
        unused = [k for k in state if HF_UNUSED.fullmatch(k)]
        params = assemble(state, hf_key_map(config), shapes(config), f"CLAP checkpoint {path}", unused)
        has_tokenizer = (path / "vocab.json").is_file() or (path / "tokenizer.json").is_file()
        tokenizer = path if has_tokenizer else tokenizer
    else:
        if path.is_dir():
            found = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
            if len(found) != 1:
                raise CheckpointError(f"{path}: expected a ClapModel config.json or one laion_clap .pt, found {found}")
            path = found[0]
        state = read_laion(path)
        config = config_from_laion(state)
        _flat_conv(state, "audio_branch.patch_embed.proj.weight")
        state = _split_qkv(state)
        unused = [k for k in state if LAION_UNUSED.fullmatch(k)]
        params = assemble(state, laion_key_map(config), shapes(config), f"laion_clap checkpoint {path}", unused)
    params = {"params": {k: params["params"][k] for k in ("audio", "text")}}
    return params, {**config.to_dict(), "tokenizer": _tokenizer_files(tokenizer)}


def load_clap(
    source: str | os.PathLike = DEFAULT_SOURCE,
    tokenizer: str | os.PathLike | None = None,
    batch_size: int = 8,
    mesh=None,
) -> CLAP:
    """CLAP from a laion_clap `.pt` (default: audiocraft's, `music_audioset_epoch_15_esc_90.14.pt` on the hub),
    a transformers `ClapModel` directory or hub id (`laion/larger_clap_music`), or a converted directory
    (`musicgen_jax.metrics.networks`). `tokenizer`: where the RoBERTa tokenizer files come from when the
    checkpoint has none (a laion_clap `.pt`); default `roberta-base`. The files are kept in the converted
    directory's config, so later loads need no tokenizer source; an explicit `tokenizer` wins over them."""
    params, meta = networks.load("clap", source, functools.partial(convert, tokenizer=tokenizer or DEFAULT_TOKENIZER))
    config = CLAPConfig.from_dict(meta)
    files = {name: content.encode("latin-1") for name, content in meta.get("tokenizer", {}).items()}
    if tokenizer is not None:
        tok = RobertaTokenizer.from_pretrained(tokenizer, config.text.context_length)
    else:
        tok = RobertaTokenizer.from_files(files, config.text.context_length) if files else None
    return CLAP(params["params"], config, tok, batch_size, mesh)
