"""Tests for musicgen_jax.audio: I/O round trips, resampling, channels, loudness, normalization."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile

from musicgen_jax import audio
from musicgen_jax.audio import (
    AudioError,
    convert_channels,
    loudness,
    normalize_audio,
    read_audio,
    resample,
    write_audio,
)

PEAK = 10 ** (-1 / 20)
LSB16 = 1 / 32768


def _sine(freq, sr, seconds, amp=0.5, phase=0.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def _noise(shape, scale, seed):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _stereo_music(sr, seconds=2.0, seed=0):
    """[2, T]: two sines plus a little noise, peak well below 1."""
    left = _sine(440, sr, seconds, 0.3) + _sine(1250, sr, seconds, 0.1)
    right = _sine(660, sr, seconds, 0.25, phase=1.0)
    return np.stack([left, right]) + _noise((2, left.size), 0.02, seed)


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


def test_wav_roundtrip_peak_16bit(tmp_path):
    sr = 32000
    wav = _stereo_music(sr)
    out = write_audio(tmp_path / "a.wav", wav, sr)  # default strategy: peak, 16-bit
    assert out == tmp_path / "a.wav"
    info = soundfile.info(str(out))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", sr, 2)

    back, back_sr = read_audio(out)
    expected = normalize_audio(wav, sr, "peak")
    assert back_sr == sr and back.dtype == np.float32 and back.shape == wav.shape
    np.testing.assert_allclose(back, expected, rtol=0, atol=LSB16 * 1.01)
    assert abs(np.abs(back).max() - PEAK) <= LSB16 * 1.01


def test_wav_roundtrip_none_float32_exact(tmp_path):
    sr = 24000
    wav = _stereo_music(sr, seconds=0.5) * 1.7  # exceeds 1: "none" keeps it in float WAV
    path = write_audio(tmp_path / "raw.wav", wav, sr, strategy="none")
    assert soundfile.info(str(path)).subtype == "FLOAT"
    back, back_sr = read_audio(path)
    assert back_sr == sr
    np.testing.assert_array_equal(back, wav)


def test_mono_1d_input_written_as_one_channel(tmp_path):
    sr = 16000
    wav = _sine(300, sr, 0.25)
    back, _ = read_audio(write_audio(tmp_path / "m.wav", wav, sr, strategy="none"))
    assert back.shape == (1, wav.size)
    np.testing.assert_array_equal(back[0], wav)


def test_flac_roundtrip(tmp_path):
    sr = 32000
    wav = _stereo_music(sr, seconds=1.0, seed=3)
    path = write_audio(tmp_path / "a.flac", wav, sr)
    info = soundfile.info(str(path))
    assert (info.format, info.subtype) == ("FLAC", "PCM_16")
    back, back_sr = read_audio(path)
    assert back_sr == sr and back.shape == wav.shape
    np.testing.assert_allclose(back, normalize_audio(wav, sr), rtol=0, atol=LSB16 * 1.01)


def test_flac_none_clips_to_unit_range(tmp_path):
    sr = 16000
    wav = np.array([[0.0, 0.5, 1.5, -2.0, -0.25]], dtype=np.float32)
    back, _ = read_audio(write_audio(tmp_path / "c.flac", wav, sr, strategy="none"))
    np.testing.assert_allclose(back, np.clip(wav, -1, 1), rtol=0, atol=LSB16 * 1.01)


def test_int16_pcm_read_is_scaled_to_unit_range(tmp_path):
    pcm = np.array([[-32768, -16384, 0, 16384, 32767]], dtype=np.int16)
    soundfile.write(str(tmp_path / "i.wav"), pcm.T, 8000, subtype="PCM_16")
    back, sr = read_audio(tmp_path / "i.wav")
    assert sr == 8000 and back.dtype == np.float32
    np.testing.assert_array_equal(back, pcm / 32768.0)


@pytest.mark.skipif(
    "VORBIS" not in soundfile.available_subtypes("OGG"), reason="libsndfile built without Ogg/Vorbis support"
)
def test_ogg_read(tmp_path):
    sr = 44100
    wav = _sine(440, sr, 1.0, amp=0.5)
    soundfile.write(str(tmp_path / "s.ogg"), wav, sr, format="OGG", subtype="VORBIS")
    back, back_sr = read_audio(tmp_path / "s.ogg", sample_rate=32000, channels=2)
    assert back_sr == 32000 and back.shape[0] == 2
    assert abs(back.shape[1] - 32000) <= 1  # ogg keeps the exact length; resampling ceil/round
    np.testing.assert_array_equal(back[0], back[1])
    spectrum = np.abs(np.fft.rfft(back[0]))
    assert abs(np.argmax(spectrum) * 32000 / back.shape[1] - 440) <= 2
    # lossy codec: the level survives to within a dB
    assert abs(np.sqrt(np.mean(back[0] ** 2)) / (0.5 / np.sqrt(2)) - 1) < 0.12


@pytest.mark.skipif(
    "MPEG_LAYER_III" not in soundfile.available_subtypes("MP3"), reason="libsndfile built without MP3 support"
)
def test_mp3_read(tmp_path):
    sr = 32000
    wav = _sine(1000, sr, 1.0, amp=0.4)
    soundfile.write(str(tmp_path / "s.mp3"), wav, sr, format="MP3", subtype="MPEG_LAYER_III")
    back, back_sr = read_audio(tmp_path / "s.mp3")
    assert back_sr == sr and back.shape[0] == 1
    assert abs(back.shape[1] - wav.size) <= 2304  # encoder/decoder padding of at most two frames
    spectrum = np.abs(np.fft.rfft(back[0]))
    assert abs(np.argmax(spectrum) * sr / back.shape[1] - 1000) <= 2


# ---------------------------------------------------------------------------------------
# Resampling and channels
# ---------------------------------------------------------------------------------------


def test_resample_44100_to_32000_sine():
    wav = _sine(440, 44100, 1.5)[None]
    out = resample(wav, 44100, 32000)
    assert out.dtype == np.float32 and out.shape[0] == 1
    assert abs(out.shape[1] - round(wav.shape[1] * 32000 / 44100)) <= 1
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * 32000 / out.shape[1] - 440) <= 2
    # amplitude preserved away from the edges
    assert abs(np.abs(out[0, 1000:-1000]).max() - 0.5) < 0.01


@pytest.mark.parametrize(
    "orig_sr, target_sr, length", [(44100, 32000, 44100), (48000, 32000, 12345), (16000, 32000, 777)]
)
def test_resample_matches_librosa_soxr_hq(orig_sr, target_sr, length):
    import librosa

    wav = _noise((2, length), 0.3, seed=2)
    expected = librosa.resample(wav, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    np.testing.assert_array_equal(resample(wav, orig_sr, target_sr), expected)
    np.testing.assert_array_equal(resample(wav[0], orig_sr, target_sr), expected[0])


def test_resample_identity_and_read_with_resampling(tmp_path):
    wav = _noise((2, 1000), 0.1, seed=1)
    np.testing.assert_array_equal(resample(wav, 32000, 32000), wav)
    soundfile.write(str(tmp_path / "r.wav"), wav.T, 48000, subtype="FLOAT")
    back, sr = read_audio(tmp_path / "r.wav", sample_rate=32000, channels=1)
    assert sr == 32000 and back.shape[0] == 1
    assert abs(back.shape[1] - round(1000 * 32000 / 48000)) <= 1


def test_convert_channels_rules():
    mono = np.arange(6, dtype=np.float32).reshape(1, 6)
    stereo = np.stack([np.arange(6), 10 * np.arange(6)]).astype(np.float32)
    three = np.stack([np.full(4, 1.0), np.full(4, 2.0), np.full(4, 3.0)]).astype(np.float32)

    np.testing.assert_array_equal(convert_channels(mono, 2), np.concatenate([mono, mono]))
    np.testing.assert_array_equal(convert_channels(stereo, 1), 5.5 * np.arange(6)[None])
    np.testing.assert_array_equal(convert_channels(three, 2), three[:2])
    np.testing.assert_array_equal(convert_channels(three, 1), np.full((1, 4), 2.0))
    np.testing.assert_array_equal(convert_channels(stereo, 2), stereo)
    assert convert_channels(stereo, 1).dtype == np.float32
    with pytest.raises(AudioError, match="2 channels to 3"):
        convert_channels(stereo, 3)
    with pytest.raises(AudioError):
        convert_channels(stereo, 0)


# ---------------------------------------------------------------------------------------
# Loudness
# ---------------------------------------------------------------------------------------


def _fade_out(sr, seconds, hold, db_per_s):
    """[T] gain: 1 for `hold` seconds, then falling by `db_per_s` dB per second."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (10 ** (-db_per_s * np.maximum(t - hold, 0.0) / 20)).astype(np.float32)


