"""hear21passt (the PaSST reference, `pip install --no-deps hear21passt==0.0.26`) and audiocraft's KLD metric,
importable without timm and torchaudio.

hear21passt imports timm only for `download_cached_file` (its checkpoint download) and torchaudio for the training
masks and `torchaudio.compliance.kaldi.get_mel_banks`; torchaudio's compiled parts do not load with this torch.
The stand-ins: `download_cached_file` returns a local file chosen by the test, the masks are never run in eval
mode, and `get_mel_banks` is torchaudio 2.11.1's computation, copied below (the VTLN-free path hear21passt uses;
checked equal to torchaudio's own `compliance/kaldi.py` when this was written).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import math
import sys
import types

import torch

from tests.audiocraft_api import _Absent, _Finder


def _mel_scale(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


def get_mel_banks(
    num_bins, window_length_padded, sample_freq, low_freq, high_freq, vtln_low, vtln_high, vtln_warp_factor
):
    """torchaudio.compliance.kaldi.get_mel_banks (torchaudio 2.11.1) for vtln_warp_factor == 1."""
    assert vtln_warp_factor == 1.0, "the stand-in covers the unwarped banks only"
    assert num_bins > 3 and window_length_padded % 2 == 0
    num_fft_bins = window_length_padded / 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    assert (0.0 <= low_freq < nyquist) and (0.0 < high_freq <= nyquist) and (low_freq < high_freq)
    fft_bin_width = sample_freq / window_length_padded
    mel_low_freq = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high_freq = 1127.0 * math.log(1.0 + high_freq / 700.0)
    mel_freq_delta = (mel_high_freq - mel_low_freq) / (num_bins + 1)
    bin = torch.arange(num_bins).unsqueeze(1)
    left_mel = mel_low_freq + bin * mel_freq_delta
    center_mel = mel_low_freq + (bin + 1.0) * mel_freq_delta
    right_mel = mel_low_freq + (bin + 2.0) * mel_freq_delta
    center_freqs = 700.0 * ((center_mel / 1127.0).exp() - 1.0)
    mel = _mel_scale(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up_slope = (mel - left_mel) / (center_mel - left_mel)
    down_slope = (right_mel - mel) / (right_mel - center_mel)
    bins = torch.max(torch.zeros(1), torch.min(up_slope, down_slope))
    return bins, center_freqs


OURS = ("hear21passt", "audiocraft")  # imported inside `reference`, dropped from sys.modules after it


class _Checkpoint:
    """Where the timm stand-in's `download_cached_file` finds "the released file"."""

    path: str | None = None


def _download_cached_file(url, check_hash=False, progress=False):
    assert _Checkpoint.path is not None, f"the test gave no local file for {url}"
    return _Checkpoint.path


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)  # find_spec (transformers) needs it
    module.__dict__.update(attrs)
    return module


def _stand_ins() -> dict[str, types.ModuleType]:
    kaldi = _module("torchaudio.compliance.kaldi", get_mel_banks=get_mel_banks)
    compliance = _module("torchaudio.compliance", kaldi=kaldi)
    mask = lambda *args, **kwargs: torch.nn.Identity()  # noqa: E731  (training-only augmentation)
    transforms = _module("torchaudio.transforms", FrequencyMasking=mask, TimeMasking=mask)
    hub = _module("timm.models._hub", download_cached_file=_download_cached_file)
    models = _module("timm.models", _hub=hub)
    return {
        "torchaudio": _module("torchaudio", compliance=compliance, transforms=transforms),
        "torchaudio.compliance": compliance,
        "torchaudio.compliance.kaldi": kaldi,
        "torchaudio.transforms": transforms,
        "timm": _module("timm", models=models),
        "timm.models": models,
        "timm.models._hub": hub,
    }


@contextlib.contextmanager
def reference(checkpoint: str):
    """`(hear21passt.base20sec, audiocraft.metrics.kld)` with the stand-ins in place inside the block (objects made
    there keep them after it; the modules imported there leave sys.modules, so that other tests import audiocraft
    with their own stand-ins); `get_basic_model` loads `checkpoint` as its released weights."""
    finder, before = _Finder(), set(sys.modules)
    # another test's empty stand-ins (`_Absent`, e.g. test_clap's torchaudio) give way to these, which work
    replaced = {n: sys.modules[n] for n in _stand_ins() if isinstance(sys.modules.get(n), _Absent)}
    for name in replaced:
        del sys.modules[name]
    before -= set(replaced)
    added = {name: m for name, m in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(added)
    sys.meta_path.append(finder)
    _Checkpoint.path = checkpoint
    try:
        try:
            import hear21passt.base20sec as base20sec
        except ModuleNotFoundError as e:
            raise AssertionError(f"hear21passt is missing ({e}): pip install --no-deps hear21passt==0.0.26") from e
        from audiocraft.metrics import kld

        yield base20sec, kld
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:  # audiocraft's modules hold this block's stand-ins: not kept either
            if name in added or isinstance(sys.modules[name], _Absent) or name.split(".")[0] in OURS:
                del sys.modules[name]
        sys.modules.update(replaced)
