"""The benchmarks' shared table writer, and benchmarks/gpu.sh, the GPU sampling benchmark
(`python -m benchmarks.sampling_gpu`), on the CPU with the tiny model, so that it runs when a GPU comes: the table it
writes, and its time budget. The storage benchmark (local disk against the GCS emulator) at tiny sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, sampling_gpu, storage

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = [
    "JAX steps/s",
    "transformers steps/s",
    "ratio JAX/transformers",
    "JAX real-time factor",
    "transformers real-time factor",
    "JAX compile s",
    "bound steps/s",
]


def table(text: str) -> list[dict[str, str]]:
    """The rows of the section's table, each as {column title: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)) for line in lines[1:]]


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }  # compiles in half the time; speed is not checked
    arguments = [
        "--models",
        "tiny",
        "--batches",
        "1",
        "--dtypes",
        "float32,bfloat16",
        "--frames",
        "8",
        "--torch-frames",
        "4",
        "--runs",
        "1",
    ]
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), *arguments], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = (out / "gpu_sampling.md").read_text()
    assert text.startswith(sampling_gpu.TITLE + "\n") and text in done.stdout  # written and printed
    # the script's command, not the module it runs
    assert f"\nCommand: `benchmarks/gpu.sh {' '.join(arguments)}`\n" in text
    rows = table(text)
    assert [(r["model"], r["batch (rows with CFG)"], r["dtype"]) for r in rows] == [
        ("tiny", "1 (2)", "float32"),
        ("tiny", "1 (2)", "bfloat16"),
    ]  # in the order asked for
    for row in rows:
        assert all(float(row[column].strip("*")) > 0 for column in NUMBERS), row
        rates = float(row["JAX steps/s"]) / float(row["transformers steps/s"])  # of 11 and 7 steps
        assert float(row["ratio JAX/transformers"].strip("*")) == pytest.approx(rates, rel=0.06)
        loop, process = row["JAX peak GiB (decode loop / process)"].split(" / ")
        assert float(loop) > 0 and process == "n/a" and row["transformers peak GiB"] == "n/a"  # no device stats
    bound = {row["dtype"]: float(row["bound steps/s"]) for row in rows}
    assert bound["bfloat16"] == pytest.approx(2 * bound["float32"], rel=1e-3)  # half the weight bytes per step
    assert "0 of 2 configurations skipped" in text and "compile phases: tiny " in text and "(2 loops)." in text
    assert "JAX 8 frames (11 steps), transformers 4 (7 steps)" in text


