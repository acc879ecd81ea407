"""Generate music from text prompts (and optionally an audio prompt to continue).

  python sample.py --prompt "lofi hip hop with a jazzy piano" --duration 8 --out lofi.wav
  python sample.py --prompts-file prompts.txt --out outputs/ --format flac
  python sample.py --model converted/musicgen-small --prompt "epic orchestra" --continuation intro.wav
  python sample.py --model facebook/musicgen-melody --prompt "80s synth pop" --melody bach.mp3
  python sample.py --prompts-file prompts.txt --out outputs/ --batch-size 64 --mesh data=-1   # over all GPUs

Prompt i is sampled with seed `--seed + i`, so its random draws do not depend on `--batch-size` or on
the other prompts (its bits may: XLA can round a matrix product differently for another batch size).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh

from musicgen_jax.audio import NORMALIZE_STRATEGIES, AudioError, read_audio, write_audio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.extras import MissingExtraError
from musicgen_jax.fileio import StorageError, is_url, path, read_text, save_npy, slug
from musicgen_jax.lm.model import INFERENCE_DTYPES
from musicgen_jax.musicgen import DEFAULT_MODEL, MusicGen, disable_compilation_cache, enable_compilation_cache
from musicgen_jax.sharding import make_mesh, parse_mesh


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id, PyTorch checkpoint directory or converted directory (default {DEFAULT_MODEL})",
    )
    p.add_argument("--prompt", action="append", default=[], help="text prompt (repeatable: one output each)")
    p.add_argument("--prompts-file", type=path, help="a file (or URL) with one prompt per line")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of audio (default 10)")
    p.add_argument("--top-k", type=int, default=250, help="top-k sampling (default 250; 1 = greedy)")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling, overrides top-k when > 0")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--cfg-coef", type=float, default=3.0, help="classifier-free guidance (default 3)")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    p.add_argument("--continuation", type=path, help="audio file to continue (its codes start every output)")
    p.add_argument(
        "--melody",
        type=path,
        action="append",
        default=[],
        help="audio file whose melody (chroma) the music follows, melody models only (repeatable: one "
        "per prompt in order, or one for all)",
    )
    p.add_argument(
        "--melody-stems",
        action="store_true",
        help="take the melody from the vocals and other stems (Demucs, as audiocraft; needs the "
        "melody extra), not from the whole mix (as transformers)",
    )
    p.add_argument(
        "--out",
        type=path,
        default="out",
        help="output file for a single prompt, else a directory of NNN_<slug>.<format>; a path or a URL (default out)",
    )
    p.add_argument("--format", choices=("wav", "flac"), default="wav")
    p.add_argument(
        "--strategy",
        choices=NORMALIZE_STRATEGIES,
        default="loudness",
        help="normalization (default loudness; none writes the decoder output as 32-bit float WAV)",
    )
    p.add_argument("--save-codes", type=path, help="also save the generated codes [B, K, T] (int16) to this .npy")
    p.add_argument(
        "--dtype",
        choices=("auto", *INFERENCE_DTYPES),
        default="auto",
        help="the LM's weights and matrix products (auto: bfloat16 on GPU / TPU, float32 on CPU)",
    )
    p.add_argument(
        "--mesh",
        metavar="AXIS=SIZE,...",
        help="split the model over the devices of every host: data=-1 spreads the batch of prompts over "
        "all of them, data=4,tensor=2 also splits the LM's and T5's weights in two (axes data, "
        "fsdp, tensor; -1: the rest of the devices; default: one device)",
    )
    p.add_argument(
        "--compilation-cache",
        type=str,
        help="keep compiled programs here for later runs (default JAX_COMPILATION_CACHE_DIR when "
        "set, else $MUSICGEN_JAX_CACHE/xla)",
    )
    p.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help="compile from scratch and keep nothing, even where JAX_COMPILATION_CACHE_DIR is set",
    )
    return p


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file is not None:
        try:
            lines = [line.strip() for line in read_text(args.prompts_file).splitlines() if line.strip()]
        except StorageError as e:  # it names the file
            raise ValueError(f"--prompts-file: {e}") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"--prompts-file {args.prompts_file}: {e}") from e
        if not lines:
            raise ValueError(f"--prompts-file {args.prompts_file} is empty (no non-blank line)")
        prompts += lines
    if not prompts:
        raise ValueError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def output_paths(args, prompts: list[str]) -> list[epath.Path]:
    if len(prompts) == 1 and args.out.suffix:
        return [args.out.with_suffix(f".{args.format}")]
    return [args.out / f"{i:03d}_{slug(p)}.{args.format}" for i, p in enumerate(prompts)]


def read_melodies(args, model: MusicGen, count: int) -> list[np.ndarray]:
    """Audio `[C, T]` at the model's rate per prompt from --melody (given once, or once per prompt)."""
    if not args.melody:
        return []
    if not model.lm_config.melody:
        raise ValueError(
            f"--melody: {args.model} is a text-to-music model, it takes no melody (use a melody model, "
            "e.g. facebook/musicgen-melody)"
        )
    if len(args.melody) not in (1, count):
        raise ValueError(
            f"--melody given {len(args.melody)} times for {count} prompts: give it once for all "
            "prompts or once per prompt"
        )
    if args.continuation is not None:
        raise ValueError("--melody and --continuation cannot be combined")
    melodies = [read_audio(path, model.sample_rate)[0] for path in args.melody]
    return melodies * count if len(melodies) == 1 else melodies


