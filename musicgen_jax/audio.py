"""Audio I/O: reading, resampling, channel conversion, loudness and normalized writing.

All waveforms are float32 numpy arrays of shape `[C, T]` (channels, samples) with values nominally in
[-1, 1]. The normalization strategies (`normalize_audio`) and their defaults follow audiocraft's
`audio_write` / `normalize_audio`, so audio written here matches what MusicGen's reference code would
write. This module uses numpy, scipy, soundfile, soxr and librosa only (no torch, no jax).
"""

from __future__ import annotations

import math
import pathlib
import warnings

import numpy as np
import soundfile
from etils import epath

from musicgen_jax import fileio

__all__ = [
    "AudioError",
    "NORMALIZE_STRATEGIES",
    "WRITE_FORMATS",
    "convert_channels",
    "loudness",
    "normalize_audio",
    "read_audio",
    "resample",
    "write_audio",
]

NORMALIZE_STRATEGIES = ("peak", "clip", "rms", "loudness", "none")
# Suffix -> libsndfile container format. Both are written as 16-bit PCM, except WAV with
# strategy "none", which is written as 32-bit float so that the data is stored unchanged.
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
READ_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")  # what `read_audio` decodes (soundfile, audioread)

_EPS = 1e-8  # guards the peak / RMS divisions; all-zero input stays all-zero
_LOUDNESS_ENERGY_FLOOR = 2e-3  # RMS below which loudness normalization leaves the input alone

# BS.1770 K-weighting, expressed as analog prototypes (as in pyloudnorm / torchaudio) so that
# the biquad coefficients can be derived for any sample rate.
_SHELF_GAIN_DB = 4.0
_SHELF_FREQ_HZ = 1500.0
_SHELF_Q = 1.0 / math.sqrt(2.0)
_HIGHPASS_FREQ_HZ = 38.0
_HIGHPASS_Q = 0.5
_BLOCK_S = 0.4  # gating block duration
_BLOCK_OVERLAP = 0.75
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_LOUDNESS_OFFSET = -0.691
_SURROUND_GAIN = 1.41  # BS.1770 weight of channels 4 and 5 (left / right surround)


class AudioError(ValueError):
    """Unreadable or unwritable audio, invalid arguments, or non-finite samples."""


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------


