"""Benchmark the EnCodec codec: JAX (`musicgen_jax`) against transformers' PyTorch `EncodecModel`.

Both sides run the real-size 32 kHz architecture (MusicGen's codec: 64 filters, ratios [8, 5, 4, 4],
hidden size 128, 4 codebooks of 2048 entries, 2 LSTM layers, non-causal) on the SAME random weights:
the transformers model is built with a fixed seed, saved with `save_pretrained` and loaded into JAX
with `load_codec`. Before timing, the script checks that both sides compute the same thing (fraction
of equal codes, relative L2 of the decoded audio).

Timing: JAX compiles on the first call per shape, so that call is reported apart ("compile+run");
then `--runs` further calls, each waited for with `jax.block_until_ready`. PyTorch runs under
`torch.inference_mode()` with as many threads as the process may use cores, after one warm-up call.
The timed calls alternate between JAX and PyTorch, so that a slow spell of a shared machine hits both.
Both decoders decode the same codes (the PyTorch ones). The table gives medians (and minima).

    .venv/bin/python -m benchmarks.codec --write     # writes the codec section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from transformers import EncodecConfig, EncodecModel

from benchmarks.common import (
    RESULTS,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    publish,
    time_pair,
    usable_cores,
)
from musicgen_jax.convert.codec_loader import load_codec

SECTION_TITLE = "## Codec (EnCodec 32 kHz, real size, random weights)"


def hf_config() -> EncodecConfig:
    """MusicGen's 32 kHz EnCodec architecture (real size)."""
    return EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=64,
        hidden_size=128,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=2048,
        use_causal_conv=False,
        use_conv_shortcut=False,
        pad_mode="reflect",
        normalize=False,
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
    print(
        f"input [{batch}, 1, {wav.shape[-1]}] ({seconds:g} s at {sample_rate} Hz); jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads",
        flush=True,
    )

    def torch_encode():
        with torch.inference_mode():
            return model.encode(wav_torch).audio_codes

    def torch_decode(codes):
        with torch.inference_mode():
            return model.decode(codes, [None]).audio_values

    print("encode ...", flush=True)
    counters, start = cpu_counters(), time.perf_counter()
    encode = time_pair(lambda: jax.block_until_ready(codec.encode(wav)), torch_encode, runs)
    codes_torch = encode["torch_out"]  # [1 (chunks), B, K, T']
    codes_ref, codes_jax = codes_torch[0].numpy(), np.asarray(encode["jax_out"])
    print("decode ...", flush=True)
    decode = time_pair(lambda: jax.block_until_ready(codec.decode(codes_ref)), lambda: torch_decode(codes_torch), runs)

    others = other_load(counters, cpu_counters(), time.perf_counter() - start)
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


def report(res: dict, command: str) -> str:
    """The markdown section (title, provenance, correctness, table)."""
    rows = []
    for direction in ("encode", "decode"):
        first, jax_times = res["times"][direction]["jax"]
        torch_times = res["times"][direction]["torch"][1]
        (jax_med, jax_min), (torch_med, torch_min) = median_min(jax_times), median_min(torch_times)
        rows.append(
            f"| {direction} | {jax_med:.3f} (min {jax_min:.3f}) | {first:.3f} "
            f"| {torch_med:.3f} (min {torch_min:.3f}) | {torch_med / jax_med:.2f} "
            f"| {jax_med / (res['seconds'] * res['batch']):.4f} "
            f"| {torch_med / (res['seconds'] * res['batch']):.4f} |"
        )
    b, k, t = res["codes_shape"]
    timing = (
        f"median (min) over {res['runs']} runs, JAX and PyTorch alternating, after a first call (JAX: "
        f"compile+run, reported apart; PyTorch: warm-up); both decoders decode the PyTorch codes"
    )
    others = (
        f"other processes used {res['others']} of the machine's CPU time during the timed calls (from "
        f"/proc/stat; near 0% means undisturbed timings)"
    )
    same = (
        f"{100 * res['codes_equal']:.4f}% of JAX codes equal PyTorch's ({res['distinct_codes']} distinct "
        f"first-stage codes); decoded audio relative L2 {res['audio_rel_l2']:.2e}"
    )
    header = (
        "| direction | JAX median s | JAX compile+run s | PyTorch median s | speed ratio (PyTorch/JAX) "
        "| JAX real-time factor | PyTorch real-time factor |"
    )
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(res["threads"], res["load"], torch_mode="`torch.inference_mode()`"),
        f"- During the run: {others}",
        f"- Input: batch {res['batch']} x {res['seconds']:g} s mono at 32 kHz; codes [{b}, {k}, {t}]",
        f"- Timing: {timing}",
        f"- Same computation: {same}",
        "",
        header,
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Real-time factor: processing time / audio duration (below 1 is faster than real time).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.codec",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length in seconds")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per direction and framework")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument("--write", action="store_true", help=f"write the codec section of {RESULTS}")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or args.batch < 1:
        parser.error("--seconds must be > 0, --runs and --batch >= 1")
    res = run(args.seconds, args.runs, args.batch)
    publish(report(res, command_line("benchmarks.codec", argv)), args.write)


if __name__ == "__main__":
    main()