def _loudness_parity_signals(sr):
    """Name -> [C, 6 s] signal. 6 s is a whole number of 100 ms hops: see test_loudness_drops_incomplete_blocks."""
    n = 6 * sr
    quiet_fade = _stereo_music(sr, seconds=6.0, seed=9) * 5e-3 * _fade_out(sr, 6.0, 1.0, 12.0)
    low_frequency = np.stack(
        [_sine(20, sr, 6, 0.3) + _sine(45, sr, 6, 0.2), _sine(30, sr, 6, 0.3) + _sine(55, sr, 6, 0.2, phase=1.0)]
    )
    return {
        "stereo_music": _stereo_music(sr, seconds=6.0, seed=5),
        "mono_noise": _noise((1, n), 0.1, seed=6),
        # 20-55 Hz sines: most of the energy sits on the slope of the 38 Hz high-pass
        "low_frequency": low_frequency + _noise((2, n), 0.01, seed=7),
        # block levels spread over -11..-59 LUFS: the relative gate (at -24 LUFS) cuts the tail
        "relative_gate": _stereo_music(sr, seconds=6.0, seed=8) * _fade_out(sr, 6.0, 1.0, 10.0),
        # a fade from -57 LUFS, then 2 s of near-silence at -94 LUFS: the absolute gate cuts both at -70 LUFS
        "absolute_gate": np.where(np.arange(n) < 4 * sr, quiet_fade, _noise((2, n), 1e-5, seed=10)),
    }


