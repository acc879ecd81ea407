"""What the benchmark scripts share: timing in alternation, the machine's provenance lines, one Markdown table
writer (its column specs format the cells), the sections of RESULTS.md and their writer."""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from musicgen_jax.fileio import atomic_file

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_HEADER = """# Benchmarks

Speed of musicgen_jax against the PyTorch reference (transformers), measured on the same weights and
inputs in the same run. Each section is written by the benchmark script named in it (`--write`) and
replaced when that script is run again; it records the exact command, date, machine and versions.
Ratios are PyTorch time / JAX time: above 1 means JAX is faster.
"""
GIB = 2**30

# --- timing -------------------------------------------------------------------------------------------


def _time_rounds(first_order: list[tuple[str, Callable]], round_order: list[tuple[str, Callable]], runs: int) -> dict:
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
    """Time callables that block until their result is ready: one first call each, in order, timed apart
    (JAX: compile+run; PyTorch: warm-up), then `runs` rounds calling each once, so that slow spells of a
    shared machine hit all alike. Returns {name: (first seconds, [seconds per run]), name_out: first output}."""
    return _time_rounds(list(fns.items()), list(fns.items()), runs)


def time_pair(jax_fn: Callable[[], Any], torch_fn: Callable[[], Any], runs: int) -> dict:
    """`time_interleaved` of "jax" and "torch", PyTorch's warm-up first, then rounds of JAX, PyTorch."""
    return _time_rounds([("torch", torch_fn), ("jax", jax_fn)], [("jax", jax_fn), ("torch", torch_fn)], runs)


def repeat_seconds(fn: Callable[[], Any], runs: int) -> list[float]:
    """Seconds of `runs` consecutive calls of `fn` after one untimed call."""
    return time_interleaved({"call": fn}, runs)["call"][1]


def median_min(times: list[float]) -> tuple[float, float]:
    """(median, minimum) of a list of timings in seconds."""
    return statistics.median(times), min(times)


# --- provenance ---------------------------------------------------------------------------------------


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


def cpu_counters() -> tuple[float, float, float] | None:
    """(CPU seconds used by the whole machine, by this process, wall clock) now; None without /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait, in clock ticks
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()


def other_load(before: tuple[float, float, float] | None) -> str:
    """Share of the machine's CPU time other processes used since `before = cpu_counters()`, as "N%" ("n/a"
    without counters): a direct measure of how much the timings were disturbed."""
    after = cpu_counters()
    if before is None or after is None:
        return "n/a"
    others = (after[0] - before[0]) - (after[1] - before[1])
    return f"{100 * max(others, 0.0) / ((after[2] - before[2]) * usable_cores()):.0f}%"


def package_state() -> str:
    """The commit of the working tree and whether `musicgen_jax/` has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head, dirty = (
            subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
            for args in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "musicgen_jax"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = sorted(line[3:] for line in dirty.splitlines() if line.strip())
    return f"commit {head.strip()}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def machine_lines(
    threads: int | None, load: tuple[str, str], extra_versions: str = "", torch_mode: str = "", others: str = ""
) -> list[str]:
    """The "- Date", "- Machine", "- Versions", "- Machine load" (and with `others`, "- During the run") lines.

    `threads`: PyTorch's thread count (None: JAX only, torch and transformers not listed); `load`: the 1-minute
    load average before and after (`load_average()`); `extra_versions`: more ", name version" text; `torch_mode`:
    how PyTorch runs, after its thread count; `others`: `other_load` over the timed calls."""
    import jax

    versions = f"jax {jax.__version__} ({jax.devices()[0].platform})"
    load_text = f"1-minute load average {load[0]} before, {load[1]} after the run"
    if threads is not None:
        import torch
        import transformers

        mode = f", {torch_mode}" if torch_mode else ""
        versions += f", torch {torch.__version__} ({threads} threads{mode}), transformers {transformers.__version__}"
        load_text += f" (this benchmark adds about {threads})"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"- Date: {date}",
        f"- Machine: {cpu_model()}, {usable_cores()} cores ({os.cpu_count()} logical CPUs), {platform.platform()}",
        f"- Versions: {versions}{extra_versions}, Python {platform.python_version()}",
        f"- Machine load: {load_text}",
    ]
    if others:
        lines.append(f"- During the run: other processes used {others} of the machine's CPU time (from /proc/stat)")
    return lines


# --- tables and sections ------------------------------------------------------------------------------

Spec = str | Callable[[Any], str]


def cell(value: Any, spec: Spec = "{}") -> str:
    """One table cell: a string as it is; else `spec`, a format string (a tuple fills its fields in order) or
    a function of the value."""
    if isinstance(value, str):
        return value
    if callable(spec):
        return spec(value)
    return spec.format(*value) if isinstance(value, tuple) else spec.format(value)


