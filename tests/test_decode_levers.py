"""benchmarks/decode_gpu.py, the decode levers measured on a GPU, on the CPU with the tiny model: each variant's
row, a flagged variant in a process that sees its XLA flags, and the profile's per-step summary checked against
a hand count."""

from __future__ import annotations

import pytest

from benchmarks import decode_gpu
from tests.test_benchmarks import table


@pytest.mark.slow
def test_each_lever_is_measured_and_the_baseline_profiled(tmp_path):
    out = tmp_path / "decode.md"
    argv = ["--models", "tiny", "--frames", "8", "--runs", "1", "--profile-frames", "4", "--out", str(out)]
    decode_gpu.main([*argv, "--variants", "baseline,scanned,command_buffers"])
    text = out.read_text()
    assert text.startswith(decode_gpu.TITLE + "\n")
    rows = {r["variant"]: r for r in table(text.split("Profile of the baseline")[0])}
    assert list(rows) == ["baseline", "scanned", "command_buffers"]
    assert float(rows["baseline"]["steps/s"]) > 0 and rows["baseline"]["vs baseline"] == "1.000"
    assert float(rows["scanned"]["steps/s"]) > 0 and float(rows["command_buffers"]["steps/s"]) > 0
    assert rows["baseline"]["XLA_FLAGS"] == "-"
    assert rows["command_buffers"]["XLA_FLAGS"].endswith(decode_gpu.VARIANTS["command_buffers"].xla_flags)
    profile = text.split("Profile of the baseline over 4 frames")[1]
    assert "kernels," in profile and "| kernel | ms per step |" in profile


def _event(name, start, duration, process="/device:GPU:0", thread="stream 7"):
    return {"name": name, "ts": start, "dur": duration, "process": process, "thread": thread, "ph": "X"}


def test_profile_summary_per_step():
    """Two steps: a GPU's three kernels and a copy on its tracks (the host's events not counted)."""
    events = [
        _event("fusion_12", 0, 300.0),
        _event("fusion_13", 400, 100.0),
        _event("gemm_fusion", 500, 600.0),
        _event("MemcpyDtoH", 1200, 20.0),
        _event("ExecuteHelper", 0, 5000.0, process="/host:CPU", thread="python"),
    ]
    s = decode_gpu.summarize(events, steps=2, wall=0.004)
    assert s["device"] == "GPU tracks"
    assert s["kernels_per_step"] == 2.0 and s["copies_per_step"] == 0.5
    assert s["busy_per_step_ms"] == pytest.approx(1020e-3 / 2) and s["wall_per_step_ms"] == pytest.approx(2.0)
    assert s["top"][:2] == [("gemm_fusion", pytest.approx(0.3)), ("fusion", pytest.approx(0.2))]
