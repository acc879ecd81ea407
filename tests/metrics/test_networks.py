"""Where the metric networks' weights come from (`metrics.networks`): a checkpoint is converted once into
`$MUSICGEN_JAX_CACHE/metrics/` and read from there after; a converted directory loads as it is; sources are
local files, gs:// URLs (the emulator), https URLs (downloaded once) and single files of hub repos (an offline
hub cache); bad sources are one CheckpointError naming them."""

from __future__ import annotations

import io
import urllib.request

import numpy as np
import pytest

from musicgen_jax import fileio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.metrics import networks
from tests.hub import add_repo, use_offline_cache


def _convert(calls):
    def convert(path):
        calls.append(path)
        return {"params": {"w": np.frombuffer(path.read_bytes()[:8].ljust(8, b"\0"), np.uint8).astype(np.float32)}}, {
            "size": path.stat().st_size
        }

    return convert


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_converted_once_then_read_from_the_cache(tmp_path, cache):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"abcdefgh-rest")
    calls = []
    first = networks.load("vggish", source, _convert(calls))
    again = networks.load("vggish", str(source), _convert(calls))
    assert len(calls) == 1 and again[1] == first[1] == {"size": 13}
    np.testing.assert_array_equal(again[0]["params"]["w"], np.frombuffer(b"abcdefgh", np.uint8))
    (entry,) = (cache / "metrics").iterdir()
    assert entry.name.startswith("vggish-local-weights.pth-")
    assert networks.load("vggish", entry, _convert(calls))[1] == {"size": 13} and len(calls) == 1
    with pytest.raises(CheckpointError, match="a converted 'vggish' network, not 'passt'"):
        networks.load("passt", entry, _convert(calls))


def test_https_sources_are_downloaded_once(cache, monkeypatch):
    fetched = []

    def urlopen(url, timeout):
        fetched.append(url)
        return io.BytesIO(b"released bytes")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    calls = []
    url = "https://example.com/releases/v1/model.pt"
    networks.load("passt", url, _convert(calls))
    networks.load("passt", url, _convert(calls))
    assert fetched == [url] and len(calls) == 1 and calls[0].name == "model.pt"
    assert calls[0].read_bytes() == b"released bytes"
    assert networks.resolve(url) == calls[0] and fetched == [url]  # the download itself is kept

    def refused(url, timeout):
        raise OSError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(CheckpointError, match="cannot download https://example.com/other.pt: Name or service"):
        networks.load("passt", "https://example.com/other.pt", _convert(calls))


def test_one_file_of_a_hub_repo(tmp_path, cache, monkeypatch):
    files = tmp_path / "repo"
    files.mkdir()
    (files / "music.pt").write_bytes(b"clap weights")
    hub = tmp_path / "hub"
    add_repo(hub, "lukewys/laion_clap", files)
    use_offline_cache(monkeypatch, hub)
    calls = []
    networks.load("clap", "lukewys/laion_clap/music.pt", _convert(calls))
    assert calls[0].read_bytes() == b"clap weights"
    with pytest.raises(CheckpointError, match="cannot fetch 'other.pt' of 'lukewys/laion_clap'"):
        networks.load("clap", "lukewys/laion_clap/other.pt", _convert(calls))
    with pytest.raises(CheckpointError, match="checkpoint path ./missing/x.pt does not exist"):
        networks.load("clap", "./missing/x.pt", _convert(calls))


def test_a_bucket_source_and_a_bucket_cache(tmp_path, gcs, monkeypatch):
    bucket = gcs.bucket("metric-networks")
    fileio.write_text(f"{bucket}/weights/vggish.pth", "bucket weights")
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", f"{bucket}/cache")
    monkeypatch.setenv("HOME", str(tmp_path))  # local copies of the bucket's files go to ~/.cache
    calls = []
    networks.load("vggish", f"{bucket}/weights/vggish.pth", _convert(calls))
    assert calls[0].read_bytes() == b"bucket weights"
    assert [p.name for p in fileio.path(f"{bucket}/cache/metrics").iterdir()]
    networks.load("vggish", f"{bucket}/weights/vggish.pth", _convert(calls))
    assert len(calls) == 1


@pytest.mark.e2e
@pytest.mark.slow
def test_batches_split_over_the_local_devices():
    """`networks.batched` with this process's 8 host devices: VGGish, PaSST and CLAP's audio tower give one
    device's outputs (to float32 rounding) for 3 clips, padded to the 8-way split."""
    from pathlib import Path

    from tests.processes import run_json

    got = run_json(Path(__file__).with_name("sharded_networks_run.py"))
    assert got["devices"] == 8 and got["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert got["vggish"][0] == [3, 2, 128] and got["passt"][0] == [3, 527] and got["clap"][0] == [3, 512]
    for name in ("vggish", "passt", "clap"):
        assert got[name][1] < 1e-5, (name, got[name])
