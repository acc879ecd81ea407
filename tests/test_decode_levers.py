"""benchmarks/decode_gpu.py's profile summary checked against a hand count (the script itself runs in
`benchmarks/gpu.sh --quick`, tests/test_benchmarks.py)."""

from __future__ import annotations

import pytest

from benchmarks import decode_gpu


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
