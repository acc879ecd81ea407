"""Run by `tests/train/test_trainer.py` in a fresh process with 8 host devices: one train step of the tiny
converted MusicGen on (data 2, fsdp 4) and (data 2, tensor 4) meshes against one device. Usage:
sharded_step.py CHECKPOINT_DIR; `emit`s the result."""

import sys

import jax
import numpy as np

from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import OptimConfig, StepConfig, compile_step, global_batch, init_state
from tests.processes import emit


def batch(components, size: int = 8, frames: int = 10) -> dict:
    rng = np.random.default_rng(0)
    texts = ["calm piano", "energetic rock song with electric guitars", None, "lofi beat"] * (size // 4)
    ids, mask = components.text_encoder.tokenizer(texts)
    codes = rng.integers(0, 2048, (size, components.lm_config.num_codebooks, frames)).astype(np.int32)
    valid = np.ones(codes.shape, bool)
    valid[1::3, :, 6:] = False
    return {"codes": codes, "mask": valid, "text_ids": ids, "text_mask": mask}


def run(config, components, mesh, data):
    step = compile_step(config, mesh)
    state = init_state(config, 0, mesh, components.lm_params)
    t5 = components.text_encoder.params
    state, metrics = step(state, global_batch(data, mesh), t5)
    params = jax.tree.leaves(jax.device_get(state.params))
    return float(metrics["loss"]), params, state, step


def main(directory: str):
    components = convert_checkpoint(directory)
    config = StepConfig(
        components.lm_config,
        components.text_encoder.config,
        OptimConfig(lr=1e-3, warmup_steps=0, total_steps=10),
        cfg_dropout=0.5,
        ema_every=1,
    )
    data = batch(components)
    one = make_mesh(devices=jax.devices()[:1])
    loss, params, _, _ = run(config, components, one, data)
    initial = jax.tree.leaves(jax.device_get(components.lm_params))
    out = {
        "devices": jax.device_count(),
        "loss": loss,
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(params, initial)),
    }
    for name, mesh in (("fsdp", make_mesh(data=2, fsdp=4)), ("tensor", make_mesh(data=2, tensor=4))):
        got, got_params, state, step = run(config, components, mesh, data)
        kernel = state.params["params"]["layers_0"]["fc1"]["kernel"]
        moment = state.opt_state[1][0].mu["params"]["layers_0"]["fc1"]["kernel"]
        out[name] = {
            "loss": got,
            "param_rel": max(float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(got_params, params)),
            "kernel_shard": list(kernel.sharding.shard_shape(kernel.shape)),
            "moment_shard": list(moment.sharding.shard_shape(moment.shape)),
            "ema_shard": list(state.ema["params"]["layers_0"]["fc1"]["kernel"].sharding.shard_shape(kernel.shape)),
        }
    emit(out)


if __name__ == "__main__":
    main(sys.argv[1])