def load_model(name: str, dtype: str | None = None, mesh: Mesh | None = None) -> MusicGen:
    try:
        return MusicGen.get_pretrained(name, dtype=dtype, mesh=mesh)
    except CheckpointError as e:
        if is_url(name):  # the hint is for hub ids
            raise
        raise CheckpointError(
            f"{e}\nTo run offline, point --model at local files: a directory written by "
            "convert_torch_weights.py, or a PyTorch checkpoint directory (transformers or "
            "audiocraft format)."
        ) from e


def run(args) -> str:
    if args.duration <= 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    prompts = read_prompts(args)
    paths = output_paths(args, prompts)
    if args.no_compilation_cache:
        disable_compilation_cache()
    xla_cache = enable_compilation_cache(args.compilation_cache)  # None when disabled
    mesh = None if args.mesh is None else make_mesh(**parse_mesh(args.mesh))
    model = load_model(args.model, None if args.dtype == "auto" else args.dtype, mesh)
    where = "" if mesh is None else f", mesh {dict(mesh.shape)}"
    print(f"{args.model}: LM in {model.dtype} on {jax.default_backend()}{where}", flush=True)
    model.set_generation_params(
        use_sampling=True,
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        duration=args.duration,
        cfg_coef=args.cfg_coef,
    )
    prompt_audio = None
    if args.continuation is not None:
        prompt_audio, _ = read_audio(args.continuation, model.sample_rate, model.audio_channels)
    melodies = read_melodies(args, model, len(prompts))
    start = time.time()
    codes = []
    for first in range(0, len(prompts), args.batch_size):
        batch = prompts[first : first + args.batch_size]
        seeds = [args.seed + first + i for i in range(len(batch))]
        if melodies:
            audio, tokens = model.generate_with_chroma(
                batch,
                melodies[first : first + len(batch)],
                model.sample_rate,
                progress=True,
                return_tokens=True,
                seed=seeds,
                stems=args.melody_stems,
            )
        elif prompt_audio is None:
            audio, tokens = model.generate(batch, progress=True, return_tokens=True, seed=seeds)
        else:
            audio, tokens = model.generate_continuation(
                np.repeat(prompt_audio[None], len(batch), 0),
                model.sample_rate,
                batch,
                progress=True,
                return_tokens=True,
                seed=seeds,
            )
        for where, wav in zip(paths[first : first + len(batch)], audio, strict=True):
            write_audio(where, wav, model.sample_rate, strategy=args.strategy)
        codes.append(tokens)
    elapsed = time.time() - start
    if args.save_codes is not None:
        save_npy(args.save_codes, np.concatenate(codes).astype(np.int16))
    seconds = sum(c.shape[0] * c.shape[-1] for c in codes) / model.frame_rate
    lines = [f"wrote {len(paths)} file(s): " + ", ".join(map(str, paths))]
    if args.save_codes is not None:
        lines.append(f"codes {list(np.concatenate(codes).shape)} in {args.save_codes}")
    lines.append(f"{seconds:.1f} s of audio in {elapsed:.1f} s: real-time factor {elapsed / seconds:.2f}")
    if xla_cache is not None:
        lines.append(f"compiled programs cached in {xla_cache}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (CheckpointError, AudioError, ValueError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
