"""Tests for musicgen_jax.chroma: one-hot chroma against transformers' MusicgenMelodyFeatureExtractor and an
audiocraft-style reference (librosa's filter bank), frame counts, silence, tiling, batching and bad input.

The reference is transformers' real `MusicgenMelodyFeatureExtractor._torch_extract_fbank_features` (the model's
feature extraction after padding / resampling). Its `__init__` needs torchaudio, which cannot be installed here
(torch 2.13 has no matching torchaudio wheel), so the extractor is built with `__new__` and given the three attributes
that method reads: `n_fft`, `chroma_filters` (transformers' own `chroma_filter_bank`, float32, as its `__init__`
makes it) and `spectrogram`, a stand-in for `torchaudio.transforms.Spectrogram(n_fft, win_length=n_fft,
hop_length, power=2, center=True, pad=0, normalized=True)` that runs the code of torchaudio's
`functional.spectrogram` for those arguments: `torch.stft` with the periodic `torch.hann_window`, center=True,
pad_mode="reflect", normalized=False, onesided, then the complex STFT divided by `window.pow(2).sum().sqrt()`, then
`abs().pow(2)`. The reference is thus torch's own STFT and einsum, independent of the JAX code.

audiocraft's `ChromaExtractor.forward` runs the same steps with librosa's filter bank: the second reference is the
same method with `chroma_filters` from `librosa.filters.chroma`.

Measured (CPU, float32): normalized chroma within 1.4e-6 of both references, asserted < 1e-5 (a symmetric Hann window
moves it by 2.6e-5 to 3.3e-4, a one-sample shift of a short input's zero padding by 8e-5 to 1.6e-3); one-hot equal
on every frame of every signal here, noise included.
"""

from __future__ import annotations

import functools

import jax
import librosa
import numpy as np
import pytest
import torch
from transformers.audio_utils import chroma_filter_bank as hf_chroma_filter_bank
from transformers.models.musicgen_melody.feature_extraction_musicgen_melody import MusicgenMelodyFeatureExtractor

from musicgen_jax.chroma import chroma_filter_bank, extract_chroma, match_frames, normalized_chroma, one_hot_chroma
from musicgen_jax.config import ChromaConfig

CONFIG = ChromaConfig()
TOLERANCE = 1e-5  # on the inf-normalized chroma, values in [0, 1]; measured <= 1.4e-6
NEAR_TIE = 1e-3  # noise frames whose top two normalized values are closer may flip with float32 rounding

TONES = (220.0, 261.63, 440.0)
C_MAJOR = (261.63, 329.63, 392.0)
A_MINOR = (220.0, 261.63, 329.63)
MELODY = (261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88)  # C major scale, 0.5 s a note
SIGNALS = ("220 Hz", "261.63 Hz", "440 Hz", "C major", "A minor", "melody", "quiet 440 Hz", "noise")