def _gated_loudness(block_lufs, absolute_gate=-70.0, relative_gate=-10.0):
    """BS.1770-4 gating of pyloudnorm's block loudnesses, with movable gates."""
    power = 10 ** ((block_lufs + 0.691) / 10)
    kept = block_lufs > absolute_gate
    kept &= block_lufs > -0.691 + 10 * np.log10(power[kept].mean()) + relative_gate
    return -0.691 + 10 * np.log10(power[kept].mean())


@pytest.mark.parametrize("sr", [32000, 44100, 48000])
def test_loudness_matches_pyloudnorm(sr):
    """Within 1e-3 LU of pyloudnorm.Meter(sr).integrated_loudness, with its default BS.1770-4 K-weighting
    (filter_class "K-weighting": +4 dB shelf at 1500 Hz, Q 1/sqrt(2); high-pass at 38 Hz, Q 0.5).

    The signals reach both gates and the high-pass (test_loudness_parity_signals_reach_the_gates_and_the_high_pass).
    """
    meter = pyloudnorm.Meter(sr)
    errors = {
        name: loudness(wav, sr) - meter.integrated_loudness(wav.T.astype(np.float64))
        for name, wav in _loudness_parity_signals(sr).items()
    }
    assert max(map(abs, errors.values())) < 1e-3, errors


def _pyloudnorm_loudness_and_blocks(meter, wav):
    loud = meter.integrated_loudness(wav.T.astype(np.float64))
    return loud, np.array(meter.blockwise_loudness)


