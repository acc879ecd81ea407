"""Shared pieces of the side-by-side benchmarks (JAX `musicgen_jax` against PyTorch transformers).

- `time_pair` / `time_interleaved`: time callables in alternation, first call apart (JAX: compile+run).
- `median_min`: the (median, min) summary the tables use.
- `cpu_model`, `load_average`, `usable_cores`, `machine_lines`: the provenance lines of a report.
- `cpu_counters`, `other_load`: how much CPU time other processes took while the timings ran.
- `write_section`: replace one `## ` section of `benchmarks/RESULTS.md` atomically, keeping the rest.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = """# Benchmarks

Speed of musicgen_jax against the PyTorch reference (transformers), measured on the same weights and
inputs in the same run. Each section is written by the benchmark script named in it (`--write`) and
replaced when that script is run again; it records the exact command, date, machine and versions.
Ratios are PyTorch time / JAX time: above 1 means JAX is faster.
"""
RESULTS_MODE = 0o644


def _time_rounds(
    first_order: list[tuple[str, Callable[[], Any]]], round_order: list[tuple[str, Callable[[], Any]]], runs: int
) -> dict:
    """First calls in `first_order` (timed apart, outputs kept), then `runs` rounds in `round_order`."""
    result: dict = {}
    for name, fn in first_order:
        start = time.perf_counter()
        result[f"{name}_out"] = fn()
        result[name] = (time.perf_counter() - start, [])
    for _ in range(runs):
        for name, fn in round_order:
            start = time.perf_counter()
            fn()
            result[name][1].append(time.perf_counter() - start)
    return result


def time_interleaved(fns: dict[str, Callable[[], Any]], runs: int) -> dict:
    """Time several callables (each must block until its result is ready), interleaved.

    Each callable is first called once, in the order of `fns`, and that call is timed apart (for JAX
    it includes compilation, for PyTorch it is the warm-up). Then `runs` rounds call every callable
    once, in the same order, so that slow spells of a shared machine hit all of them alike.

    Returns `{name: (first_seconds, [seconds per timed run]), f"{name}_out": output of the first call}`.
    """
    return _time_rounds(list(fns.items()), list(fns.items()), runs)


def time_pair(jax_fn: Callable[[], Any], torch_fn: Callable[[], Any], runs: int) -> dict:
    """Time a JAX and a PyTorch callable (each must block until its result is ready).

    The first call of each is timed apart (PyTorch's warm-up first, then JAX's compile+run); the
    `runs` further calls alternate JAX, PyTorch, JAX, ... so that slow spells of a shared machine
    hit both alike.

    Returns `{"jax": (first, [times]), "torch": (first, [times]), "jax_out": ..., "torch_out": ...}`.
    """
    return _time_rounds([("torch", torch_fn), ("jax", jax_fn)], [("jax", jax_fn), ("torch", torch_fn)], runs)


def median_min(times: list[float]) -> tuple[float, float]:
    """(median, minimum) of a list of timings in seconds."""
    return statistics.median(times), min(times)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else `platform.processor()`, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1-minute load average as written in /proc/loadavg, or "n/a"."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def usable_cores() -> int:
    """How many CPU cores this process may run on (its affinity mask), else `os.cpu_count()`."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_counters() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, by this process) so far; None without /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait, in clock ticks
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_load(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> str:
    """Share of the machine's CPU time that other processes used between two `cpu_counters()` taken
    `wall` seconds apart, as "N%" ("n/a" without counters): a direct measure of how much the timings
    were disturbed."""
    if before is None or after is None:
        return "n/a"
    others = (after[0] - before[0]) - (after[1] - before[1])
    return f"{100 * max(others, 0.0) / (wall * usable_cores()):.0f}%"


def utc_date() -> str:
    """The current date and time, `YYYY-MM-DD HH:MM UTC`."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017 (3.10)


def machine_lines(
    threads: int | None, load: tuple[str, str], extra_versions: str = "", torch_mode: str = ""
) -> list[str]:
    """The "- Date", "- Machine", "- Versions" and "- Machine load" lines of a report section.

    `threads` is the PyTorch thread count (None: a JAX-only benchmark, torch and transformers not
    listed), `load` the 1-minute load average before and after the run (`load_average()`),
    `extra_versions` more ", name version" text appended to the versions line, `torch_mode` how the
    caller runs PyTorch (e.g. "`torch.inference_mode()`"), written after the thread count.
    """
    import jax

    versions = f"jax {jax.__version__} ({jax.devices()[0].platform})"
    load_text = f"1-minute load average {load[0]} before, {load[1]} after the run"
    if threads is not None:
        import torch
        import transformers

        mode = f", {torch_mode}" if torch_mode else ""
        versions += f", torch {torch.__version__} ({threads} threads{mode}), transformers {transformers.__version__}"
        load_text += (
            f" (this benchmark adds about {threads}); other processes on the cores distort the timings, "
            "PyTorch's OpenMP threads most"
        )
    return [
        f"- Date: {utc_date()}",
        f"- Machine: {cpu_model()}, {usable_cores()} cores ({os.cpu_count()} logical CPUs), {platform.platform()}",
        f"- Versions: {versions}{extra_versions}, Python {platform.python_version()}",
        f"- Machine load: {load_text}",
    ]


def write_section(section: str, path: Path = RESULTS) -> None:
    """Replace the `## ` section of `path` whose title line equals `section`'s first line, or append it.

    The file is split at lines starting with `## `; the header before the first section (created as
    `RESULTS_HEADER` when the file does not exist) and the other sections are kept as they are. The
    new text is written to a temporary file in the same directory, given mode 0644 and moved over
    `path` with `os.replace`, so readers see either the old or the new file, never a partial one.
    """
    title = section.splitlines()[0].rstrip() if section.strip() else ""
    if not title.startswith("## "):
        raise ValueError(f"a section must start with a '## ' title line, got {title!r}")
    text = path.read_text() if path.exists() else RESULTS_HEADER
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current))
    section = section.rstrip("\n") + "\n"
    replaced = False
    for i, part in enumerate(parts):
        if part.splitlines()[0].rstrip() == title:
            parts[i], replaced = section + ("\n" if i < len(parts) - 1 else ""), True
    if not replaced:
        parts[-1] = parts[-1].rstrip("\n") + "\n\n"
        parts.append(section)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".md")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("".join(parts))
        os.chmod(tmp, RESULTS_MODE)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, as written into RESULTS.md: `BENCHMARK_COMMAND` where a wrapper
    script that ran it (`benchmarks/gpu.sh`) set it, else the module and its arguments."""
    import sys

    return os.environ.get("BENCHMARK_COMMAND") or " ".join(
        [f".venv/bin/python -m {module}", *(sys.argv[1:] if argv is None else argv)]
    )


def publish(section: str, write: bool) -> None:
    """Print a report section and, with `write`, put it into RESULTS.md."""
    print("\n" + section)
    if write:
        write_section(section)
        print(f"wrote {RESULTS}")
