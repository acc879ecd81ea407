"""The metric networks' weights: where a released checkpoint comes from, and its conversion cache; and how the
networks run over many clips (`batched`: fixed chunks, split over a mesh's data axes).

A source is a local file or directory, a gs:// URL, an https URL of a released file (downloaded once into
`fileio.local_cache_dir()/downloads`), a hub repo id (`laion/larger_clap_music`) or one file of a hub repo
(`lukewys/laion_clap/music_audioset_epoch_15_esc_90.14.pt`). A network is converted from its source on
first use and kept under `$MUSICGEN_JAX_CACHE/metrics/` in this project's tree format
(`checkpoint.native`), like the MusicGen conversions, so later runs load without torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musicgen_jax import fileio, sharding
from musicgen_jax.checkpoint import files, native
from musicgen_jax.checkpoint.errors import CheckpointError

FORMAT = "musicgen_jax.metric_network"


def _download(url: str) -> Path:
    """A local copy of an https file, fetched once (atomically) into `local_cache_dir()/downloads`."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    local = fileio.local_cache_dir() / "downloads" / hashlib.sha1(url.encode()).hexdigest()[:10] / name
    if not local.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as response, fileio.atomic_file(local) as tmp:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, fileio.CHUNK)
        except OSError as e:
            raise CheckpointError(f"cannot download {url}: {e}") from e
    return local


def resolve(source: str | os.PathLike) -> Path:
    """The local file or directory of `source` (any form the module docstring lists)."""
    source = os.fspath(source)
    if source.startswith(("https://", "http://")):
        return _download(source)
    if not fileio.is_url(source) and not Path(source).expanduser().exists() and source.count("/") == 2:
        if source.startswith((".", "/", "~")):
            raise CheckpointError(f"checkpoint path {source} does not exist")
        from huggingface_hub import hf_hub_download

        repo, name = source.rsplit("/", 1)
        try:
            return Path(hf_hub_download(repo, name))
        except Exception as e:  # network, missing repo or file, offline mode without a cached copy
            raise CheckpointError(f"cannot fetch {name!r} of {repo!r} from the Hugging Face hub: {e}") from e
    return files.resolve(source, ["*.json", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.txt"])


def _entry(kind: str, source: str) -> epath.Path:
    return fileio.cache_dir() / "metrics" / f"{kind}-{fileio.cache_key(source)}"


def _converted(directory: str | os.PathLike) -> Path | None:
    """The local copy of `directory` if `save` wrote it (a URL is mirrored), else None."""
    config = fileio.path(directory) / native.CONFIG_FILE
    try:
        if not (fileio.exists(config) and fileio.read_json(config).get("format") == FORMAT):
            return None
    except (fileio.StorageError, AttributeError):  # unreadable or not a JSON object: not ours
        return None
    return fileio.mirror(directory) if fileio.is_url(directory) else Path(directory)


def load(kind: str, source: str | os.PathLike, convert: Callable[[Path], tuple[dict, dict]]) -> tuple[dict, dict]:
    """`(params, config)` of metric network `kind` ("vggish", "passt", "clap") from `source`:
    `convert(local path) -> ({"params": tree}, config dict)` on first use, the cached conversion after.
    A directory `save` wrote loads as it is."""
    source = os.fspath(source)
    local = None if source.startswith(("https://", "http://")) else _converted(source)
    if local is None:
        entry = _entry(kind, source)
        local = _converted(entry)
        if local is None:
            params, config = convert(resolve(source))
            save(kind, params, config, source, entry)
            local = _converted(entry)
    return _read(kind, local)


def save(kind: str, params: dict, config: dict, source: str, directory: str | os.PathLike) -> epath.Path:
    """Write a converted network (atomically) in the form `load` reads as it is."""
    return native.save_tree(directory, params, {"format": FORMAT, "kind": kind, "config": config, "source": source})


def _read(kind: str, directory: Path) -> tuple[dict, dict]:
    params, meta = native.load_tree(directory)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{directory}: a converted {meta.get('kind')!r} network, not {kind!r}")
    return params, meta["config"]


def local_mesh() -> Mesh | None:
    """A data-parallel mesh over this process's devices, or None with one device: the metric networks run
    on the process that scores (process 0 of a training run), their batches split over its devices."""
    devices = jax.local_devices()
    return sharding.make_mesh(devices=devices) if len(devices) > 1 else None


def batched(fn: Callable, arrays: Sequence[np.ndarray], size: int, mesh: Mesh | None = None) -> np.ndarray:
    """`fn(*chunk)` over `size` rows of `arrays` (`[N, ...]` each) at a time, concatenated `[N, ...]`. A shorter
    last chunk is padded (its last row repeated) to the next power of two, so that few shapes compile; with
    `mesh`, each chunk is padded to a multiple of the mesh's batch split and split over its data axes (the
    network's parameters replicated)."""
    out = []
    for start in range(0, len(arrays[0]), size):
        chunk = [np.asarray(a[start : start + size]) for a in arrays]
        rows = len(chunk[0])
        target = min(size, 1 << (rows - 1).bit_length())
        target += -target % sharding.batch_multiple(mesh)
        chunk = [np.concatenate([c, np.repeat(c[-1:], target - rows, axis=0)]) for c in chunk]
        if mesh is not None:
            axes = sharding.mesh_axes("activation_batch")
            chunk = [jax.device_put(c, NamedSharding(mesh, PartitionSpec(axes))) for c in chunk]
        out.append(np.asarray(fn(*chunk))[:rows])
    return np.concatenate(out)
