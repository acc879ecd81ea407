"""The one path layer of the package: every file a user names may be a local path or a URL (gs://, and
the other schemes of `etils.epath`, the path type Orbax and TFDS take), read and written through the same
functions. Writes are whole or absent: on a local disk a temporary file renamed into place, on an object
store a local temporary file uploaded as one object (an upload is complete or not there). Failures are one
`StorageError` line naming the path."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from etils import epath

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
CHUNK = 1 << 24  # bytes per read when uploading a finished file


class StorageError(ValueError):
    """A path or URL that cannot be read or written (missing, refused, no credentials)."""


def is_url(p: str | os.PathLike) -> bool:
    return bool(SCHEME.match(os.fspath(p)))


def scheme(p: str | os.PathLike) -> str | None:
    """The scheme of URL `p` ("gs" for gs://...), None for a local path."""
    match = SCHEME.match(os.fspath(p))
    return match.group()[:-3].lower() if match else None


def path(p: str | os.PathLike) -> epath.Path:
    """`p` as the package's path type: a URL as is, a local path with `~` expanded and made absolute."""
    text = os.fspath(p)
    return epath.Path(text if is_url(text) else os.path.abspath(os.path.expanduser(text)))


def _reason(e: BaseException) -> str:
    """What went wrong, in a few words: the kinds an object store gives, else the error's first line."""
    text = f"{type(e).__name__} {e}"
    kinds = (
        (("NotFound", "FileNotFound", "response code 404", "No such file"), "not found"),
        (("PermissionDenied", "PermissionError", "Forbidden", "response code 403"), "permission denied"),
        (
            ("Unauthenticated", "DefaultCredentials", "response code 401", "authentication bearer token"),
            "no valid credentials (on a VM its service account; elsewhere `gcloud auth application-default login`)",
        ),
    )
    for needles, reason in kinds:
        if any(n in text for n in needles):
            return reason
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0][:300]


def _storage_failure(e: BaseException) -> bool:
    """An error of a file system or object-store client (OSError, TensorFlow's, google-auth's, fsspec's)."""
    module = type(e).__module__
    return isinstance(e, OSError) or module.startswith(("tensorflow", "google.", "gcsfs", "fsspec", "aiohttp"))