class _Spectrogram(torch.nn.Module):
    """torchaudio.functional.spectrogram for center=True, pad_mode="reflect", power=2, normalized=True."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.window = torch.hann_window(n_fft)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)


def _extractor(sample_rate: int, bank: np.ndarray) -> MusicgenMelodyFeatureExtractor:
    extractor = MusicgenMelodyFeatureExtractor.__new__(MusicgenMelodyFeatureExtractor)
    extractor.n_fft = CONFIG.n_fft
    extractor.chroma_filters = torch.from_numpy(np.asarray(bank)).float()
    extractor.spectrogram = _Spectrogram(CONFIG.n_fft, CONFIG.hop_length)
    return extractor


@functools.cache
def _references(sample_rate: int) -> dict[str, MusicgenMelodyFeatureExtractor]:
    """transformers' extractor (its own filter bank) at `sample_rate`, and at 32 kHz, the only rate audiocraft's
    melody models run at, the audiocraft one (librosa's)."""
    hf_bank = hf_chroma_filter_bank(num_frequency_bins=CONFIG.n_fft, num_chroma=12, sampling_rate=sample_rate, tuning=0)
    references = {"transformers": _extractor(sample_rate, hf_bank)}
    if sample_rate == 32000:
        ac_bank = librosa.filters.chroma(sr=sample_rate, n_fft=CONFIG.n_fft, tuning=0, n_chroma=12)
        references["audiocraft"] = _extractor(sample_rate, ac_bank)
    return references


def _reference_normalized(extractor: MusicgenMelodyFeatureExtractor, wav: np.ndarray) -> np.ndarray:
    """The reference's inf-normalized chroma `[B, frames, bins]` before its argmax (the first lines of
    `_torch_extract_fbank_features`, which overwrites them in place with the one-hot)."""
    waveform = torch.from_numpy(wav)
    pad = extractor.n_fft - waveform.shape[-1]
    if pad > 0:
        waveform = torch.nn.functional.pad(waveform, (pad // 2, pad // 2 + pad % 2))
    raw = torch.einsum("cf,...ft->...ct", extractor.chroma_filters, extractor.spectrogram(waveform))
    return torch.nn.functional.normalize(raw, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2).numpy()


def _signals(sample_rate: int, length: int) -> np.ndarray:
    """`[8, length]` float32, rows as named in SIGNALS."""
    t = np.arange(length) / sample_rate

    def tone(freqs, amp=0.3):
        return sum(amp * np.sin(2 * np.pi * f * t) for f in freqs)

    melody_freqs = np.asarray(MELODY)[(t / 0.5).astype(int) % len(MELODY)]
    melody = 0.5 * np.sin(2 * np.pi * np.cumsum(melody_freqs) / sample_rate)  # phase-continuous
    noise = 0.3 * np.random.default_rng(length).standard_normal(length)
    rows = [tone([f], 0.5) for f in TONES] + [tone(C_MAJOR), tone(A_MINOR), melody, tone([440.0], 1e-5), noise]
    return np.stack(rows).astype(np.float32)


def _top_two_margin(chroma: np.ndarray) -> np.ndarray:
    top = np.sort(chroma, axis=-1)
    return top[..., -1] - top[..., -2]


CASES = [
    (32000, 5000),
    (32000, 12345),
    (32000, 3 * 32000),
    (32000, 31 * 32000),
    (44100, 5001),
    (44100, 2 * 44100),
    (48000, 12345),
    (48000, 2 * 48000 + 1),
]


@pytest.mark.parametrize("sample_rate, length", CASES)
def test_matches_transformers_and_audiocraft(sample_rate, length):
    config = ChromaConfig(sample_rate=sample_rate)
    wav = _signals(sample_rate, length)
    ours = np.asarray(one_hot_chroma(wav, config))
    ours_normalized = np.asarray(normalized_chroma(wav, config))
    frames = 1 + max(length, config.n_fft) // config.hop_length
    assert ours.shape == ours_normalized.shape == (len(SIGNALS), frames, 12) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours.sum(-1), 1.0)

    for name, extractor in _references(sample_rate).items():
        expected = extractor._torch_extract_fbank_features(torch.from_numpy(wav)).numpy()
        expected_normalized = _reference_normalized(extractor, wav)
        assert expected.shape == ours.shape
        np.testing.assert_array_equal(np.argmax(expected_normalized, -1), np.argmax(expected, -1))
        difference = np.abs(ours_normalized - expected_normalized).max()
        assert difference < TOLERANCE, f"{name}: normalized chroma differs by {difference:.2e}"
        for row, signal in enumerate(SIGNALS):
            if signal == "noise":
                clear = _top_two_margin(expected_normalized[row]) > NEAR_TIE
                assert clear.mean() >= 0.95, f"{name}: only {clear.mean():.0%} of noise frames without near-ties"
                np.testing.assert_array_equal(ours[row][clear], expected[row][clear], err_msg=f"{name}: {signal}")
            else:
                np.testing.assert_array_equal(ours[row], expected[row], err_msg=f"{name}: {signal}")


def test_tones_land_in_their_pitch_class():
    """Bins start at C: A (220, 440 Hz) is bin 9, C (261.63 Hz) bin 0."""
    chroma = np.asarray(one_hot_chroma(_signals(32000, 3 * 32000)[:3], CONFIG))
    np.testing.assert_array_equal(np.argmax(chroma, -1), np.broadcast_to(np.array([[9], [0], [9]]), (3, 24)))


@pytest.mark.parametrize("sample_rate", [32000, 44100, 48000])
def test_filter_bank_is_librosas_and_agrees_with_transformers(sample_rate):
    config = ChromaConfig(sample_rate=sample_rate)
    bank = chroma_filter_bank(config)
    assert bank.shape == (12, config.n_fft // 2 + 1) and bank.dtype == np.float32
    np.testing.assert_array_equal(
        bank, librosa.filters.chroma(sr=sample_rate, n_fft=config.n_fft, tuning=0, n_chroma=12)
    )
    transformers_bank = hf_chroma_filter_bank(
        num_frequency_bins=config.n_fft, num_chroma=12, sampling_rate=sample_rate, tuning=0
    )
    np.testing.assert_allclose(bank, transformers_bank, rtol=0, atol=1e-7)  # measured 3.0e-8
    assert chroma_filter_bank(ChromaConfig(sample_rate=sample_rate)) is bank  # cached per config


@pytest.mark.parametrize(
    "length, frames", [(1, 5), (16383, 5), (16384, 5), (20479, 5), (20480, 6), (30 * 32000, 235), (31 * 32000, 243)]
)
def test_number_of_frames(length, frames):
    """1 + T // hop (inputs shorter than n_fft count as n_fft): 235 for 30 s at 32 kHz."""
    shape = jax.eval_shape(
        functools.partial(one_hot_chroma, config=CONFIG), jax.ShapeDtypeStruct((2, length), np.float32)
    ).shape
    assert shape == (2, frames, 12)


@pytest.mark.parametrize("length", [1, 5000, 3 * 32000])
def test_silence_is_bin_zero(length):
    """All-zero raw chroma normalizes to zeros, and the argmax of a tie is bin 0: the null chroma."""
    wav = np.zeros((2, length), np.float32)
    np.testing.assert_array_equal(np.asarray(normalized_chroma(wav, CONFIG)), 0.0)
    chroma = extract_chroma(wav, CONFIG, frames=235)
    assert chroma.shape == (2, 235, 12) and chroma.dtype == np.float32
    np.testing.assert_array_equal(chroma[..., 0], 1.0)
    np.testing.assert_array_equal(chroma[..., 1:], 0.0)


def test_match_frames_tiles_in_order_and_truncates():
    short = np.random.default_rng(0).standard_normal((2, 3, 12)).astype(np.float32)
    tiled = np.asarray(match_frames(short, 235))
    assert tiled.shape == (2, 235, 12)
    np.testing.assert_array_equal(tiled, short[:, np.arange(235) % 3])
    long = np.random.default_rng(1).standard_normal((2, 300, 12)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(match_frames(long, 235)), long[:, :235])
    np.testing.assert_array_equal(np.asarray(match_frames(long[:, :235], 235)), long[:, :235])
    np.testing.assert_array_equal(np.asarray(match_frames(long[:, :234], 235)), long[:, np.arange(235) % 234])


def test_extract_chroma_tiles_the_one_hot():
    wav = _signals(32000, 2 * 32000)[[0, 5]]
    np.testing.assert_array_equal(
        extract_chroma(wav, CONFIG, frames=235), np.asarray(match_frames(one_hot_chroma(wav, CONFIG), 235))
    )
    np.testing.assert_array_equal(extract_chroma(wav, CONFIG), np.asarray(one_hot_chroma(wav, CONFIG)))


def test_batch_rows_are_independent():
    """Each row of a batch of different signals gets its own single-row result; one compile per shape."""
    wav = _signals(32000, 3 * 32000)[[0, 3, 5, 7]]
    batch, batch_normalized = np.asarray(one_hot_chroma(wav, CONFIG)), np.asarray(normalized_chroma(wav, CONFIG))
    compiled = None
    for row in range(len(wav)):
        np.testing.assert_array_equal(np.asarray(one_hot_chroma(wav[row : row + 1], CONFIG))[0], batch[row])
        single = np.asarray(normalized_chroma(wav[row : row + 1], CONFIG))[0]
        # float32 FFT rounding differs with the batch size (1.6e-6 seen on an AMD EPYC); rows mixed would differ ~0.1
        np.testing.assert_allclose(single, batch_normalized[row], rtol=0, atol=1e-5)
        compiled = compiled or normalized_chroma._cache_size()
        assert normalized_chroma._cache_size() == compiled  # the [1, T] shape compiles once for all rows
    assert len({tuple(np.argmax(batch[row], -1)) for row in range(len(wav))}) == len(wav)


@pytest.mark.parametrize(
    "wav, message",
    [
        (np.array([[0.0, np.nan, 0.0]]), r"non-finite values \(NaN or inf\) in rows \[0\]"),
        (np.array([[0.0, 0.0], [np.inf, 0.0]]), r"non-finite values \(NaN or inf\) in rows \[1\]"),
        (np.zeros((2, 0)), r"empty: shape \(2, 0\)"),
        (np.zeros((0, 100)), r"empty: shape \(0, 100\)"),
        (np.zeros(100), r"mono waveforms \[B, T\], got shape \(100,\)"),
        (np.zeros((1, 2, 100)), r"mono waveforms \[B, T\], got shape \(1, 2, 100\)"),
    ],
)
def test_bad_input_raises(wav, message):
    with pytest.raises(ValueError, match=message):
        extract_chroma(wav, CONFIG)


def test_bad_frames_raises():
    with pytest.raises(ValueError, match="frames must be positive, got 0"):
        extract_chroma(np.zeros((1, 100), np.float32), CONFIG, frames=0)
