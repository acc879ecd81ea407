"""Export a model to the format other libraries load:

    python -m musicgen_jax.export --checkpoint runs/mymodel --to hf exported/mymodel
    python -m musicgen_jax.export --checkpoint runs/mymodel --to audiocraft exported/mymodel-audiocraft

`--checkpoint`: a `train.py` run (its latest checkpoint's EMA weights, LoRA adapters merged into the
kernels), a converted directory, or anything else `MusicGen.get_pretrained` takes. `--to hf`: the
directory transformers' `MusicgenForConditionalGeneration.from_pretrained` (melody models:
`MusicgenMelodyForConditionalGeneration`) loads (`convert.hf_export`). `--to audiocraft`: `state_dict.bin`
and `compression_state_dict.bin` for audiocraft's `MusicGen.get_pretrained` (`convert.audiocraft_export`;
needs torch). Written atomically: OUT is either the whole export or left as it was.
"""

from __future__ import annotations

import sys

TARGETS = ("hf", "audiocraft")


def export(checkpoint: str, to: str, out: str, fmt: str = "auto", max_shard_size: str | None = None):
    """Write `checkpoint` in format `to` to `out`; returns the output directory."""
    from musicgen_jax.convert import audiocraft_export, hf_export
    from musicgen_jax.musicgen import load_components

    if to not in TARGETS:
        raise ValueError(f"unknown export format {to!r}: one of {', '.join(TARGETS)}")
    components = load_components(checkpoint, fmt)
    if to == "audiocraft":
        return audiocraft_export.export_audiocraft(components, out)
    return hf_export.export_hf(components, out, max_shard_size or hf_export.MAX_SHARD_SIZE)


if __name__ == "__main__":
    from musicgen_jax.cli.export import main

    sys.exit(main())
