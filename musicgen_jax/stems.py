"""Optional source separation of melody audio with Demucs, as audiocraft's `ChromaStemConditioner` does
before the chroma (audiocraft's `ChromaStemConditioner`): `htdemucs`, the `vocals` and `other` stems summed.
transformers' feature extractor does not separate. Needs the `melody` extra (`pip install 'musicgen-jax[melody]'`,
the `demucs` package, a PyTorch model): the one place outside `convert/` that runs torch, imported only when asked for.
Demucs' default random time shift makes the stems, and so the chroma, vary slightly between runs.
"""

from __future__ import annotations

import functools

import numpy as np

from musicgen_jax.extras import MissingExtraError

DEMUCS_MODEL = "htdemucs"
STEMS = ("vocals", "other")


@functools.lru_cache(maxsize=1)
def _demucs():
    try:
        import torch
        from demucs.apply import apply_model
        from demucs.audio import convert_audio
        from demucs.pretrained import get_model
    except ImportError as e:
        raise MissingExtraError(
            f"melody stems need Demucs: pip install 'musicgen-jax[melody]' (the demucs package; {e})"
        ) from e
    return torch, get_model(DEMUCS_MODEL).eval(), apply_model, convert_audio


def melody_stems(wav: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """`wav [C, T]` at `sample_rate` -> the sum of its `STEMS` `[T']`, mono at `target_rate` (float32)."""
    torch, model, apply_model, convert_audio = _demucs()
    x = convert_audio(
        torch.from_numpy(np.asarray(wav, np.float32))[None], sample_rate, model.samplerate, model.audio_channels
    )
    with torch.no_grad():
        stems = apply_model(model, x, device="cpu")  # [1, sources, channels, T]
    mix = stems[:, [model.sources.index(name) for name in STEMS]].sum(1)
    return convert_audio(mix, model.samplerate, target_rate, 1)[0, 0].numpy().astype(np.float32)
