"""A training run (`train.py`'s WORKDIR) as MusicGen components: the EMA weights of its latest
checkpoint, with the codec its dataset was coded with and the text encoder it trained with, so a run
can be listened to while it trains (`MusicGen.get_pretrained(WORKDIR)`, `sample.py --model WORKDIR`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax

from musicgen_jax.chroma import num_frames
from musicgen_jax.config import ChromaConfig, LMConfig, interleaved_delays
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.convert.torch_io import CheckpointError

CHECKPOINTS = "checkpoints"
DATASET_INFO = "dataset.json"
CHROMA_FIELDS = ("sample_rate", "n_fft", "hop_length", "bins")  # of `ChromaConfig`, in dataset.json's `chroma`


def run_lm_config(config: dict, info: dict, text_dim: int) -> LMConfig:
    """The LM of a run: sizes from its config (`model`), codebooks and cardinality from its dataset's codec
    (`dataset.json`; interleaved stereo codebooks get the delays [0, 0, 1, 1, ...]). A melody run
    (`melody`) takes the dataset's chroma bins, and as many chroma frames as a crop of `frames` codec
    frames has (235 for 30 s)."""
    k, stereo = info["num_codebooks"], info.get("codec", {}).get("stereo", False)
    delays = interleaved_delays(k, 2 if stereo else 1)
    model = config["model"]
    melody = {}
    if config.get("melody"):
        chroma = info.get("chroma")
        if not chroma:
            raise ValueError(
                f"config.melody needs a dataset with chroma; {config['data_dir']} has none (prepare it with --chroma)"
            )
        codec = info["codec"]
        samples = config["frames"] * codec["sample_rate"] // codec["frame_rate"]
        melody = {
            "chroma_bins": chroma["bins"],
            "chroma_frames": num_frames(samples, ChromaConfig(**{name: chroma[name] for name in CHROMA_FIELDS})),
        }
    return LMConfig(
        dim=model["dim"],
        num_heads=model["num_heads"],
        num_layers=model["num_layers"],
        ffn_dim=model["ffn_dim"],
        card=info["card"],
        delays=delays,
        text_dim=text_dim,
        **melody,
    )


def _steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "commit_success.txt").exists())


def is_run(path: Path) -> bool:
    """A `train.py` work directory with at least one complete checkpoint."""
    return (path / CHECKPOINTS).is_dir() and bool(_steps(path / CHECKPOINTS))


def ema_weights(state: dict):
    """The EMA weights of the whole model (`{"params": ...}`) from a run's state: its EMA over its
    parameters (with adapters the EMA holds only the trained ones, the frozen weights are the parameters)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    return unflatten_dict({**flatten_dict(state["params"]), **flatten_dict(state["ema"])})


def load_run(workdir: str | os.PathLike):
    """`pretrained.Components` of the latest checkpoint of the run in `workdir` (its EMA weights)."""
    import orbax.checkpoint as ocp

    from musicgen_jax.convert.pretrained import Components
    from musicgen_jax.lm.model import merge_lora, unstack_layers
    from musicgen_jax.text.encoder import T5TextEncoder

    workdir = Path(workdir)
    if not is_run(workdir):
        raise CheckpointError(f"{workdir}: no complete checkpoint in {workdir / CHECKPOINTS}")
    step = _steps(workdir / CHECKPOINTS)[-1]
    directory = workdir / CHECKPOINTS / str(step)
    try:
        config = json.loads((directory / "meta" / "metadata").read_text())["config"]
        info = json.loads((Path(config["data_dir"]) / DATASET_INFO).read_text())
        codec_source, stereo = info["codec"]["source"], info["codec"]["stereo"]
        state = ocp.StandardCheckpointer().restore((directory / "state").absolute())
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"cannot read the run checkpoint {directory}: {type(e).__name__} {e}") from e
    text_encoder = T5TextEncoder.from_pretrained(config["text_encoder"])
    params = jax.device_get(ema_weights(state))
    if config.get("lora_rank"):
        params = jax.device_get(merge_lora(params))
    if config.get("scan_layers"):
        params = unstack_layers(params)
    codec = load_codec(codec_source, stereo=stereo)
    return Components(
        codec,
        text_encoder,
        run_lm_config(config, info, text_encoder.config.d_model),
        params,
        f"{workdir} (step {step}, EMA weights)",
    )
