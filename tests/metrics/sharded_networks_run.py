"""The metric networks with their batches split over 8 host devices (`networks.local_mesh`) against one device:
VGGish, a 1-block PaSST and a 1-block-per-stage HTSAT (random weights), 3 clips each (a count the 8-way split
does not divide). Usage: sharded_networks_run.py (with XLA_FLAGS giving 8 host devices; see tests/processes.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from musicgen_jax.metrics.clap.audio import AudioConfig, AudioTower, log_mel
from musicgen_jax.metrics.clap.model import CLAP, CLAPConfig
from musicgen_jax.metrics.networks import local_mesh
from musicgen_jax.metrics.passt.model import PaSST, PasstConfig, PasstNet, num_frames
from musicgen_jax.metrics.vggish.model import VGG, VGGish, VGGishConfig
from tests.processes import emit


def _random(params, scale: float = 0.1):
    """Every parameter moved by N(0, scale); variances (batch-norm statistics) kept positive."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(nn.unbox(params))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    moved = [x + scale * jax.random.normal(k, x.shape) for (_, x), k in zip(leaves, keys)]
    moved = [jnp.abs(x) if "var" in jax.tree_util.keystr(path) else x for (path, _), x in zip(leaves, moved)]
    return jax.tree.unflatten(tree, moved)


def main() -> None:
    mesh = local_mesh()
    rng = np.random.default_rng(0)
    out = {"devices": jax.device_count(), "mesh": dict(mesh.shape)}

    config = VGGishConfig()
    params = _random(VGG(config).init(jax.random.key(0), jnp.zeros((1, 96, 64))))
    vggish = VGGish(config, params)
    clips = rng.standard_normal((3, 24_000)).astype(np.float32) * 0.3
    one, split = vggish.embed(clips), dataclasses.replace(vggish, mesh=mesh).embed(clips)
    out["vggish"] = [list(one.shape), float(np.abs(one - split).max() / np.abs(one).max())]

    config = PasstConfig(depth=1)
    mel = jnp.zeros((1, config.n_mels, num_frames(config.sample_rate, config)))
    params = _random(PasstNet(config).init(jax.random.key(0), mel))
    clips = rng.standard_normal((3, 32_000)).astype(np.float32) * 0.3
    one, split = PaSST(params, config).logits(clips), PaSST(params, config, mesh=mesh).logits(clips)
    out["passt"] = [list(one.shape), float(np.abs(one - split).max() / np.abs(one).max())]

    audio = AudioConfig(depths=(1, 1, 1, 1))
    wav = jnp.zeros((1, audio.clip_samples))
    params = _random(AudioTower(audio).init(jax.random.key(0), log_mel(wav, audio)))["params"]
    config = CLAPConfig(audio=audio)
    clips = rng.standard_normal((3, 96_000)).astype(np.float32) * 0.3
    embed = [CLAP({"audio": params, "text": {}}, config, None, 2, m).audio_embeddings(clips) for m in (None, mesh)]
    out["clap"] = [list(embed[0].shape), float(np.abs(embed[0] - embed[1]).max() / np.abs(embed[0]).max())]
    emit(out)


if __name__ == "__main__":
    main()
