"""Benchmark the EnCodec codec: JAX (`musicgen_jax`) against transformers' PyTorch `EncodecModel`.

Both sides run MusicGen's 32 kHz codec at real size on the same random weights (built with a fixed seed,
`save_pretrained`, loaded into JAX with `load_codec`), check that they compute the same codes and audio, and
time encode and decode of the same input in alternation.

    .venv/bin/python -m benchmarks.codec --write     # writes the codec section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import tempfile

import jax
import numpy as np
import torch
import transformers
from transformers import EncodecConfig, EncodecModel

from benchmarks.common import (
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    parser,
    publish,
    section,
    table,
    time_pair,
    usable_cores,
    with_min,
)
from musicgen_jax.convert.codec_loader import load_codec

SECTION_TITLE = "## Codec (EnCodec 32 kHz, real size, random weights)"


def hf_config(**options) -> EncodecConfig:
    """MusicGen's 32 kHz EnCodec architecture (real size), `options` changed."""
    return EncodecConfig(
        **{
            "sampling_rate": 32000,
            "audio_channels": 1,
            "num_filters": 64,
            "hidden_size": 128,
            "upsampling_ratios": [8, 5, 4, 4],
            "target_bandwidths": [2.2],
            "codebook_size": 2048,
            "use_causal_conv": False,
            "use_conv_shortcut": False,
            "pad_mode": "reflect",
            "normalize": False,
            **options,
        }
    )


def build_hf_model(seed: int = 0) -> EncodecModel:
    """transformers' default random init, with the codebooks (zeros there) drawn from a normal
    distribution at the per-channel scale of the encoder's latents, stage q at 0.5**q of it, so
    that codes vary with the input as in a trained residual quantizer."""
    torch.manual_seed(seed)
    model = EncodecModel(hf_config()).eval()
    with torch.inference_mode():
        latents = model.encoder(0.1 * torch.randn(2, 1, 32000)).transpose(1, 2).flatten(0, 1)
        mean, std = latents.mean(0), latents.std(0)
        for q, layer in enumerate(model.quantizer.layers):
            embed = layer.codebook.embed
            embed.copy_(torch.randn(embed.shape) * std * 0.5**q + (mean if q == 0 else 0.0))
    return model


def test_audio(batch: int, samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """[batch, 1, samples] float32: a few random sinusoids plus noise, peak around 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    freqs = rng.uniform(50.0, 4000.0, size=(batch, 6, 1))
    tones = np.sin(2 * np.pi * freqs * t + rng.uniform(0, 2 * np.pi, size=(batch, 6, 1))).sum(1) / 6
    wav = 0.4 * tones + 0.05 * rng.standard_normal((batch, samples))
    return wav[:, None, :].astype(np.float32)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(seconds: float, runs: int, batch: int) -> dict:
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    model = build_hf_model()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        codec = load_codec(tmp)
    sample_rate = codec.sample_rate
    wav = test_audio(batch, round(seconds * sample_rate), sample_rate)
    wav_torch = torch.from_numpy(wav)
    print(f"input [{batch}, 1, {wav.shape[-1]}] ({seconds:g} s at {sample_rate} Hz)", flush=True)

    def torch_encode():
        with torch.inference_mode():
            return model.encode(wav_torch).audio_codes

    def torch_decode(codes):
        with torch.inference_mode():
            return model.decode(codes, [None]).audio_values

    print("encode ...", flush=True)
    counters = cpu_counters()
    encode = time_pair(lambda: jax.block_until_ready(codec.encode(wav)), torch_encode, runs)
    codes_torch = encode["torch_out"]  # [1 (chunks), B, K, T']
    codes_ref, codes_jax = codes_torch[0].numpy(), np.asarray(encode["jax_out"])
    print("decode ...", flush=True)
    decode = time_pair(lambda: jax.block_until_ready(codec.decode(codes_ref)), lambda: torch_decode(codes_torch), runs)

    others = other_load(counters)
    audio_ref, audio_jax = decode["torch_out"].numpy(), np.asarray(decode["jax_out"])
    if codes_jax.shape != codes_ref.shape or audio_jax.shape != audio_ref.shape:
        raise RuntimeError(
            f"shape mismatch: codes {codes_jax.shape} vs {codes_ref.shape}, "
            f"audio {audio_jax.shape} vs {audio_ref.shape}"
        )
    return {
        "seconds": seconds,
        "runs": runs,
        "batch": batch,
        "threads": threads,
        "load": (load_before, load_average()),
        "others": others,
        "times": {"encode": encode, "decode": decode},
        "codes_equal": float(np.mean(codes_jax == codes_ref)),
        "codes_shape": codes_ref.shape,
        "distinct_codes": len(np.unique(codes_ref[:, 0])),
        "audio_rel_l2": rel_l2(audio_jax, audio_ref),
    }


NOTES = (
    "- Timing: median (min) over {runs} runs, JAX and PyTorch alternating, after a first call (JAX: compile+run, "
    "reported apart; PyTorch: warm-up, under `torch.inference_mode()`); both decoders decode the PyTorch codes"
)
COLUMNS = {
    "direction": "{}",
    "JAX median s": with_min(3),
    "JAX compile+run s": "{:.3f}",
    "PyTorch median s": with_min(3),
    "speed ratio (PyTorch/JAX)": "{:.2f}",
    "JAX real-time factor": "{:.4f}",
    "PyTorch real-time factor": "{:.4f}",
}


def report(res: dict, command: str) -> str:
    """The RESULTS.md section: provenance, the agreement of both sides, one row per direction."""
    rows = []
    for direction in ("encode", "decode"):
        first, jax_times = res["times"][direction]["jax"]
        jax_t, torch_t = median_min(jax_times), median_min(res["times"][direction]["torch"][1])
        audio = res["seconds"] * res["batch"]
        rows.append((direction, jax_t, first, torch_t, torch_t[0] / jax_t[0], jax_t[0] / audio, torch_t[0] / audio))
    b, k, t = res["codes_shape"]
    facts = [
        *machine_lines(res["threads"], res["load"], torch_mode="`torch.inference_mode()`", others=res["others"]),
        f"- Input: batch {res['batch']} x {res['seconds']:g} s mono at 32 kHz; codes [{b}, {k}, {t}]",
        NOTES.format(runs=res["runs"]),
        f"- Same computation: {100 * res['codes_equal']:.4f}% of JAX codes equal PyTorch's ({res['distinct_codes']} "
        f"distinct first-stage codes); decoded audio relative L2 {res['audio_rel_l2']:.2e}",
    ]
    footnote = "Real-time factor: processing time / audio duration (below 1 is faster than real time)."
    return section(SECTION_TITLE, command, facts, table(COLUMNS, rows), footnote)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.codec", __doc__)
    p.add_argument("--seconds", type=float, default=30.0, help="audio length in seconds")
    p.add_argument("--runs", type=int, default=5, help="timed runs per direction and framework")
    p.add_argument("--batch", type=int, default=1, help="batch size")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or args.batch < 1:
        p.error("--seconds must be > 0, --runs and --batch >= 1")
    publish(report(run(args.seconds, args.runs, args.batch), command_line("benchmarks.codec", argv)), args.write)


if __name__ == "__main__":
    main()