def _check_rate(sample_rate, what: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{what} must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def _check_channels(channels) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels <= 0:
        raise AudioError(f"channels must be a positive integer, got {channels!r}")
    return int(channels)


def _as_2d(wav, what: str = "wav") -> np.ndarray:
    """`[T]` or `[C, T]` -> float `[C, T]` (a view where possible)."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None, :]
    if wav.ndim != 2:
        raise AudioError(f"{what} must have shape [T] or [C, T], got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"{what} must be a floating point array, got dtype {wav.dtype}")
    return wav


def _check_finite(wav: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{where} contains NaN or infinite samples")


# ---------------------------------------------------------------------------------------
# Reading, resampling, channels
# ---------------------------------------------------------------------------------------


def _load(path: pathlib.Path, name) -> tuple[np.ndarray, int]:
    """Decode local file `path` (`name` in messages) to float32 `[C, T]`: soundfile first, librosa
    (audioread) as fallback."""
    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)  # [T, C]
        return np.ascontiguousarray(data.T), int(sr)
    except Exception as sf_exc:  # noqa: BLE001 - any decoder failure falls back to librosa
        first_error = sf_exc
    try:
        import librosa  # imported lazily: it is slow to import

        with warnings.catch_warnings():  # librosa warns about the soundfile failure we already saw
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # audioread imports aifc, sunau, ...
            data, sr = librosa.load(str(path), sr=None, mono=False)  # [T] or [C, T]
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"cannot read audio file {name}: {first_error}; fallback decoder: {exc}") from exc
    return np.atleast_2d(np.asarray(data, dtype=np.float32)), int(sr)


def read_audio(path, sample_rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Read wav/flac/mp3/ogg as float32 [C, T] in [-1, 1]; resample to `sample_rate` (if given)
    and convert to `channels` (if given). Returns (wav, sr).

    Decoded with soundfile, falling back to `librosa.load` for formats it cannot read. Integer PCM is
    scaled to [-1, 1); floating point files are returned as stored.
    Raises `AudioError` for missing or undecodable files and for non-finite samples.
    """
    path = fileio.path(path)
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate)
    if channels is not None:
        channels = _check_channels(channels)
    try:
        with fileio.reporting(path):
            regular = path.is_file()
            if not regular:
                reason = "not a regular file" if path.exists() else "no such file"
                raise AudioError(f"cannot read audio file {path}: {reason}")
        with fileio.local_copy(path) as local:
            wav, sr = _load(local, path)
    except fileio.StorageError as e:
        raise AudioError(str(e)) from e
    if wav.size == 0:
        raise AudioError(f"cannot read audio file {path}: it contains no samples")
    _check_finite(wav, f"audio file {path}")
    if channels is not None:
        wav = convert_channels(wav, channels)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav.astype(np.float32, copy=False), sr


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample `[C, T]` (or `[T]`) -> `[C, T']` with `T' = ceil(T * target_sr / orig_sr)`.

    Same result as `librosa.resample(wav, orig_sr=..., target_sr=..., res_type="soxr_hq")`
    (per-channel `soxr` high quality, zero-padded / trimmed to `T'`), computed with `soxr`
    directly to avoid importing librosa (and compiling its numba kernels). Returns the input
    (as float32) if the rates match.
    """
    import soxr  # librosa's resampling backend

    orig_sr, target_sr = _check_rate(orig_sr, "orig_sr"), _check_rate(target_sr, "target_sr")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    if wav.ndim not in (1, 2):
        raise AudioError(f"wav must have shape [T] or [C, T], got shape {wav.shape}")
    length = -(-wav.shape[-1] * target_sr // orig_sr)  # exact ceil
    rows = np.atleast_2d(wav)
    out = np.zeros((rows.shape[0], length), dtype=np.float32)
    for i, row in enumerate(rows):
        y = soxr.resample(row, orig_sr, target_sr, quality="soxr_hq")[:length]
        out[i, : y.shape[0]] = y
    return out.reshape(length) if wav.ndim == 1 else out


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """`[C, T]` -> `[channels, T]` following audiocraft's `convert_audio_channels`.

    Same count: unchanged. Target 1: mean over channels. Source 1: repeated. Source has more
    channels than the target: the first `channels` channels. Anything else (upmixing from
    2+ channels) raises `AudioError`.
    """
    channels = _check_channels(channels)
    wav = np.asarray(wav)
    if wav.ndim != 2:
        raise AudioError(f"wav must have shape [C, T], got shape {wav.shape}")
    src = wav.shape[0]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=0, keepdims=True).astype(wav.dtype, copy=False)
    if src == 1:
        return np.repeat(wav, channels, axis=0)
    if src >= channels:
        return wav[:channels]
    raise AudioError(f"cannot convert audio with {src} channels to {channels} channels")


# ---------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4)
# ---------------------------------------------------------------------------------------


def _k_weighting_sos(sample_rate: int) -> np.ndarray:
    """K-weighting as second-order sections `[2, 6]`: high shelf (+4 dB) then high-pass (38 Hz).

    Derived with the audio-EQ-cookbook bilinear transforms, so it works for any sample rate
    (at 48 kHz it reproduces the BS.1770 table coefficients to ~1e-3).
    """
    # High shelf.
    a = 10.0 ** (_SHELF_GAIN_DB / 40.0)
    w0 = 2.0 * math.pi * _SHELF_FREQ_HZ / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * _SHELF_Q)
    two_sqrt_a_alpha = 2.0 * math.sqrt(a) * alpha
    shelf_b = [
        a * ((a + 1) + (a - 1) * cos_w0 + two_sqrt_a_alpha),
        -2.0 * a * ((a - 1) + (a + 1) * cos_w0),
        a * ((a + 1) + (a - 1) * cos_w0 - two_sqrt_a_alpha),
    ]
    shelf_a = [
        (a + 1) - (a - 1) * cos_w0 + two_sqrt_a_alpha,
        2.0 * ((a - 1) - (a + 1) * cos_w0),
        (a + 1) - (a - 1) * cos_w0 - two_sqrt_a_alpha,
    ]
    # High-pass.
    w0 = 2.0 * math.pi * _HIGHPASS_FREQ_HZ / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / (2.0 * _HIGHPASS_Q)
    hp_b = [(1 + cos_w0) / 2.0, -(1 + cos_w0), (1 + cos_w0) / 2.0]
    hp_a = [1 + alpha, -2.0 * cos_w0, 1 - alpha]

    sos = np.array([shelf_b + shelf_a, hp_b + hp_a], dtype=np.float64)
    sos[:, :3] /= sos[:, 3:4]
    sos[:, 3:] /= sos[:, 3:4]
    return sos


def _block_mean_squares(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean square of 400 ms blocks with 75% overlap: `[C, T]` -> `[C, n_blocks]`.

    Only whole blocks are used; a signal shorter than one block is measured as a single
    (shorter) block.
    """
    block = int(round(_BLOCK_S * sample_rate))
    hop = max(1, int(round(_BLOCK_S * (1.0 - _BLOCK_OVERLAP) * sample_rate)))
    t = x.shape[-1]
    if t < block:
        return np.mean(x**2, axis=-1, keepdims=True)
    csum = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x**2, axis=-1)], axis=-1)  # [C, T + 1]
    starts = np.arange(0, t - block + 1, hop)
    return (csum[:, starts + block] - csum[:, starts]) / block


