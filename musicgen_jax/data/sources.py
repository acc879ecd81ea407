"""The audio files to prepare: a folder scanned recursively, or an audiocraft-style jsonl manifest.

Each input has a path relative to its root (the folder, or the manifest's directory), the absolute
file, and its raw metadata: a sidecar `.json` beside the audio file (audiocraft's `MusicDataset`
reads `Path(path).with_suffix('.json')`), updated by the music metadata fields of its manifest line.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

from etils import epath

from musicgen_jax import fileio
from musicgen_jax.audio import READ_SUFFIXES
from musicgen_jax.data.metadata import FIELDS

MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclasses.dataclass(frozen=True)
class AudioInput:
    """One audio file: `path` relative to the root (as stored in the dataset), `file` to read."""

    path: str
    file: epath.Path
    metadata: dict
    problem: str | None = None  # why the metadata could not be read (the file is then skipped)


def _sidecar(file: epath.Path) -> tuple[dict, str | None]:
    """The raw metadata of the json beside `file` ({} when there is none), or the reason it is unusable."""
    sidecar = file.with_suffix(".json")
    try:
        if not fileio.exists(sidecar):
            return {}, None
        data = json.loads(fileio.read_text(sidecar))
    except (fileio.StorageError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, f"unreadable metadata {sidecar.name}: {e}"
    if not isinstance(data, dict):
        return {}, f"metadata {sidecar.name} is not a JSON object"
    return data, None


def _from_folder(root: epath.Path) -> list[AudioInput]:
    inputs = []
    for file in fileio.walk_files(root):
        if file.name.lower().endswith(READ_SUFFIXES):
            metadata, problem = _sidecar(file)
            inputs.append(AudioInput(file.relative_to(root).as_posix(), file, metadata, problem))
    return inputs


def _manifest_lines(manifest: epath.Path) -> list[str]:
    data = fileio.read_bytes(manifest)  # a StorageError names it
    try:
        return (gzip.decompress(data) if manifest.name.endswith(".gz") else data).decode().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"cannot read the manifest {manifest}: {e}") from e


def _from_manifest(manifest: epath.Path) -> list[AudioInput]:
    root = manifest.parent
    inputs = []
    for number, line in enumerate(_manifest_lines(manifest), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest}, line {number}: not JSON ({e})") from e
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ValueError(f"{manifest}, line {number}: an entry needs a 'path' string, got {line.strip()[:200]}")
        file = root / entry["path"]
        metadata, problem = _sidecar(file)
        metadata.update({k: v for k, v in entry.items() if k in FIELDS})
        path = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
        inputs.append(AudioInput(path, file, metadata, problem))
    return inputs


def list_inputs(source: str | os.PathLike) -> tuple[epath.Path, list[AudioInput]]:
    """`(root, inputs)` for a folder or a manifest, inputs sorted by path (the dataset's order).

    Raises ValueError for a missing source, an unreadable or malformed manifest, a path listed twice,
    and when there is no audio file at all."""
    source = fileio.path(source)
    with fileio.reporting(source):
        kind = "folder" if source.is_dir() else "file" if source.is_file() else "other" if source.exists() else None
    if kind == "folder":
        root, inputs = source, _from_folder(source)
        where = f"no {', '.join(READ_SUFFIXES)} file in {source} (searched recursively)"
    elif kind == "file" and source.name.lower().endswith(MANIFEST_SUFFIXES):
        root, inputs = source.parent, _from_manifest(source)
        where = f"the manifest {source} lists no file"
    elif kind is not None:
        raise ValueError(f"{source}: expected a folder of audio files or a {' / '.join(MANIFEST_SUFFIXES)} manifest")
    else:
        raise ValueError(f"{source}: no such folder or manifest")
    if not inputs:
        raise ValueError(where)
    inputs.sort(key=lambda item: item.path)
    for first, second in zip(inputs, inputs[1:]):
        if first.path == second.path:
            raise ValueError(f"{source}: {first.path} is listed twice")
    return root, inputs