def table(columns: dict[str, Spec], rows: Iterable[Sequence]) -> str:
    """A Markdown table: `columns` maps each title to the spec of its cells (`cell`), every row gives one
    value per column."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(columns)} columns: {row!r}")
        lines.append("| " + " | ".join(cell(v, s) for v, s in zip(row, columns.values())) + " |")
    return "\n".join(lines)


def sig(x: float) -> str:
    """A rate or time: one decimal from 1 up, three significant digits below."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def with_min(digits: int) -> str:
    """The spec of a (median, min) cell: "median (min minimum)" with `digits` decimals."""
    return f"{{:.{digits}f}} (min {{:.{digits}f}})"


def section(title: str, command: str, facts: list[str], *blocks: str) -> str:
    """A RESULTS.md section: the title, the command, the "- " fact lines, then tables and short paragraphs."""
    return "\n\n".join([title, f"Command: `{command}`", "\n".join(facts), *(b for b in blocks if b)]) + "\n"


def write_section(section: str, path: Path = RESULTS) -> None:
    """Replace the `## ` section of `path` whose title line is `section`'s first line, or append it; the rest of
    the file (the header, `RESULTS_HEADER` for a new file, and the other sections) is kept as it is. The file
    is replaced atomically, so readers see the old or the new one, never a part."""
    title = section.splitlines()[0].rstrip() if section.strip() else ""
    if not title.startswith("## "):
        raise ValueError(f"a section must start with a '## ' title line, got {title!r}")
    parts: list[str] = []
    for line in (path.read_text() if path.exists() else RESULTS_HEADER).splitlines(keepends=True):
        if line.startswith("## ") or not parts:
            parts.append("")
        parts[-1] += line
    section = section.rstrip("\n") + "\n"
    titles = [part.splitlines()[0].rstrip() for part in parts]
    if title in titles:
        i = titles.index(title)
        parts[i] = section + ("\n" if i < len(parts) - 1 else "")
    else:
        parts[-1] = parts[-1].rstrip("\n") + "\n\n"
        parts.append(section)
    with atomic_file(path) as tmp:
        tmp.write_text("".join(parts))


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run: `BENCHMARK_COMMAND` where a wrapper script set it
    (`benchmarks/gpu.sh`), else the module and its arguments."""
    arguments = sys.argv[1:] if argv is None else argv
    return os.environ.get("BENCHMARK_COMMAND") or " ".join([f".venv/bin/python -m {module}", *arguments])


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The argument parser of `python -m module`, its description the docstring's first paragraph, with
    `--write`."""
    p = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--write", action="store_true", help=f"write the measured section(s) into {RESULTS}")
    return p


def publish(section: str, write: bool) -> None:
    """Print a report section and, with `write`, put it into RESULTS.md."""
    print("\n" + section)
    if write:
        write_section(section)
        print(f"wrote {RESULTS}")


def memory_analysis(compiled) -> dict[str, int] | None:
    """Device bytes of a compiled program from XLA's `memory_analysis()`: argument, output, alias (outputs in
    donated arguments' buffers) and temp; None where the backend gives no analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return {name: int(getattr(m, f"{name}_size_in_bytes")) for name in ("argument", "output", "alias", "temp")}


def peak_bytes(m: dict[str, int]) -> int:
    """The bytes live during a call of a compiled program (`memory_analysis`): arguments, temporaries and the
    outputs not aliased to arguments."""
    return m["argument"] + m["temp"] + m["output"] - m["alias"]


def memory_bandwidth(runs: int = 7, device: str = "cpu", calls: int = 1) -> dict:
    """Read bandwidth in GB/s (1e9 bytes/s): the median over `runs` of a jitted `jnp.sum` over 1 GiB of float32
    on JAX's default device, and of `torch.sum` over as many bytes on torch's `device`, as a cross-check. Each
    timing covers `calls` calls issued back to back and waited for once (on a GPU one sum takes about as long as
    launching it)."""
    import jax
    import jax.numpy as jnp
    import torch

    def rate(fn, wait) -> float:
        wait([fn()])
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            wait([fn() for _ in range(calls)])
            times.append((time.perf_counter() - start) / calls)
        return GIB / statistics.median(times) / 1e9

    jax_rate = rate(functools.partial(jax.jit(jnp.sum), jnp.ones((GIB // 4,), jnp.float32)), jax.block_until_ready)
    cuda = torch.device(device).type == "cuda"
    y = torch.ones(GIB // 4, dtype=torch.float32, device=device)
    torch_rate = rate(y.sum, lambda _: torch.cuda.synchronize() if cuda else None)
    return {"jax": jax_rate, "torch": torch_rate, "runs": runs, "calls": calls}