def loudness(wav: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of `[C, T]` (or `[T]`) in LUFS, per ITU-R BS.1770-4.

    K-weighting, 400 ms blocks with 75% overlap, channel weights 1 (1.41 for channels 4 and 5),
    absolute gate at -70 LUFS and relative gate at -10 LU. Returns `-inf` when every block is
    gated (e.g. silence).
    """
    sample_rate = _check_rate(sample_rate)
    x = _as_2d(wav).astype(np.float64)
    _check_finite(x, "wav")
    if x.shape[-1] == 0:
        raise AudioError("cannot measure the loudness of an empty signal")
    import scipy.signal  # imported lazily: it takes ~1 s

    filtered = scipy.signal.sosfilt(_k_weighting_sos(sample_rate), x, axis=-1)
    z = _block_mean_squares(filtered, sample_rate)  # [C, n_blocks]
    weights = np.ones(x.shape[0])
    weights[3:5] = _SURROUND_GAIN
    power = weights @ z  # [n_blocks]
    with np.errstate(divide="ignore"):
        block_lufs = _LOUDNESS_OFFSET + 10.0 * np.log10(power)
    gated = block_lufs > _ABSOLUTE_GATE_LUFS
    if not gated.any():
        return float("-inf")
    relative_gate = _LOUDNESS_OFFSET + 10.0 * np.log10(power[gated].mean()) + _RELATIVE_GATE_LU
    gated &= block_lufs > relative_gate
    return float(_LOUDNESS_OFFSET + 10.0 * np.log10(power[gated].mean()))


# ---------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------


def _db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _normalize_loudness(wav: np.ndarray, sample_rate: int, headroom_db: float, compressor: bool) -> np.ndarray:
    """Scale `[C, T]` to `-headroom_db` LUFS; near-silent input (RMS < 2e-3) is returned unchanged."""
    if np.sqrt(np.mean(wav**2)) < _LOUDNESS_ENERGY_FLOOR:
        return wav
    measured = loudness(wav, sample_rate)
    if not math.isfinite(measured):
        return wav
    out = wav * _db_to_gain(-headroom_db - measured)
    if compressor:
        out = np.tanh(out)
    return out


def normalize_audio(
    wav,
    sample_rate,
    strategy="peak",
    peak_clip_headroom_db=1.0,
    rms_headroom_db=18.0,
    loudness_headroom_db=14.0,
    loudness_compressor=False,
) -> np.ndarray:
    """Normalize `[C, T]` (or `[T]`) with one of `NORMALIZE_STRATEGIES`; returns float32 of the same shape.

    The strategies (and their defaults) are audiocraft's `normalize_audio`:

    - ``peak``: scale so that the peak is `-peak_clip_headroom_db` dBFS (default -1 dBFS).
    - ``clip``: clamp to +-`-peak_clip_headroom_db` dBFS.
    - ``rms``: scale so that the RMS of the mono mix is `-rms_headroom_db` dBFS, then clamp to [-1, 1].
    - ``loudness``: scale to `-loudness_headroom_db` LUFS (ITU-R BS.1770-4, default -14 LUFS),
      optionally `tanh`-compress, then clamp to [-1, 1]. Near-silent input is left unchanged.
    - ``none``: leave the data as it is.

    `sample_rate` is only used by the ``loudness`` strategy.
    """
    if strategy not in NORMALIZE_STRATEGIES:
        raise AudioError(f"unknown normalization strategy {strategy!r}; valid ones: {', '.join(NORMALIZE_STRATEGIES)}")
    x = _as_2d(wav)
    _check_finite(x, "wav")
    shape = np.shape(wav)
    x = x.astype(np.float64)
    peak_scale = _db_to_gain(-peak_clip_headroom_db)
    if strategy == "peak":
        x = x * (peak_scale / max(float(np.max(np.abs(x), initial=0.0)), _EPS))
    elif strategy == "clip":
        x = np.clip(x, -peak_scale, peak_scale)
    elif strategy == "rms":
        mono_rms = float(np.sqrt(np.mean(x.mean(axis=0) ** 2))) if x.size else 0.0
        x = np.clip(x * (_db_to_gain(-rms_headroom_db) / max(mono_rms, _EPS)), -1.0, 1.0)
    elif strategy == "loudness":
        x = np.clip(
            _normalize_loudness(x, _check_rate(sample_rate), loudness_headroom_db, loudness_compressor), -1.0, 1.0
        )
    return x.astype(np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """float `[C, T]` in [-1, 1] -> int16 `[C, T]` (scale 2**15, rounded, saturated)."""
    return np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)


def write_audio(path, wav: np.ndarray, sample_rate: int, strategy="peak", **normalize_kwargs) -> epath.Path:
    """Normalize `wav` (`[T]` or `[C, T]`) and write it atomically to `path`; returns the path.

    The format comes from the suffix (`WRITE_FORMATS`): ``.wav`` is 16-bit PCM (32-bit float
    when `strategy == "none"`), ``.flac`` is 16-bit (with `strategy == "none"` the samples are
    clipped to [-1, 1] first). `normalize_kwargs` go to `normalize_audio`. The data is written
    to a temporary file and then becomes `path` whole (`fileio.atomic_file`: a local path or a URL), so
    a failed write never leaves a partial file nor touches an existing one.
    """
    path = fileio.path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise AudioError(
            f"cannot write audio file {path}: unsupported suffix {path.suffix!r}; supported: {', '.join(WRITE_FORMATS)}"
        )
    sample_rate = _check_rate(sample_rate)
    x = _as_2d(wav)
    if x.shape[-1] == 0:
        raise AudioError(f"cannot write audio file {path}: wav has no samples")
    _check_finite(x, f"audio for {path}")
    x = normalize_audio(x, sample_rate, strategy=strategy, **normalize_kwargs)

    if suffix == ".wav" and strategy == "none":
        data, subtype = x.astype(np.float32), "FLOAT"
    else:
        data, subtype = to_pcm16(np.clip(x, -1.0, 1.0)), "PCM_16"

    with fileio.atomic_file(path) as tmp:
        try:
            soundfile.write(str(tmp), data.T, sample_rate, subtype=subtype, format=WRITE_FORMATS[suffix])
        except (OSError, RuntimeError, soundfile.SoundFileError) as exc:
            raise AudioError(f"cannot write audio file {path}: {exc}") from exc
    return path