@pytest.mark.parametrize("sr", [32000, 48000])
def test_loudness_parity_signals_reach_the_gates_and_the_high_pass(sr):
    """Measured with pyloudnorm, each change moves the loudness by > 0.5 LU (relative gate at -8 LU: > 0.1 LU).

    absolute_gate: no absolute gate, or one at -60 LUFS; relative_gate: no relative gate, or one at -8 LU;
    low_frequency: a 60 Hz high-pass instead of the 38 Hz one.
    """
    signals = _loudness_parity_signals(sr)
    meter = pyloudnorm.Meter(sr)

    loud, blocks = _pyloudnorm_loudness_and_blocks(meter, signals["absolute_gate"])
    assert abs(_gated_loudness(blocks) - loud) < 1e-9
    assert loud - _gated_loudness(blocks, absolute_gate=-np.inf) > 0.5
    assert _gated_loudness(blocks, absolute_gate=-60.0) - loud > 0.5

    loud, blocks = _pyloudnorm_loudness_and_blocks(meter, signals["relative_gate"])
    assert abs(_gated_loudness(blocks) - loud) < 1e-9
    assert loud - _gated_loudness(blocks, relative_gate=-np.inf) > 0.5
    assert _gated_loudness(blocks, relative_gate=-8.0) - loud > 0.1

    high_pass_60 = pyloudnorm.Meter(sr, filter_class="custom")
    high_pass_60._filters = {
        "high_shelf": pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf"),
        "high_pass": pyloudnorm.IIRfilter(0.0, 0.5, 60.0, sr, "high_pass"),
    }
    wav = signals["low_frequency"].T.astype(np.float64)
    assert meter.integrated_loudness(wav) - high_pass_60.integrated_loudness(wav) > 0.5


def test_loudness_drops_incomplete_blocks():
    """BS.1770-4 measures whole 400 ms blocks only: 60 ms past the last one are not measured.

    pyloudnorm 0.2.0 rounds the block count and measures a zero-padded block there instead, here 0.016 LU lower.
    """
    sr = 32000
    wav = _stereo_music(sr, seconds=3.06, seed=11)
    assert loudness(wav, sr) == loudness(wav[:, : 3 * sr], sr)


def test_loudness_of_silence_is_minus_inf():
    assert loudness(np.zeros((2, 32000), np.float32), 32000) == float("-inf")


@pytest.mark.parametrize("sr", [32000, 44100])
def test_loudness_normalization_targets_minus_14_lufs(sr):
    meter = pyloudnorm.Meter(sr)
    for wav in (_stereo_music(sr, seconds=3.0, seed=8) * 0.2, _noise((1, 3 * sr), 0.05, seed=9)):
        out = normalize_audio(wav, sr, strategy="loudness")
        assert out.shape == wav.shape and out.dtype == np.float32
        assert np.abs(out).max() < 1.0  # no clamping happened
        assert abs(meter.integrated_loudness(out.T.astype(np.float64)) - (-14.0)) < 0.5
    out = normalize_audio(wav, sr, strategy="loudness", loudness_headroom_db=20.0)
    assert abs(meter.integrated_loudness(out.T.astype(np.float64)) - (-20.0)) < 0.5


def test_loudness_compressor_stays_in_range():
    sr = 32000
    wav = _noise((2, 2 * sr), 0.2, seed=10)
    out = normalize_audio(wav, sr, strategy="loudness", loudness_headroom_db=0.0, loudness_compressor=True)
    assert np.abs(out).max() <= 1.0
    plain = normalize_audio(wav, sr, strategy="loudness", loudness_headroom_db=0.0)
    gain = 10 ** ((0.0 - loudness(wav, sr)) / 20)
    np.testing.assert_allclose(out, np.tanh(wav * gain), atol=1e-6)
    np.testing.assert_allclose(plain, np.clip(wav * gain, -1, 1), atol=1e-6)


def test_low_energy_signal_unchanged_by_loudness():
    sr = 32000
    wav = _noise((1, sr), 1e-3, seed=11)  # RMS ~1e-3 < 2e-3 energy floor
    np.testing.assert_array_equal(normalize_audio(wav, sr, strategy="loudness"), wav)


# ---------------------------------------------------------------------------------------
# Other strategies
# ---------------------------------------------------------------------------------------


def test_peak_normalization():
    wav = _noise((2, 5000), 0.3, seed=12)
    out = normalize_audio(wav, 32000, strategy="peak")
    assert abs(np.abs(out).max() - PEAK) < 1e-6
    np.testing.assert_allclose(out, wav * (PEAK / np.abs(wav).max()), rtol=1e-6, atol=1e-7)
    out3 = normalize_audio(wav, 32000, strategy="peak", peak_clip_headroom_db=3.0)
    assert abs(np.abs(out3).max() - 10 ** (-3 / 20)) < 1e-6
    zeros = np.zeros((1, 100), np.float32)
    np.testing.assert_array_equal(normalize_audio(zeros, 32000, strategy="peak"), zeros)


