"""The commands: every console script of setup.cfg is installed and answers `--help`, and so does every command
of earlier releases that the README documents (the top-level scripts and the `python -m` modules), each
naming its own options."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import device_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


OPTIONS = {  # an option each command's help names
    "sample": "--prompt",
    "convert": "--format",
    "train": "--workdir",
    "prepare": "--audio",
    "codec": "roundtrip",
    "evaluate": "--data",
    "export": "--to",
    "app": "--model",
    "listen": "--samples",
    "metrics": "--generated",
}
LEGACY = {  # the command of earlier releases -> the tool it runs
    ("sample.py",): "sample",
    ("convert_torch_weights.py",): "convert",
    ("train.py",): "train",
    ("-m", "musicgen_jax.data.prepare"): "prepare",
    ("-m", "musicgen_jax.codec"): "codec",
    ("-m", "musicgen_jax.evaluate"): "evaluate",
    ("-m", "musicgen_jax.export"): "export",
    ("-m", "musicgen_jax.app"): "app",
    ("-m", "musicgen_jax.listen"): "listen",
    ("-m", "musicgen_jax.metrics"): "metrics",
}


DESCRIBED = {"prepare": "Audio folders (or manifests) -> EnCodec token datasets"}  # the module's, not a function's


def check_help(result: subprocess.CompletedProcess, tool: str) -> None:
    # absl (train) ends --help with status 1 after printing it, argparse with 0
    assert result.returncode == (1 if tool == "train" else 0), result.stderr[-2000:]
    assert OPTIONS[tool] in result.stdout + result.stderr
    assert DESCRIBED.get(tool, "") in " ".join(result.stdout.split())


def test_the_console_scripts_are_the_tools():
    scripts = console_scripts()
    assert set(scripts) == {f"musicgen-{tool}" for tool in OPTIONS}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module.startswith(("musicgen_jax.cli.", "musicgen_jax.apps.")), name
        assert callable(getattr(__import__(module, fromlist=[function]), function)), name


@pytest.mark.e2e
@pytest.mark.parametrize("tool", OPTIONS)
def test_each_console_script_answers_help(tool):
    script = BIN / f"musicgen-{tool}"
    assert script.exists(), f"{script} is not installed: pip install -e ."
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=device_env(1), cwd=REPO)
    check_help(result, tool)


@pytest.mark.e2e
@pytest.mark.parametrize("command", LEGACY, ids=" ".join)
def test_each_documented_command_still_answers_help(command):
    result = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, env=device_env(1), cwd=REPO
    )
    check_help(result, LEGACY[command])