@pytest.mark.slow
def test_storage_benchmark_at_tiny_sizes():
    """`python -m benchmarks.storage` (its own emulator) prints its table; RESULTS.md is left alone."""
    results = common.RESULTS.read_text()
    arguments = ["--examples", "20", "--batch-size", "2", "--batches", "2", "--rounds", "1", "--layers", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.storage", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = done.stdout[done.stdout.index(storage.TITLE) :]
    rows = {row[""]: row for row in table(text)}
    assert list(rows) == [
        "pipeline start-up s",
        "pipeline batches/s",
        "checkpoint save s",
        "checkpoint restore s",
        "dataset bytes",
        "checkpoint bytes",
    ]
    for row in rows.values():
        assert float(row["local"].replace(",", "")) > 0 and float(row["emulator"].replace(",", "")) > 0, row
    assert rows["dataset bytes"]["local"] == rows["dataset bytes"]["emulator"]
    assert rows["checkpoint bytes"]["ratio emulator/local"] == "1.00"
    assert "bitwise equal (local) and bitwise equal (emulator)" in text and "1 of its 24 decoder layers" in text
    assert common.RESULTS.read_text() == results


def test_time_budget_skips_and_says_so(tmp_path):
    out = tmp_path / "gpu.md"
    sampling_gpu.main(
        [
            "--models",
            "tiny,small",
            "--batches",
            "2,1,2",
            "--dtypes",
            "bfloat16,float32",
            "--frames",
            "8",
            "--budget-seconds",
            "0.001",
            "--out",
            str(out),
        ]
    )
    text = out.read_text()
    rows = table(text)
    assert len(rows) == 8 and "8 of 8 configurations skipped" in text
    # in the order of growing cost the budget rule assumes: sizes as given, batches ascending within a dtype
    assert [(r["model"], r["dtype"], r["batch (rows with CFG)"]) for r in rows[:4]] == [
        ("tiny", "bfloat16", "1 (2)"),
        ("tiny", "bfloat16", "2 (4)"),
        ("tiny", "float32", "1 (2)"),
        ("tiny", "float32", "2 (4)"),
    ]
    for row in rows:
        assert row["JAX steps/s"].startswith(sampling_gpu.SKIPPED + " (about "), row
        assert float(row["bound steps/s"]) > 0  # the bound needs no measurement of the configuration


def test_each_row_is_written_as_it_comes():
    """A run stopped from outside (the device's time limit) keeps the rows before it: `on_row` gets the result
    after every row, and its report says it is partial until the last."""
    seen = []
    res = sampling_gpu.run_matrix(["tiny", "small"], [1, 2], ["bfloat16"], 8, 8, 1, 0.001, on_row=seen.append)
    assert [len(r["rows"]) for r in seen] == [1, 2, 3, 4] and seen[-1]["rows"] == res["rows"]
    partial = sampling_gpu.report(seen[1], "cmd")
    assert "Partial: written after 2 of the 4 configurations" in partial and len(table(partial)) == 2
    assert "Partial" not in sampling_gpu.report(res, "cmd")


def test_budget_runs_units_while_the_last_of_their_kind_fits():
    """A unit runs while the time used plus the last unit of its kind stays within the budget; from the first
    that does not, nothing more runs, even a unit that would fit."""
    units = [("size", 10), ("config", 3), ("config", 4), ("config", 6), ("size", 9), ("config", 1), ("config", 1)]

    def run(seconds: float) -> list[bool]:
        now = [100.0]
        budget = sampling_gpu.Budget(seconds, clock=lambda: now[0])
        ran = []
        for kind, took in units:
            ran.append(budget.allows(kind))
            if ran[-1]:
                now[0] += took
                budget.spent(kind, took)
        return ran

    # used before each unit: 0, 10, 13, 17, 23, (32, 33); needed: that plus the last of its kind (0, 0, 3, 4, 10, 6)
    assert run(30) == [True] * 4 + [False] * 3  # 23 + 10 > 30; then 23 + 6 would fit, but the run has stopped
    assert run(33) == [True] * 5 + [False] * 2  # 23 + 10 fits exactly; then 32 + 6 > 33
    assert run(100) == [True] * 7


def test_table_writer_formats_each_column_and_keeps_every_cell():
    columns = {"name": "{}", "s": common.with_min(2), "rate": common.sig, "ratio": "**{:.2f}**", "n": "{:,}"}
    text = common.table(columns, [("a", (1.234, 1.0), 12.34, 2.0, 1234), ("b", "n/a", 0.01234, "-", 5)])
    assert text.splitlines() == [
        "| name | s | rate | ratio | n |",
        "|---|---|---|---|---|",
        "| a | 1.23 (min 1.00) | 12.3 | **2.00** | 1,234 |",
        "| b | n/a | 0.0123 | - | 5 |",
    ]
    assert table(text) == [
        {"name": "a", "s": "1.23 (min 1.00)", "rate": "12.3", "ratio": "**2.00**", "n": "1,234"},
        {"name": "b", "s": "n/a", "rate": "0.0123", "ratio": "-", "n": "5"},
    ]
    with pytest.raises(ValueError, match="a row of 2 cells in a table of 5 columns"):
        common.table(columns, [("a", 1.0)])


def test_a_section_replaces_its_namesake_and_keeps_the_rest(tmp_path):
    path = tmp_path / "RESULTS.md"
    first = common.section("## A", "cmd a", ["- fact"], common.table({"x": "{:.1f}"}, [(1.0,)]))
    common.write_section(first, path)
    common.write_section("## B\n\nbody b\n", path)
    common.write_section(first.replace("1.0", "2.0"), path)
    text = path.read_text()
    assert text.startswith(common.RESULTS_HEADER) and text.count("## A") == 1 and "| 1.0 |" not in text
    assert text.endswith("## A\n\nCommand: `cmd a`\n\n- fact\n\n| x |\n|---|\n| 2.0 |\n\n## B\n\nbody b\n")
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_out_of_memory_is_reported_on_its_side(tmp_path, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 77.00GiB")

    monkeypatch.setattr(sampling_gpu, "lower_generate", exhausted)
    out = tmp_path / "gpu.md"
    sampling_gpu.main(["--models", "tiny", "--batches", "1", "--dtypes", "float32", "--frames", "4", "--out", str(out)])
    (row,) = table(out.read_text())
    assert row["JAX steps/s"] == row["JAX real-time factor"] == sampling_gpu.OOM and row["JAX compile s"] == "-"
    assert row["ratio JAX/transformers"] == "-" and float(row["transformers steps/s"]) > 0