def test_clip_normalization():
    wav = np.array([[-2.0, -0.5, 0.0, 0.5, 0.95, 3.0]], dtype=np.float32)
    out = normalize_audio(wav, 32000, strategy="clip")
    np.testing.assert_allclose(out, [[-PEAK, -0.5, 0.0, 0.5, PEAK, PEAK]], rtol=1e-6)


def test_rms_normalization():
    wav = _stereo_music(32000, seconds=1.0, seed=13)
    out = normalize_audio(wav, 32000, strategy="rms")
    assert np.abs(out).max() < 1.0  # no clamping at -18 dBFS RMS
    mono_rms = np.sqrt(np.mean(out.mean(axis=0).astype(np.float64) ** 2))
    assert abs(mono_rms - 10 ** (-18 / 20)) < 1e-6
    loud = normalize_audio(wav, 32000, strategy="rms", rms_headroom_db=-20.0)
    assert np.abs(loud).max() == 1.0  # clamped


def test_none_unchanged_and_1d_shape_kept():
    wav = _noise(3000, 0.7, seed=14)
    out = normalize_audio(wav, 32000, strategy="none")
    assert out.shape == wav.shape
    np.testing.assert_array_equal(out, wav)


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------


def _failing_write(real_write):
    def write(file, data, samplerate, *args, **kwargs):
        real_write(file, data[: len(data) // 2], samplerate, *args, **kwargs)  # a partial file exists...
        raise RuntimeError("disk full")  # ...then the write dies

    return write


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.soundfile, "write", _failing_write(soundfile.write))
    target = tmp_path / "out.wav"
    with pytest.raises(AudioError, match="disk full"):
        write_audio(target, _noise((1, 4000), 0.1, seed=15), 16000)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "out.flac"
    original = _noise((1, 4000), 0.1, seed=16)
    write_audio(target, original, 16000)
    before = target.read_bytes()
    monkeypatch.setattr(audio.soundfile, "write", _failing_write(soundfile.write))
    with pytest.raises(AudioError):
        write_audio(target, _noise((2, 8000), 0.3, seed=17), 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["out.flac"]
    assert target.read_bytes() == before


def test_write_replaces_existing_file(tmp_path):
    target = tmp_path / "out.wav"
    write_audio(target, _noise((1, 4000), 0.1, seed=18), 16000)
    write_audio(target, _noise((2, 2000), 0.1, seed=19), 16000)
    back, _ = read_audio(target)
    assert back.shape == (2, 2000)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_unreadable_file_raises_audio_error(tmp_path):
    bad = tmp_path / "garbage.wav"
    bad.write_bytes(np.random.default_rng(20).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="cannot read audio file") as info:
        read_audio(bad)
    assert str(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file_raises_audio_error(tmp_path):
    missing = tmp_path / "nope.flac"
    with pytest.raises(AudioError, match="no such file") as info:
        read_audio(missing)
    assert str(missing) in str(info.value)


def test_unknown_suffix(tmp_path):
    with pytest.raises(AudioError, match=r"\.wav, \.flac") as info:
        write_audio(tmp_path / "x.aiff", np.zeros((1, 10), np.float32), 16000)
    assert "x.aiff" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_nan_input(tmp_path):
    wav = _noise((1, 100), 0.1, seed=21)
    wav[0, 50] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "n.wav", wav, 16000)
    wav[0, 50] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        normalize_audio(wav, 16000)
    assert list(tmp_path.iterdir()) == []


def test_unknown_strategy(tmp_path):
    wav = _noise((1, 100), 0.1, seed=22)
    with pytest.raises(AudioError, match="peak, clip, rms, loudness, none"):
        normalize_audio(wav, 16000, strategy="lufs")
    with pytest.raises(AudioError, match="unknown normalization strategy 'lufs'"):
        write_audio(tmp_path / "s.wav", wav, 16000, strategy="lufs")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments():
    wav = np.zeros((1, 100), np.float32)
    with pytest.raises(AudioError, match="sample_rate"):
        loudness(wav, 0)
    with pytest.raises(AudioError, match="target_sr"):
        resample(wav, 16000, -1)
    with pytest.raises(AudioError, match="shape"):
        normalize_audio(np.zeros((1, 2, 3), np.float32), 16000)
