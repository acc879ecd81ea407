"""A training run's directory (`train.py`'s WORKDIR): where its Orbax checkpoints are, the LM its config
and dataset describe, its EMA weights, and the run as MusicGen components (the EMA weights of its latest
checkpoint, with the codec its dataset was coded with and the text encoder it trained with), so a run can
be listened to while it trains (`MusicGen.get_pretrained(WORKDIR)`, `sample.py --model WORKDIR`).

A checkpoint holds two Orbax items: `state` (the train state) and `meta` (JSON: the resolved config and
the data pipeline's position)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import jax
from flax.traverse_util import flatten_dict, unflatten_dict

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.chroma import num_frames
from musicgen_jax.components import Components
from musicgen_jax.config import DATASET_INFO_FILE, ChromaConfig, LMConfig, interleaved_delays
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.extras import require
from musicgen_jax.fileio import path, read_json, reporting, scheme
from musicgen_jax.lm.model import merge_lora, unstack_layers
from musicgen_jax.text.encoder import T5TextEncoder

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

CHECKPOINTS = "checkpoints"
CHROMA_FIELDS = ("sample_rate", "n_fft", "hop_length", "bins")  # of `ChromaConfig`, in dataset.json's `chroma`


def run_lm_config(config: dict, info: dict, text_dim: int) -> LMConfig:
    """The LM of a run: sizes from its config (`model`), codebooks and cardinality from its dataset's codec
    (`dataset.json`), delays from `codebooks.delays` or else one step per codebook (interleaved stereo
    codebooks: [0, 0, 1, 1, ...]); ValueError where `codebooks` disagrees with the dataset. A melody run
    (`melody`) takes the dataset's chroma bins, and as many chroma frames as a crop of `frames` codec
    frames has (235 for 30 s)."""
    k, stereo = info["num_codebooks"], info.get("codec", {}).get("stereo", False)
    books = config.get("codebooks") or {}  # runs from before it: the defaults
    data = f"the dataset {config['data_dir']} ({info.get('codec', {}).get('source', 'its codec')})"
    for name, theirs in (("n_q", k), ("card", info["card"])):
        if books.get(name) and books[name] != theirs:
            raise ValueError(f"config.codebooks.{name} is {books[name]}, but {data} has {theirs}")
    delays = tuple(books.get("delays") or ()) or interleaved_delays(k, 2 if stereo else 1)
    if len(delays) != k:
        raise ValueError(f"config.codebooks.delays gives {len(delays)} delays, but {data} has {k} codebooks")
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


def dataset_codec(info: dict, what: str = "the run"):
    """The codec a dataset's codes come from (its dataset.json: source, stereo), coding with as many codebooks
    as the dataset holds (a DAC may have coded with its first few); CheckpointError when the dataset names none."""
    codec = info.get("codec") or {}
    if not codec.get("source"):
        raise CheckpointError(f"{what} needs the dataset's codec, which its dataset.json does not name")
    return load_codec(codec["source"], stereo=codec.get("stereo", False), num_codebooks=info["num_codebooks"])


def checkpoint_manager(workdir: str | os.PathLike, keep: int | None = None) -> ocp.CheckpointManager:
    """The Orbax manager of `WORKDIR/checkpoints` (`keep`: the last so many kept, a run's writer; None: a reader)."""
    import orbax.checkpoint as ocp  # slow to import: only where checkpoints are read or written

    directory = path(workdir) / CHECKPOINTS
    if scheme(directory) == "gs":  # Orbax imports it for a bucket's checkpoints
        require("google.cloud.storage", "gcs", f"checkpoints in {directory}")
    if keep is None:
        return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    # a checkpoint a killed run left unfinished (on GCS: without its commit_success.txt) is removed first, by
    # process 0 while the others wait: saving its step again would wait on a directory it cannot create
    if jax.process_index() == 0 and directory.exists():
        for name in ocp.path.step.tmp_checkpoints(directory):
            (directory / name).rmtree()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("musicgen_jax: unfinished checkpoints removed")
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def is_run(workdir: str | os.PathLike) -> bool:
    """A `train.py` work directory with at least one complete checkpoint."""
    with reporting(workdir):
        if not (path(workdir) / CHECKPOINTS).is_dir():
            return False
        with checkpoint_manager(workdir) as manager:
            return manager.latest_step() is not None


def ema_weights(params: Any, ema: Any):
    """The EMA weights of the whole model (`{"params": ...}`) from a run's parameters and their EMA (with
    adapters the EMA holds only the trained ones, the frozen weights are the parameters)."""
    return unflatten_dict({**flatten_dict(params), **flatten_dict(ema)})


def load_run(workdir: str | os.PathLike) -> Components:
    """The `Components` of the latest checkpoint of the run in `workdir` (its EMA weights)."""
    workdir = path(workdir)
    with reporting(workdir):
        started = (workdir / CHECKPOINTS).is_dir()
    if not started:
        raise CheckpointError(f"{workdir}: no complete checkpoint in {workdir / CHECKPOINTS}")
    with checkpoint_manager(workdir) as manager:
        step = manager.latest_step()
        if step is None:
            raise CheckpointError(f"{workdir}: no complete checkpoint in {workdir / CHECKPOINTS}")
        directory = workdir / CHECKPOINTS / str(step)
        try:
            import orbax.checkpoint as ocp

            items = ocp.args.Composite(meta=ocp.args.JsonRestore(), state=ocp.args.StandardRestore())
            restored = manager.restore(step, args=items)
            config, state = restored["meta"]["config"], restored["state"]
            info = read_json(path(config["data_dir"]) / DATASET_INFO_FILE)
        except (OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"cannot read the run checkpoint {directory}: {type(e).__name__} {e}") from e
    text_encoder = T5TextEncoder.from_pretrained(config["text_encoder"])
    params = jax.device_get(ema_weights(state["params"], state["ema"]))  # restored as a dict
    if config.get("lora_rank"):
        params = jax.device_get(merge_lora(params))
    if config.get("scan_layers"):
        params = unstack_layers(params)
    codec = dataset_codec(info, str(workdir))
    return Components(
        codec,
        text_encoder,
        run_lm_config(config, info, text_encoder.config.d_model),
        params,
        f"{workdir} (step {step}, EMA weights)",
    )
