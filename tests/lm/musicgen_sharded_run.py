"""Run by `tests/lm/test_sharding.py` in a fresh process with 8 host devices: `MusicGen` end to end (text
encoding, decode loop, audio decoding) for a batch of 8 prompts on a data-parallel mesh (data 8) and on a
(data 4, tensor 2) mesh, a continuation and a stream of 3 prompts there, and `sample.py --mesh data=8`,
against one device. Usage: musicgen_sharded_run.py
CONVERTED_DIR; `emit`s the result."""

import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from musicgen_jax.cli import sample
from musicgen_jax.codec.model import _decode
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.sampling import generate_tokens, lower_generate, row_keys
from musicgen_jax.sharding import make_mesh
from musicgen_jax.text.encoder import encode_ids
from tests.processes import emit

PROMPTS = [
    "warm jazz piano trio",
    "fast techno",
    "a slow cello solo",
    "ambient drones with rain",
    "rock guitar riff",
    "",
    "lofi hip hop beat",
    "brass fanfare in a big hall",
]
FRAMES = 16
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(compiled) -> int:
    text = compiled.as_text()
    return sum(text.count(op) for op in COLLECTIVES)


def split(x: jax.Array) -> dict:
    """How `x` lies on the devices: the shard shape, and the number of devices holding a piece of it."""
    return {"shard_shape": list(x.sharding.shard_shape(x.shape)), "devices": len(x.sharding.device_set)}


def run(model: MusicGen) -> dict:
    model.set_generation_params(duration=FRAMES / model.frame_rate, top_k=8)
    wav, codes = model.generate(PROMPTS, return_tokens=True, seed=5)
    # each stage alone, as generate runs it, to see where its outputs lie
    text, mask = model.text_encoder(PROMPTS)
    keys = row_keys(5 + np.arange(len(PROMPTS)))
    tokens = generate_tokens(
        model.lm_config, model.lm_params, text, mask, keys, FRAMES, model.sampling, mesh=model.mesh
    )
    audio = model.codec.decode(np.asarray(tokens))
    ids, ids_mask = model.text_encoder.tokenizer(PROMPTS)
    t5 = encode_ids.lower(
        model.text_encoder.config, model.text_encoder.params, ids, ids_mask, mesh=model.mesh
    ).compile()
    codec = _decode.lower(model.codec.config, model.codec.params, np.asarray(tokens), False, mesh=model.mesh).compile()
    lm = lower_generate(
        model.lm_config, model.lm_params, text, mask, keys, FRAMES, model.sampling, mesh=model.mesh
    ).compile()
    lm_params, t5_params = model.lm_params["params"], model.text_encoder.params["params"]
    odd = PROMPTS[:3]  # a batch that does not divide the mesh's batch split: padded, then dropped
    _, continued = model.generate_continuation(wav[:3, :, :1280], model.sample_rate, odd, return_tokens=True, seed=5)
    streamed = np.concatenate(list(model.stream_tokens(odd, seed=5)), axis=-1)
    rows = {
        "text": model.text_encoder(odd)[0].shape[0],
        "encode": model.codec.encode(wav[:3, :, :1280]).shape[0],
        "decode": model.codec.decode(codes[:3]).shape[0],
    }
    return {
        "codes": codes.tolist(),
        "wav": wav,
        "odd": {"continued": continued.tolist(), "streamed": streamed.tolist()},
        "odd_rows": rows,
        "stage_codes_equal": bool((np.asarray(tokens) == codes).all()),
        "text": split(text),
        "tokens": split(tokens),
        "audio": split(audio),
        "collectives": {"t5": collectives(t5), "lm": collectives(lm), "codec": collectives(codec)},
        "lm_fc1": split(lm_params["layers_0"]["fc1"]["kernel"]),
        "t5_wi": split(t5_params["block_0"]["mlp"]["wi"]["kernel"]),
        "codec_kernel": split(model.codec.params["params"]["decoder"]["layers_0"]["kernel"]),
    }


def sample_py(directory: str, out: Path) -> list:
    """The codes `sample.py --mesh data=8` saves for PROMPTS, as `run` samples them."""
    args = [
        "--model",
        directory,
        "--duration",
        str(FRAMES / 50),
        "--top-k",
        "8",
        "--seed",
        "5",
        "--mesh",
        "data=8",
        "--dtype",
        "float32",
        "--out",
        str(out / "audio"),
        "--save-codes",
        str(out / "codes.npy"),
    ]
    assert sample.main(args + [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]) == 0
    return np.load(out / "codes.npy").tolist()


def main(directory: str):
    single = run(MusicGen.get_pretrained(directory, dtype="float32"))
    out = {"devices": len(jax.devices()), "single_text_effect": len({str(c) for c in single["codes"]})}
    with tempfile.TemporaryDirectory() as tmp:
        out["sample_py_codes_equal"] = sample_py(directory, Path(tmp)) == single["codes"]
    for name, mesh in (("data", make_mesh(data=8)), ("tensor", make_mesh(data=4, tensor=2))):
        got = run(MusicGen.get_pretrained(directory, dtype="float32", mesh=mesh))
        scale = float(np.abs(single["wav"]).max())
        out[name] = {
            **{k: v for k, v in got.items() if k not in ("codes", "wav", "odd")},
            "codes_equal": got["codes"] == single["codes"],
            "odd_equal": got["odd"] == single["odd"],
            "odd_shapes": [list(np.shape(got["odd"][k])) for k in ("continued", "streamed")],
            "wav_diff": float(np.abs(got["wav"] - single["wav"]).max()) / scale,
        }
    out["single"] = {k: single[k] for k in ("text", "tokens", "audio", "codec_kernel")}
    emit(out)


if __name__ == "__main__":
    main(sys.argv[1])
