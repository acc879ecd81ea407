"""Error paths of `sample.py` and the `MusicGen` API on the tiny MusicGen (tests/lm/conftest.py): each
user error is one clear message naming the problem (sample.py: exit status 2 and one `error:` line),
and failed writes of `--save-codes` and of converted directories leave existing files as they were."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from musicgen_jax.checkpoint import native
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.cli import sample
from musicgen_jax.components import MODEL_FILE, load_converted, save_converted
from musicgen_jax.musicgen import MusicGen
from tests.test_robustness import disk_full, half_then_disk_full, snapshot


@pytest.fixture(scope="module")
def model(converted):
    return MusicGen.get_pretrained(str(converted))


@pytest.fixture
def run_sample(converted, tmp_path, capsys):
    """sample.main on the tiny model for a 0.4 s prompt (plus `args`) -> (exit status, its `error:` lines)."""

    def run(*args: str) -> tuple[int, list[str]]:
        status = sample.main(
            [
                "--model",
                str(converted),
                "--prompt",
                "calm piano",
                "--duration",
                "0.4",
                "--out",
                str(tmp_path / "out.wav"),
                *args,
            ]
        )
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return status, [line for line in err.splitlines() if line.startswith("error")]

    return run


def test_batch_size_zero(run_sample):
    """--batch-size 0 is refused by name before the model is loaded."""
    assert run_sample("--batch-size", "0") == (2, ["error: --batch-size must be at least 1, got 0"])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("directory", "Is a directory"),
        ("\n  \n\t\n", "is empty (no non-blank line)"),
        (b"\xff\xfe\x00prompt", "'utf-8' codec can't decode"),
    ],
)
def test_unreadable_prompts_file(run_sample, tmp_path, content, message):
    """--prompts-file missing, a directory, blank or not text: one error naming --prompts-file and the cause."""
    path = tmp_path / "prompts.txt"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    status, errors = run_sample("--prompts-file", str(path))
    assert status == 2 and len(errors) == 1
    assert errors[0].startswith("error: --prompts-file") and str(path) in errors[0] and message in errors[0]


@pytest.mark.parametrize("exists, message", [(False, "no such file"), (True, "Format not recognised")])
def test_unreadable_continuation(run_sample, tmp_path, exists, message):
    """--continuation missing or not audio (random bytes named .wav): one error naming the file."""
    path = tmp_path / "intro.wav"
    if exists:
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    status, errors = run_sample("--continuation", str(path))
    assert status == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: cannot read audio file {path}: ") and message in errors[0]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--top-k", "-1", "top_k -1 (>= 0)"),
        ("--temperature", "0", "temperature 0.0 (> 0)"),
        ("--top-p", "1.5", "top_p 1.5 (in [0, 1])"),
    ],
)
def test_invalid_sampling_settings(run_sample, flag, value, message):
    """Out-of-range sampling settings: one error giving the bad value and its valid range."""
    status, errors = run_sample(flag, value)
    assert status == 2 and len(errors) == 1
    assert errors[0].startswith("error: invalid sampling settings: ") and message in errors[0]


def test_cfg_coef_one_is_fine(run_sample, tmp_path):
    """--cfg-coef 1 (guidance off, no unconditional rows) is a valid setting, not an error."""
    assert run_sample("--cfg-coef", "1", "--top-k", "5") == (0, [])
    assert (tmp_path / "out.wav").is_file()


def test_save_codes_failure_keeps_the_old_file(run_sample, tmp_path, monkeypatch):
    """--save-codes half-written when the disk fills: exit 2 with one error naming the file, which keeps
    its old bytes, and no temporary file beside it."""
    codes = tmp_path / "codes" / "codes.npy"
    codes.parent.mkdir()
    np.save(codes, np.arange(7))
    before = snapshot(codes.parent)
    monkeypatch.setattr(np, "save", half_then_disk_full(np.save))
    status, errors = run_sample("--top-k", "5", "--save-codes", str(codes))
    assert (status, errors) == (2, [f"error: cannot write {codes}: No space left on device"])
    assert snapshot(codes.parent) == before


def test_save_codes_overwrites(run_sample, tmp_path):
    """--save-codes replaces an existing file with the sampled codes and leaves nothing beside it."""
    codes = tmp_path / "codes" / "codes.npy"
    codes.parent.mkdir()
    np.save(codes, np.arange(7))
    assert run_sample("--top-k", "5", "--save-codes", str(codes)) == (0, [])
    assert np.load(codes).shape == (1, 4, 20) and os.listdir(codes.parent) == ["codes.npy"]


def test_converted_directory_failure_keeps_the_old_one(converted, tmp_path, monkeypatch):
    """`save_converted` failing at the LM, after codec/ and text/ were written: CheckpointError naming
    the directory, which keeps its old files; no temporary directory remains."""
    components = load_converted(converted)
    target = tmp_path / "model"
    target.mkdir()
    (target / MODEL_FILE).write_text("{}")
    before = snapshot(tmp_path)
    write_tree = native.write_tree

    def fail_at_lm(directory, params, meta):
        if directory.name == "lm":
            raise disk_full()
        write_tree(directory, params, meta)

    monkeypatch.setattr(native, "write_tree", fail_at_lm)
    with pytest.raises(CheckpointError, match=re.escape(f"cannot write {target}: No space left on device")):
        save_converted(components, target)
    assert snapshot(tmp_path) == before


def test_converted_directory_overwrites(converted, tmp_path):
    """`save_converted` over an existing directory replaces it whole and leaves nothing beside it."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier run")
    save_converted(load_converted(converted), target)
    assert sorted(os.listdir(target)) == ["codec", "lm", MODEL_FILE, "text"]
    assert os.listdir(tmp_path) == ["model"]
    assert load_converted(target).lm_config == load_converted(converted).lm_config


def test_continuation_errors(model):
    """generate_continuation: a prompt of the wrong rank, a description count that does not match the
    prompts, a single string as descriptions, and a prompt longer than the duration."""
    model.set_generation_params(top_k=5, duration=0.4)
    second = np.zeros((1, 32000), np.float32)
    with pytest.raises(ValueError, match=r"prompt must be \[B, C, T\] or \[C, T\], got shape \(32000,\)"):
        model.generate_continuation(second[0], 32000)
    with pytest.raises(ValueError, match="1 descriptions for 2 prompts"):
        model.generate_continuation(np.stack([second, second]), 32000, ["calm piano"])
    with pytest.raises(ValueError, match="expected a list of descriptions, got 'calm piano'"):
        model.generate_continuation(second, 32000, "calm piano")
    with pytest.raises(ValueError, match=r"the prompt \(50 frames\) is longer than the audio to generate \(20 "):
        model.generate_continuation(second, 32000, ["calm piano"])


def test_api_argument_errors(model):
    """A seed list of the wrong length, extend_stride outside (0, max_duration), no samples, and a string
    where a list of descriptions is expected: each a ValueError naming the argument."""
    model.set_generation_params(top_k=5, duration=0.4)
    with pytest.raises(ValueError, match="3 seeds for 2 descriptions"):
        model.generate_tokens(["calm piano", "rock"], seed=[0, 1, 2])
    for stride in (0, 30):
        with pytest.raises(ValueError, match=rf"extend_stride must be in \(0, 30.0\), got {stride}"):
            model.set_generation_params(extend_stride=stride)
    with pytest.raises(ValueError, match="num_samples must be at least 1, got 0"):
        model.generate_unconditional(0)
    with pytest.raises(ValueError, match="expected a non-empty list of descriptions, got 'a string'"):
        model.generate("a string")
