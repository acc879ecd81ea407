"""Test helpers: lay out a local directory like a Hugging Face hub cache entry, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants as hub_constants

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def use_offline_cache(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at `cache` and forbid network access (HF_HUB_OFFLINE)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))


def add_repo(cache: Path, repo_id: str, files_from: Path) -> Path:
    """Copy the files of `files_from` into the cache as the `main` snapshot of model repo `repo_id`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / FAKE_COMMIT
    shutil.copytree(files_from, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    return snapshot
