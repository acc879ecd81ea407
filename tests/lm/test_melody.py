"""Melody models (no cross-attention: `[chroma (235), text (N), audio]`, audiocraft's `ConditionFuser`, prepend)
against transformers' `MusicgenMelodyForConditionalGeneration` (float32, the tiny fixture of tests/lm/conftest.py).

Tolerances: teacher-forced logits max abs difference / max abs logit < 1e-4; KV-cache decoding against
teacher forcing 1e-5.
"""

from __future__ import annotations

import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musicgen_jax import stems
from musicgen_jax.audio import convert_channels, read_audio, resample, write_audio
from musicgen_jax.chroma import extract_chroma
from musicgen_jax.cli import sample
from musicgen_jax.lm.model import LMModel, init_cache, null_chroma
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.sampling import SamplingParams, generate_tokens, row_keys
from musicgen_jax.text.encoder import encode_ids
from musicgen_jax.text.weights import load_t5
from tests.lm.conftest import save_hub_layout, tiny_hf_musicgen
from tests.lm.test_generate import hf_generate_codes
from tests.lm.test_parity import cached_logits, inputs, load, rel_max

CHROMA_FRAMES = 24  # the fixture's chroma_length (released models: 235)


def random_chroma(seed: int, batch: int, frames: int = CHROMA_FRAMES) -> np.ndarray:
    """One-hot `[batch, frames, 12]` float32: a random bin held for 4 to 12 frames at a time, like a melody."""
    rng = np.random.default_rng(seed)
    bins = np.concatenate(
        [np.full((batch, rng.integers(4, 13)), rng.integers(0, 12, (batch, 1))) for _ in range(frames // 4 + 1)], axis=1
    )[:, :frames]
    return np.eye(12, dtype=np.float32)[bins]


def hf_melody_logits(model, ids, mask, chroma, sequence):
    b, k, s = sequence.shape
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            input_features=torch.from_numpy(chroma),
            decoder_input_ids=torch.from_numpy(np.array(sequence).reshape(b * k, s)).long(),
        )
    return out.logits.reshape(b, k, -1, out.logits.shape[-1])[:, :, -s:].numpy()


def jax_melody_logits(directory, ids, mask, chroma, sequence):
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    text = encode_ids(t5_config, t5_params, ids, mask)
    return np.asarray(LMModel(config).apply(params, sequence, text, mask, chroma))


@pytest.fixture(scope="module")
def melody_inputs():
    ids, mask, sequence = inputs()  # two prompts of 7 and 4 tokens, random codes
    return ids, mask, random_chroma(0, 2), sequence


def test_teacher_forced_logits_match_transformers(hf_musicgen_melody, melody_inputs):
    model, directory = hf_musicgen_melody
    ids, mask, chroma, sequence = melody_inputs
    expected = hf_melody_logits(model, ids, mask, chroma, sequence)
    logits = jax_melody_logits(directory, ids, mask, chroma, sequence)
    assert logits.shape == expected.shape == (2, 4, 16, 2048)
    assert rel_max(logits, expected) < 1e-4


def test_melody_and_text_change_the_logits(hf_musicgen_melody, melody_inputs):
    """Guards the parity test: in this tiny model both the chroma and the prompt matter."""
    _, directory = hf_musicgen_melody
    ids, mask, chroma, sequence = melody_inputs
    base = jax_melody_logits(directory, ids, mask, chroma, sequence)
    other_text = ids.copy()
    other_text[0, :4] = (other_text[0, :4] + 5) % 200 + 3
    assert rel_max(jax_melody_logits(directory, other_text, mask, chroma, sequence)[0], base[0]) > 0.01
    assert rel_max(jax_melody_logits(directory, ids, mask, random_chroma(1, 2), sequence), base) > 0.05


@pytest.mark.parametrize("padding", [0, 5])
def test_kv_cache_decoding_equals_teacher_forcing(hf_musicgen_melody, melody_inputs, padding):
    """Prefix and 5 steps in one prefill call, then one compiled step per position. With `padding` extra
    text positions (a length bucket) and `text_length`, the padding is masked and left out of the
    positions: the same logits as without it."""
    _, directory = hf_musicgen_melody
    ids, mask, chroma, sequence = melody_inputs
    full = jax_melody_logits(directory, ids, mask, chroma, sequence)
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    model = LMModel(config)
    text = encode_ids(t5_config, t5_params, ids, mask)
    n = text.shape[1]
    text = jnp.pad(text, ((0, 0), (0, padding), (0, 0)))
    context = model.apply(
        params, text, jnp.pad(mask, ((0, 0), (0, padding))), chroma, jnp.int32(n), method=LMModel.condition
    )
    assert context["prefix"].shape[1] == CHROMA_FRAMES + n + padding
    cache = init_cache(config, 2, CHROMA_FRAMES + n + padding + sequence.shape[-1], block=8)  # prefill: 5 blocks
    assert rel_max(cached_logits(model, params, sequence, context, cache, prefix=True), full) < 1e-5


def test_null_chroma_is_bin_zero():
    from musicgen_jax.config import LMConfig

    chroma = np.asarray(null_chroma(LMConfig(chroma_bins=12), 2))
    assert chroma.shape == (2, 235, 12)
    np.testing.assert_array_equal(chroma[..., 0], 1.0)
    assert chroma.sum() == 2 * 235


def generate(directory, ids, mask, chroma, frames=50, seeds=(0, 1)):
    t5_config, t5_params = load_t5(directory)
    config, params = load(directory)
    text = encode_ids(t5_config, t5_params, ids, mask)
    return np.asarray(
        generate_tokens(
            config,
            params,
            text,
            mask,
            row_keys(list(seeds[: len(ids)])),
            frames,
            SamplingParams(top_k=1, cfg_coef=3.0),
            chroma=None if chroma is None else jnp.asarray(chroma),
        )
    )


def test_greedy_tokens_equal_transformers(hf_musicgen_melody, melody_inputs):
    """A batch of two prompts of 7 and 4 tokens (zero-padded, unmasked in the prefix, as both references
    do) with two melodies, 50 frames (prefix 24 + 7, then 53 steps: past the first 64-slot KV-cache
    block), equal to transformers' greedy `generate` on the same batch; text alone (the null chroma)
    too. Guards: another melody, or another prompt, changes the tokens."""
    model, directory = hf_musicgen_melody
    ids, mask, chroma, _ = melody_inputs
    codes = generate(directory, ids, mask, chroma)
    expected = hf_generate_codes(model, ids, mask, 50, input_features=chroma)
    assert codes.shape == expected.shape == (2, 4, 50) and len(np.unique(expected)) > 30
    np.testing.assert_array_equal(codes, expected)
    text_only = generate(directory, ids[1:, :4], mask[1:, :4], None)
    np.testing.assert_array_equal(text_only, hf_generate_codes(model, ids[1:, :4], mask[1:, :4], 50))
    assert (generate(directory, ids, mask, random_chroma(1, 2)) != codes).mean() > 0.3
    other_text = ids.copy()
    other_text[:, :3] = (other_text[:, :3] + 5) % 200 + 3
    assert (generate(directory, other_text, mask, chroma) != codes).mean() > 0.15


@pytest.mark.slow
def test_stereo_melody_greedy_tokens_equal_transformers(tmp_path, spiece_dir, melody_inputs):
    """A stereo-melody model (8 codebooks [L0, R0, ...], delays 0, 0, 1, 1, ...; chroma still mono): greedy
    tokens of a prompt with a melody equal transformers'."""
    model, directory = save_hub_layout(tiny_hf_musicgen(seed=3, audio_channels=2, melody=True), tmp_path, spiece_dir)
    ids, mask, chroma, _ = melody_inputs
    codes = generate(directory, ids[:1], mask[:1], chroma[:1])
    expected = hf_generate_codes(model, ids[:1], mask[:1], 50, input_features=chroma[:1])
    assert codes.shape == expected.shape == (1, 8, 50) and len(np.unique(expected)) > 30
    np.testing.assert_array_equal(codes, expected)


def melody_clip(seconds: float, sample_rate: int, channels: int, notes: tuple[float, ...]) -> np.ndarray:
    """`[channels, T]` float32: sine notes of equal length in sequence, a melody the chroma follows."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = np.asarray(notes)[np.minimum((t / seconds * len(notes)).astype(int), len(notes) - 1)]
    wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate)
    return np.repeat(wave[None], channels, axis=0).astype(np.float32)


@pytest.mark.e2e
def test_sample_py_melody_equals_transformers(hf_musicgen_melody, hf_tokenizer, tmp_path, monkeypatch):
    """`sample.py --melody A --melody B --save-codes`, greedy: two prompts, a 1.5 s melody at 32 kHz mono and a
    2 s one at 44.1 kHz stereo (resampled, downmixed, zero-padded to the longest as both references collate
    a batch): the same tokens as transformers' `generate` with that chroma as `input_features` (which it
    tiles to its chroma_length itself)."""
    model, directory = hf_musicgen_melody
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_audio(files[0], melody_clip(1.5, 32000, 1, (262.0, 330.0, 392.0)), 32000, strategy="none")
    write_audio(files[1], melody_clip(2.0, 44100, 2, (440.0, 494.0, 587.0, 659.0)), 44100, strategy="none")
    prompts = ["calm piano melody", "Energetic rock song with electric guitars and drums!"]
    args = [
        "--model",
        str(directory),
        "--prompt",
        prompts[0],
        "--prompt",
        prompts[1],
        "--duration",
        "1",
        "--top-k",
        "1",
        "--cfg-coef",
        "3",
        "--out",
        str(tmp_path / "out"),
    ]
    assert (
        sample.main(
            args + ["--melody", str(files[0]), "--melody", str(files[1]), "--save-codes", str(tmp_path / "codes.npy")]
        )
        == 0
    )
    codes = np.load(tmp_path / "codes.npy")
    wavs = [read_audio(f, 32000, 1)[0][0] for f in files]
    batch = np.stack([np.pad(w, (0, max(map(len, wavs)) - len(w))) for w in wavs])
    chroma = extract_chroma(batch)
    assert chroma.shape == (2, 1 + 64000 // 4096, 12) and len(np.unique(chroma.argmax(-1))) >= 4
    tokens = hf_tokenizer(prompts, padding=True, return_tensors="np")
    expected = hf_generate_codes(model, tokens["input_ids"], tokens["attention_mask"], 50, input_features=chroma)
    np.testing.assert_array_equal(codes, expected)
    assert sample.main(args + ["--save-codes", str(tmp_path / "text.npy")]) == 0
    assert (np.load(tmp_path / "text.npy") != codes).mean() > 0.3  # the melody decides the tokens


def test_silent_or_one_sample_melody_is_the_null_chroma(converted_melody):
    """A silent melody, or one of a single sample, has the chroma of silence: bin 0, the null chroma that
    text alone conditions on, so the tokens equal those of text alone."""
    model = MusicGen.get_pretrained(str(converted_melody))
    model.set_generation_params(top_k=1, duration=0.4)
    text_only = model.generate_tokens(["calm piano"])
    for wav in (np.zeros((1, 32000), np.float32), np.zeros((2, 1), np.float32)):
        _, tokens = model.generate_with_chroma(["calm piano"], wav, 32000, return_tokens=True)
        np.testing.assert_array_equal(tokens, text_only)


def test_melody_errors(converted_melody, converted, tmp_path, capsys):
    """One clear error each: a melody for a text-to-music model (API and sample.py), too many melodies,
    NaN or empty melody audio, an unreadable melody file, --melody with --continuation."""
    text_model = MusicGen.get_pretrained(str(converted))
    with pytest.raises(ValueError, match="text-to-music model: it takes no melody"):
        text_model.generate_with_chroma(["calm piano"], np.zeros((1, 100), np.float32), 32000)
    model = MusicGen.get_pretrained(str(converted_melody))
    model.set_generation_params(duration=0.2)
    with pytest.raises(ValueError, match="3 melodies for 2 descriptions"):
        model.generate_with_chroma(["a", "b"], [np.zeros(10, np.float32)] * 3, 32000)
    with pytest.raises(ValueError, match="melody 0 contains NaN"):
        model.generate_with_chroma(["a"], np.full((1, 100), np.nan, np.float32), 32000)
    with pytest.raises(ValueError, match=r"melody 1 must be \[C, T\] or \[T\] with T > 0"):
        model.generate_with_chroma(["a", "b"], [np.zeros(10, np.float32), np.zeros((1, 0), np.float32)], 32000)
    clip = tmp_path / "m.wav"
    write_audio(clip, melody_clip(0.5, 32000, 1, (440.0,)), 32000, strategy="none")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    cases = [
        (converted, ["--melody", str(clip)], "is a text-to-music model, it takes no melody"),
        (converted_melody, ["--melody", str(clip)] * 3, "--melody given 3 times for 2 prompts"),
        (converted_melody, ["--melody", str(tmp_path / "bad.wav")], "bad.wav"),
        (converted_melody, ["--melody", str(clip), "--continuation", str(clip)], "cannot be combined"),
    ]
    for directory, flags, message in cases:
        assert (
            sample.main(
                [
                    "--model",
                    str(directory),
                    "--prompt",
                    "a",
                    "--prompt",
                    "b",
                    "--duration",
                    "0.2",
                    "--out",
                    str(tmp_path / "out"),
                    *flags,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert message in err and err.count("error:") == 1, err


class FakeDemucs:
    """Stands in for `demucs` (not installable beside torch 2.13 here): drums and bass are the input
    reversed and circularly shifted (other music), other and vocals 0.75 and 0.25 of it, so vocals + other
    is the input and any other pair of stems is not."""

    samplerate, audio_channels, sources = 44100, 2, ["drums", "bass", "other", "vocals"]
    calls: list = []

    @classmethod
    def modules(cls) -> dict:
        def convert_audio(wav, from_rate, to_rate, channels):
            cls.calls.append(("convert", tuple(wav.shape), from_rate, to_rate, channels))
            out = convert_channels(resample(wav[0].numpy(), from_rate, to_rate), channels)
            return torch.from_numpy(out)[None]

        def apply_model(model, wav, device):
            cls.calls.append(("apply", tuple(wav.shape), device))
            drums, bass = wav.flip(-1), wav.roll(wav.shape[-1] // 3, -1)
            return torch.stack([drums, bass, 0.75 * wav, 0.25 * wav], dim=1)

        def get_model(name):
            cls.calls.append(("get_model", name))
            return types.SimpleNamespace(eval=lambda: cls)

        return {
            "demucs": types.ModuleType("demucs"),
            "demucs.apply": types.SimpleNamespace(apply_model=apply_model),
            "demucs.audio": types.SimpleNamespace(convert_audio=convert_audio),
            "demucs.pretrained": types.SimpleNamespace(get_model=get_model),
        }


@pytest.fixture
def no_demucs_cache():
    stems._demucs.cache_clear()
    yield
    stems._demucs.cache_clear()


def test_melody_stems_take_vocals_and_other(converted_melody, monkeypatch, no_demucs_cache):
    """stems=True: htdemucs on the melody at its rate and channels (44.1 kHz stereo), the vocals and other
    stems summed, back to the codec's rate in mono, then the chroma: here the melody itself, so the tokens
    equal those without separation (and differ with the other stems)."""
    for name, module in FakeDemucs.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeDemucs.calls.clear()
    model = MusicGen.get_pretrained(str(converted_melody))
    model.set_generation_params(top_k=1, duration=0.4)
    clip = melody_clip(1.0, 32000, 2, (262.0, 392.0))
    _, separated = model.generate_with_chroma(["calm piano"], clip, 32000, return_tokens=True, stems=True)
    _, plain = model.generate_with_chroma(["calm piano"], clip, 32000, return_tokens=True)
    np.testing.assert_array_equal(separated, plain)
    _, drums = model.generate_with_chroma(["calm piano"], clip[:, ::-1], 32000, return_tokens=True)
    assert (drums != plain).any()  # the stand-in's other stems carry another melody
    assert FakeDemucs.calls == [
        ("get_model", "htdemucs"),
        ("convert", (1, 2, 32000), 32000, 44100, 2),
        ("apply", (1, 2, 44100), "cpu"),
        ("convert", (1, 2, 44100), 44100, 32000, 1),
    ]


def test_melody_stems_without_demucs_name_the_extra(converted_melody, tmp_path, monkeypatch, capsys, no_demucs_cache):
    monkeypatch.setitem(sys.modules, "demucs", None)  # import demucs fails
    clip = tmp_path / "m.wav"
    write_audio(clip, melody_clip(0.5, 32000, 1, (440.0,)), 32000, strategy="none")
    assert (
        sample.main(
            [
                "--model",
                str(converted_melody),
                "--prompt",
                "a",
                "--duration",
                "0.2",
                "--melody",
                str(clip),
                "--melody-stems",
                "--out",
                str(tmp_path / "out.wav"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "pip install 'musicgen-jax[melody]'" in err and err.count("error:") == 1


def test_prompt_lengths_in_a_bucket_share_the_programs(hf_musicgen_melody):
    """Melody prefixes of 3 and 7 text tokens (one 8-token bucket: the padding is masked) run the same two
    compiled programs."""
    from musicgen_jax.sampling import _run_steps_jit, _start_jit

    _, directory = hf_musicgen_melody
    chroma = random_chroma(0, 1)
    generate(directory, np.array([[5, 17, 1]], np.int32), np.ones((1, 3), np.int32), chroma, frames=10)
    compiled = _run_steps_jit._cache_size(), _start_jit._cache_size()
    generate(directory, np.array([[5, 17, 33, 2, 9, 8, 1]], np.int32), np.ones((1, 7), np.int32), chroma, frames=10)
    assert (_run_steps_jit._cache_size(), _start_jit._cache_size()) == compiled


@pytest.mark.slow
def test_windows_past_max_duration_follow_the_looped_melody(converted_melody):
    """Windowed generation (25-frame windows, stride 15, 65 frames): window k, starting at second o, is
    conditioned on max_duration seconds of the melody from o on, looped (`wav[(o * sr + arange) % len]`,
    audiocraft): each window equals a greedy continuation of the previous tail with that chroma."""
    model = MusicGen.get_pretrained(str(converted_melody))
    melody = melody_clip(0.7, 32000, 1, (262.0, 330.0, 392.0, 494.0))[0]  # shorter than a window: it loops
    model.max_duration = 0.5
    model.set_generation_params(top_k=1, duration=1.3, extend_stride=0.3)
    _, long = model.generate_with_chroma(["calm piano"], melody, 32000, return_tokens=True)
    assert long.shape == (1, 4, 65)
    model.max_duration = 30.0
    window, stride = 25, 15
    for start in range(0, 65 - (window - stride), stride):
        end = min(start + window, 65)
        looped = melody[(int(start / 50 * 32000) + np.arange(16000)) % len(melody)]
        model.set_generation_params(top_k=1, duration=(end - start) / 50)
        prompt = None if start == 0 else long[:, :, start : start + window - stride]
        expected = model.generate_tokens(["calm piano"], prompt, melodies=[looped])
        np.testing.assert_array_equal(long[:, :, start:end], expected, err_msg=f"window at frame {start}")