@contextlib.contextmanager
def reporting(p: str | os.PathLike, action: str = "read") -> Iterator[None]:
    """Turn a storage failure inside the block into one `StorageError` line: "cannot {action} {p}: ..."."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        if not _storage_failure(e):
            raise
        raise StorageError(f"cannot {action} {p}: {_reason(e)}") from e


def read_text(p: str | os.PathLike) -> str:
    with reporting(p):
        return path(p).read_text()


def read_bytes(p: str | os.PathLike) -> bytes:
    with reporting(p):
        return path(p).read_bytes()


def read_json(p: str | os.PathLike):
    text = read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise StorageError(f"{p} is not valid JSON: {e}") from e


def exists(p: str | os.PathLike) -> bool:
    with reporting(p):
        return path(p).exists()


def size(p: str | os.PathLike) -> int:
    """The size in bytes of file `p`."""
    with reporting(p):
        return path(p).stat().length


def sizes(paths: list[str | os.PathLike]) -> list[int]:
    """`size` of each file of `paths`, -1 where it is missing, asked concurrently: an object store answers
    each in a round trip, so a bucket of 100,000 files takes seconds, not an hour."""
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(lambda p: size(p) if exists(p) else -1, paths))


@contextlib.contextmanager
def local_copy(p: str | os.PathLike) -> Iterator[Path]:
    """A local file with the bytes of `p`: a local path as is, a URL downloaded to a temporary file of the
    same name (for decoders that need a file, as soundfile's and audioread's do)."""
    source = path(p)
    if not is_url(source):
        if not source.exists():
            raise StorageError(f"cannot read {source}: not found")
        yield Path(source)
        return
    with tempfile.TemporaryDirectory(prefix="musicgen-jax-") as directory:
        tmp = Path(directory) / source.name
        with reporting(source), source.open("rb") as data, open(tmp, "wb") as out:
            shutil.copyfileobj(data, out, CHUNK)
        yield tmp


def walk_files(root: str | os.PathLike) -> Iterator[epath.Path]:
    """Every file under directory `root`, recursively (following a local disk's symbolic links)."""
    top = path(root)
    with reporting(top, "list"):
        if is_url(top):
            for directory, _, names in top.walk():
                yield from (directory / name for name in names)
        else:
            for directory, _, names in os.walk(top, followlinks=True):
                yield from (epath.Path(directory) / name for name in names)


def cache_dir() -> epath.Path:
    """The package's cache, `$MUSICGEN_JAX_CACHE` (default `~/.cache/musicgen_jax`): conversions and
    compiled programs. It may be a URL: a bucket every host of a pod slice shares."""
    return path(os.environ.get("MUSICGEN_JAX_CACHE", Path.home() / ".cache" / "musicgen_jax"))


def cache_key(source: str | os.PathLike) -> str:
    """The name under `cache_dir()` of what is converted from `source`: a hub id or URL made file-name safe,
    a local path as `local-<name>-<hash of its resolved path>` (two folders of one name stay apart)."""
    local = Path(source).expanduser()
    if not is_url(source) and local.exists():
        resolved = str(local.resolve())
        return f"local-{local.resolve().name}-{hashlib.sha1(resolved.encode()).hexdigest()[:10]}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "--", os.fspath(source))


def local_cache_dir() -> Path:
    """Where local copies of remote files go (`mirror`): `cache_dir()` when that is on this machine, else
    `~/.cache/musicgen_jax`."""
    cache = cache_dir()
    return Path(Path.home() / ".cache" / "musicgen_jax" if is_url(cache) else cache)


def mirror(url: str | os.PathLike, patterns: list[str] | None = None) -> Path:
    """A local copy of the files under URL `url` whose relative paths match one of `patterns` (fnmatch, as
    huggingface_hub's `allow_patterns`; None: all), kept in `local_cache_dir()/urls`: a later call fetches only
    files that are new or whose size or time changed (as the hub's cache does for a repo). A URL of one
    file gives that file's copy."""
    root = path(url)
    with reporting(root):
        single = not root.is_dir()
        if single and not root.exists():
            raise StorageError(f"cannot read {root}: not found")
        files = [root] if single else list(walk_files(root))
        remote = {}
        for file in files:
            name = file.name if single else file.relative_to(root).as_posix()
            if patterns is None or any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
                stat = file.stat()
                remote[name] = (file, [stat.length, stat.mtime])
    local = local_cache_dir() / "urls" / hashlib.sha1(os.fspath(root).encode()).hexdigest()[:16]
    listing = local / ".listing.json"
    have = json.loads(listing.read_text()) if listing.is_file() else {}
    for name, (file, stamp) in sorted(remote.items()):
        if have.get(name) != stamp:
            with reporting(file), file.open("rb") as data, atomic_file(local / name) as tmp, open(tmp, "wb") as out:
                shutil.copyfileobj(data, out, CHUNK)
            have[name] = stamp
            write_text(listing, json.dumps(have, indent=1, sort_keys=True))
    return local / root.name if single else local


def upload_tree(local: Path, url: str | os.PathLike) -> None:
    """Replace the files under URL `url` with those of local directory `local`. The JSON files at its top
    go last: readers take a directory whose top-level JSON (its config, its marker) is there as complete."""
    target = path(url)
    remove_tree(target)
    files = [f for f in sorted(local.rglob("*")) if f.is_file()]
    last = [f for f in files if f.parent == local and f.suffix == ".json"]
    for file in [f for f in files if f not in last] + last:
        with atomic_file(target / file.relative_to(local).as_posix()) as tmp:
            shutil.copyfile(file, tmp)


def make_dirs(p: str | os.PathLike) -> epath.Path:
    """Directory `p` with its parents, created where they are missing. An object store has no directories:
    there the bucket must exist (TensorFlow's GCS client retries creating one under a missing bucket
    without end)."""
    target = path(p)
    with reporting(target, "create"):
        if not is_url(target):
            target.mkdir(parents=True, exist_ok=True)
            return target
        scheme, rest = os.fspath(target).split("://", 1)
        bucket = f"{scheme}://{rest.split('/', 1)[0]}"
        if not epath.Path(bucket).exists():
            raise StorageError(f"cannot create {target}: the bucket {bucket} does not exist")
    return target


def remove_tree(p: str | os.PathLike) -> None:
    """Remove a directory (every object under a URL prefix) if it is there."""
    target = path(p)
    with reporting(target, "remove"):
        if target.exists():
            target.rmtree()


@contextlib.contextmanager
def atomic_file(p: str | os.PathLike) -> Iterator[Path]:
    """Yield a local temporary path to write; when the block succeeds its file becomes `p` whole, when it
    fails nothing is left, so `p` is either absent, as before, or complete. Local parent directories are
    created. A failed write raises `StorageError` naming `p` (the CLIs' user-error type is ValueError)."""
    target = path(p)
    with reporting(target, "write"):
        if is_url(target):
            with tempfile.TemporaryDirectory(prefix="musicgen-jax-") as directory:
                tmp = Path(directory) / target.name
                yield tmp
                with open(tmp, "rb") as source, target.open("wb") as out:
                    out.write(b"")  # TensorFlow's writer makes no object for a file never written to
                    shutil.copyfileobj(source, out, CHUNK)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


class TextLog:
    """A text file that grows by lines (`metrics.jsonl`), first rewritten to hold `lines`. On a local disk
    each line is appended in place; an object store has no append, so there the object is rewritten whole
    with each line (a log of a few MB costs a fraction of a second per line)."""

    def __init__(self, p: str | os.PathLike, lines: list[str] = ()):
        self.path, self.lines = path(p), [line + "\n" for line in lines]
        write_text(self.path, "".join(self.lines))
        self.lines = self.lines if is_url(self.path) else None

    def append(self, line: str) -> None:
        if self.lines is not None:
            self.lines.append(line + "\n")
            write_text(self.path, "".join(self.lines))
            return
        with reporting(self.path, "write"), open(self.path, "a") as f:
            f.write(line + "\n")


def write_text(p: str | os.PathLike, text: str) -> None:
    with atomic_file(p) as tmp:
        tmp.write_text(text)


def load_npy(p: str | os.PathLike) -> np.ndarray:
    """`np.load` of the file or URL `p` (no pickles)."""
    return np.load(io.BytesIO(read_bytes(p)), allow_pickle=False)


def save_npy(p: str | os.PathLike, array: np.ndarray) -> None:
    """np.save to `p` atomically (`atomic_file`)."""
    with atomic_file(p) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_json(p: str | os.PathLike, obj) -> None:
    """`obj` as indented JSON to `p` atomically (`atomic_file`)."""
    write_text(p, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe form of a prompt: lowercase ASCII letters and digits joined by "_", at most
    `length` characters ("unconditional" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:length] or "unconditional"
