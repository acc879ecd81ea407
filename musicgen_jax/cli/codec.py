"""Audio tokenizer CLI: audio files <-> EnCodec codes, and codec conversion.

  python -m musicgen_jax.codec encode --codec SRC IN_AUDIO OUT.npy
  python -m musicgen_jax.codec decode --codec SRC IN.npy OUT_AUDIO
  python -m musicgen_jax.codec convert SRC OUT_DIR
  python -m musicgen_jax.codec roundtrip --codec SRC [--input IN_AUDIO] OUT_DIR

SRC is a hub id (facebook/encodec_32khz, facebook/musicgen-small, ...), a PyTorch checkpoint
(transformers directory or audiocraft compression_state_dict.bin) or a directory written by
`convert`. OUT.npy holds integer codes [B, K, T] (int16; stereo codecs interleave [L0, R0, L1, ...]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from musicgen_jax.audio import NORMALIZE_STRATEGIES, AudioError, read_audio, write_audio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.codec.converted import save_codec
from musicgen_jax.convert.codec_loader import load_codec
from musicgen_jax.fileio import load_npy, make_dirs, path, save_npy

DEFAULT_CODEC = "facebook/encodec_32khz"


def encode(args) -> str:
    codec = load_codec(args.codec, args.stereo)
    wav, _ = read_audio(args.input, sample_rate=codec.sample_rate, channels=codec.channels)
    codes = np.asarray(codec.encode(wav[None])).astype(np.int16)
    save_npy(args.output, codes)
    return (
        f"{args.input}: {wav.shape[-1] / codec.sample_rate:.2f} s -> codes {list(codes.shape)} "
        f"({codec.frame_rate} Hz) in {args.output}"
    )


def decode(args) -> str:
    codec = load_codec(args.codec, args.stereo)
    try:
        codes = load_npy(args.input)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read codes from {args.input}: {e}") from e
    if codes.ndim == 2:
        codes = codes[None]
    wav = np.asarray(codec.decode(codes))
    if wav.shape[0] != 1:
        paths = [args.output.with_name(f"{args.output.stem}_{i}{args.output.suffix}") for i in range(wav.shape[0])]
    else:
        paths = [args.output]
    for where, item in zip(paths, wav, strict=True):
        write_audio(where, item, codec.sample_rate, strategy=args.strategy)
    return f"{args.input}: codes {list(codes.shape)} -> {wav.shape[-1] / codec.sample_rate:.2f} s in " + ", ".join(
        map(str, paths)
    )


def convert(args) -> str:
    codec = load_codec(args.source, args.stereo)
    save_codec(codec, args.output)
    return f"{args.source} -> {args.output} ({codec.num_codebooks} codebooks, {codec.channels} channel(s))"


def generated_clip(seconds: float, sample_rate: int) -> np.ndarray:
    """An arpeggio of decaying harmonic tones (A minor), `[1, T]` float32 in [-0.5, 0.5]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    note_s = 0.25
    freqs = 220.0 * 2 ** (np.array([0, 3, 7, 12, 7, 3]) / 12)
    f = freqs[(t // note_s).astype(int) % len(freqs)]
    envelope = np.exp(-6.0 * (t % note_s))
    tone = sum(np.sin(2 * np.pi * h * f * t) / h for h in (1, 2, 3))
    return (0.5 * envelope * tone / np.abs(tone).max()).astype(np.float32)[None]


def roundtrip(args) -> str:
    try:
        codec = load_codec(args.codec, args.stereo)
        origin = args.codec
    except CheckpointError as e:
        if not args.fallback_random:
            raise
        import jax

        from musicgen_jax.codec.model import Codec, init_params
        from musicgen_jax.config import ENCODEC_32KHZ

        print(
            f"warning: {e}\nwarning: using RANDOM real-size weights instead: the reconstruction will be noise",
            file=sys.stderr,
        )
        codec = Codec(ENCODEC_32KHZ, init_params(ENCODEC_32KHZ, jax.random.key(0)), bool(args.stereo))
        origin = "random weights"
    if args.input is None:
        wav = generated_clip(args.seconds, codec.sample_rate)
        wav = np.repeat(wav, codec.channels, axis=0)
        origin_input = f"a generated {args.seconds:g} s clip"
    else:
        wav, _ = read_audio(args.input, sample_rate=codec.sample_rate, channels=codec.channels)
        origin_input = str(args.input)
    codes = codec.encode(wav[None])
    out = np.asarray(codec.decode(codes))[0, :, : wav.shape[-1]]
    make_dirs(args.output)
    write_audio(args.output / "input.wav", wav, codec.sample_rate, strategy="none")
    save_npy(args.output / "codes.npy", np.asarray(codes).astype(np.int16))
    write_audio(args.output / "reconstruction.wav", out, codec.sample_rate, strategy="none")
    err = float(np.linalg.norm(out - wav) / max(np.linalg.norm(wav), 1e-12))
    return (
        f"codec round trip of {origin_input} through {origin}: codes {list(codes.shape)} "
        f"({codec.frame_rate} Hz x {codec.num_codebooks} codebooks), relative L2 error {err:.3f}; "
        f"wrote input.wav, codes.npy, reconstruction.wav to {args.output}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.codec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    stereo = argparse.ArgumentParser(add_help=False)
    group = stereo.add_mutually_exclusive_group()
    group.add_argument(
        "--stereo",
        dest="stereo",
        action="store_true",
        default=None,
        help="code two channels with interleaved codebooks (default: from the checkpoint)",
    )
    group.add_argument("--mono", dest="stereo", action="store_false", help="force mono coding")

    p = sub.add_parser("encode", parents=[stereo], help="audio file -> codes .npy")
    p.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec source (default {DEFAULT_CODEC})")
    p.add_argument("input", type=path, help="audio file (wav, flac, mp3, ogg; any rate and channel count)")
    p.add_argument("output", type=path, help="output .npy of int16 codes [1, K, T]")
    p.set_defaults(run=encode)

    p = sub.add_parser("decode", parents=[stereo], help="codes .npy -> audio file")
    p.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec source (default {DEFAULT_CODEC})")
    p.add_argument(
        "--strategy",
        default="peak",
        choices=NORMALIZE_STRATEGIES,
        help="loudness normalization of the written audio (default peak, as audiocraft)",
    )
    p.add_argument("input", type=path, help=".npy of integer codes [B, K, T] or [K, T]")
    p.add_argument("output", type=path, help="output .wav or .flac (batch items get _0, _1, ... suffixes)")
    p.set_defaults(run=decode)

    p = sub.add_parser("convert", parents=[stereo], help="PyTorch codec checkpoint -> converted directory")
    p.add_argument("source", help="hub id or local checkpoint")
    p.add_argument("output", type=Path, help="output directory (config.json + params.safetensors)")
    p.set_defaults(run=convert)

    p = sub.add_parser("roundtrip", parents=[stereo], help="encode + decode a clip, write both to listen")
    p.add_argument("--codec", default=DEFAULT_CODEC, help=f"codec source (default {DEFAULT_CODEC})")
    p.add_argument("--input", type=path, help="audio file (default: a generated clip)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the generated clip (default 5)")
    p.add_argument(
        "--fallback-random",
        action="store_true",
        help="if the codec cannot be loaded (e.g. no network), say so and use random weights",
    )
    p.add_argument("output", type=path, help="output directory")
    p.set_defaults(run=roundtrip)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(args.run(args))
    except (CheckpointError, AudioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
