"""The benchmarks' shared table writer, and benchmarks/gpu.sh, the GPU sampling benchmark
(`python -m benchmarks.sampling_gpu`), on the CPU with the tiny model, so that it runs when a GPU comes: the table it
writes, and its time budget. The GPU training benchmark (`python -m benchmarks.train_gpu`) likewise, with its FLOP
count, its batch search and its out-of-memory fallbacks. The storage benchmark (local disk against the GCS emulator)
at tiny sizes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from transformers import MusicgenForConditionalGeneration
from transformers import T5Tokenizer as HFT5Tokenizer

from benchmarks import common, decode_gpu, sampling_gpu, storage, train_gpu
from benchmarks.sampling import CFG, TorchGenerator, hf_config
from benchmarks.text import prompt_batch, write_spiece
from benchmarks.train import step_shapes
from musicgen_jax.config import LMConfig
from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import init_params
from musicgen_jax.lm.weights import lm_config_from_hf
from musicgen_jax.sharding import make_mesh
from musicgen_jax.train.trainer import compile_step

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
    """`benchmarks/gpu.sh --quick`: its three stages with the tiny model, each section written, printed and naming
    the script's command (not the module it runs)."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_backend_optimization_level=0",
    }  # compiles in half the time; speed is not checked
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), "--quick"], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    sections = {}
    for name, module in (("train", train_gpu), ("decode", decode_gpu), ("sampling", sampling_gpu)):
        text = sections[name] = (out / f"gpu_{name}.md").read_text()
        assert text.startswith(module.TITLE + "\n") and text in done.stdout, name
        assert "\nCommand: `benchmarks/gpu.sh --quick`\n" in text, name
    (step,) = table(sections["train"])
    assert step["model"] == "tiny" and number(step["JAX tokens/s"]) > 0 and number(step["PyTorch tokens/s"]) > 0

    levers = {r["variant"]: r for r in table(sections["decode"].split("Profile of the baseline")[0])}
    assert list(levers) == list(decode_gpu.VARIANTS) and levers["baseline"]["vs baseline"] == "1.000"
    assert all(float(r["steps/s"]) > 0 for r in levers.values())
    assert levers["baseline"]["XLA_FLAGS"] == "--xla_backend_optimization_level=0"  # the process's own
    flags = decode_gpu.VARIANTS["command_buffers"].xla_flags  # in the process of its own, with its flags
    assert levers["command_buffers"]["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {flags}"
    assert "| kernel | ms per step |" in sections["decode"].split("Profile of the baseline over 4 frames")[1]

    rows = table(sections["sampling"])
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
    text = sections["sampling"]
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


def test_compiled_peer_generates_the_stock_greedy_tokens(tmp_path):
    """The compiled peer (a static KV cache, transformers' compile of the forward; on a CPU inductor's default mode)
    on the tiny model: its greedy tokens equal stock `generate`'s, also from a shorter call in the same cache first
    (the warm call), which compiles the one graph (no graph break); the next call compiles nothing, and the model
    is stock again after."""
    write_spiece(tmp_path)
    tokenizer = HFT5Tokenizer.from_pretrained(tmp_path)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration._from_config(hf_config("tiny"), attn_implementation=sampling_gpu.ATTENTION)
    generator, prompts, frames = TorchGenerator(model.eval(), tokenizer), prompt_batch(2), 6
    peer = sampling_gpu.CompiledGenerator(generator, prompts, frames, sampling_gpu.compile_setup(cuda=False))

    def greedy(n: int) -> np.ndarray:
        inputs = tokenizer(prompts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, guidance_scale=CFG, max_length=pattern.num_steps(n, (0, 1, 2, 3)))
        return generator.codes

    stock = greedy(frames)
    torch._dynamo.reset()
    graphs = [counters["stats"]["unique_graphs"]]
    with peer.installed():
        short = greedy(3)
        graphs.append(counters["stats"]["unique_graphs"])
        full = greedy(frames)
        graphs.append(counters["stats"]["unique_graphs"])
    assert np.diff(graphs).tolist() == [1, 0]
    np.testing.assert_array_equal(short, stock[..., :3])
    np.testing.assert_array_equal(full, stock)
    assert not {"generate", "_sample", "prepare_inputs_for_generation"} & set(vars(model))
    np.testing.assert_array_equal(greedy(frames), stock)


def test_peers_pick_the_columns(tmp_path):
    """`--peers` picks the peers' columns and fact lines; audiocraft's cells give the reason it has no figures."""
    headers = {}
    for peers in ("generate", "generate,compiled,audiocraft"):
        out = tmp_path / f"{peers}.md"
        arguments = ["--models", "tiny", "--batches", "1", "--dtypes", "float32", "--budget-seconds", "0.001"]
        sampling_gpu.main([*arguments, "--peers", peers, "--out", str(out)])
        text = out.read_text()
        (row,) = table(text)
        headers[peers] = list(row)
        assert ('- Peer "compiled"' in text) == ("compiled" in peers)
        assert ('- Peer "audiocraft"' in text) == ("audiocraft" in peers)
    compiled = ["compiled steps/s", "ratio JAX/compiled", "compiled compile + warm-up s", "compiled peak GiB"]
    assert set(headers["generate,compiled,audiocraft"]) - set(headers["generate"]) == {*compiled, "audiocraft steps/s"}
    assert sampling_gpu.audiocraft_status() in {"not installed", "does not import (no av)"}


# --- benchmarks.train_gpu ------------------------------------------------------------------------------

TINY_STEP = ["--models", "tiny", "--frames", "8", "--text-tokens", "4", "--steps", "2", "--peak-tflops", "1"]


def number(cell: str) -> float:
    """The leading number of a cell ("**1.23**", "1,234", "0.012 (min 0.010)")."""
    return float(cell.strip("*").split()[0].replace(",", ""))


def tiny_lm() -> LMConfig:
    return lm_config_from_hf(hf_config("tiny").to_dict())


def test_train_gpu_runs_on_the_cpu(tmp_path, capsys):
    """The whole script on the tiny model: one row, both sides measured at the cap's batch (no memory limit on a
    CPU), the MFU and the ratio as the table's own numbers and the FLOP formula give them; written and printed."""
    out = tmp_path / "gpu_train.md"
    train_gpu.main([*TINY_STEP, "--remat", "full", "--max-batch", "2", "--out", str(out)])
    text = out.read_text()
    assert text.startswith(train_gpu.TITLE + "\n") and text in capsys.readouterr().out
    (row,) = table(text)
    assert (row["model"], row["remat"], row["JAX batch (0.16 s crops)"]) == ("tiny", "full", "2")
    assert row["PyTorch batch"] == "2, checkpointed"  # the like of remat full
    columns = ["JAX step s", "JAX tokens/s", "JAX MFU %", "PyTorch step s", "PyTorch tokens/s", "PyTorch MFU %"]
    assert all(number(row[c]) > 0 for c in columns), row
    flops = train_gpu.step_flops(tiny_lm(), 2, 8, 4)["total"]
    for side in ("JAX", "PyTorch"):  # MFU % = FLOPs per step x steps per second / 1 TFLOP/s
        steps_per_second = number(row[f"{side} tokens/s"]) / (2 * 4 * 8)
        assert number(row[f"{side} MFU %"]) == pytest.approx(100 * flops * steps_per_second / 1e12, rel=0.01)
    ratio = number(row["JAX tokens/s"]) / number(row["PyTorch tokens/s"])
    assert number(row["ratio JAX/PyTorch tokens/s"]) == pytest.approx(ratio, rel=0.01)
    step, process = row["JAX peak GiB (step / process)"].split(" / ")
    assert float(step) > 0 and process == "n/a" and row["PyTorch peak GiB"] == "n/a"  # no device statistics
    assert "0 of 1 rows skipped" in text and "Partial" not in text and "**6 B (S P_audio + T P_text)" in text


def test_train_gpu_searches_the_batch_and_says_what_does_not_fit(tmp_path):
    """With a memory limit the batch is searched by compiling the step (here batch 1 only, the cap): under 1 MiB
    not even one crop fits, and neither side runs."""
    out = tmp_path / "gpu_train.md"
    train_gpu.main([*TINY_STEP, "--remat", "none", "--max-batch", "1", "--memory-gib", "0.001", "--out", str(out)])
    (row,) = table(out.read_text())
    assert row["JAX batch (0.16 s crops)"].startswith("none fits: batch 1 needs ") and row["JAX step s"] == "-"
    assert row["PyTorch batch"] == "-"


def test_train_gpu_budget_skips_and_says_so(tmp_path):
    """Nothing fits a budget of 1 ms: every row says so, in the order asked for (phase 2 runs the last size first)."""
    out = tmp_path / "gpu_train.md"
    arguments = ["--models", "tiny,small", "--remat", "dots,full", "--budget-seconds", "0.001", "--out", str(out)]
    train_gpu.main([*TINY_STEP, *arguments])
    text = out.read_text()
    rows = table(text)
    assert [(r["model"], r["remat"]) for r in rows] == [
        ("tiny", "dots"),
        ("tiny", "full"),
        ("small", "dots"),
        ("small", "full"),
    ]
    assert all(r["JAX batch (0.16 s crops)"].startswith(sampling_gpu.SKIPPED + " (about ") for r in rows)
    assert "4 of 4 rows skipped" in text and "Models (random weights): none measured" in text


def test_train_gpu_rows_say_what_ran_out_of_memory_and_what_the_budget_skipped():
    """A row whose JAX step stepped down and whose PyTorch step never fitted; one whose JAX step the budget left out,
    PyTorch's measurement kept."""
    search = {"batch": 8, "peaks": {}, "seconds": 3.0}
    jax_run = {"batch": 4, "oom": [8], "first": 2.0, "times": [0.25], "step_bytes": common.GIB, "process_peak": None}
    torch_run = {"batch": 8, "oom": [], "checkpointing": True, "first": 1.0, "times": [0.4, 0.5, 0.6], "peak": None}
    rows = [
        {
            "size": "tiny",
            "remat": "dots",
            "search": search,
            "torch": {"batch": 0, "oom": [8, 4, 2, 1], "checkpointing": False},
            "jax": {**jax_run, "compile": 20.0},
        },
        {"size": "tiny", "remat": "full", "search": search, "torch": torch_run, "jax_skipped": (30.0, 10.0)},
    ]
    res = {
        **dict(frames=8, text=4, steps=3, cap=8, budget=150, limit=None, device_limit=None, total=2, elapsed=140),
        **dict(limit_source="`--memory-gib`", fraction="0.9", threads=2, jax_device="cpu", torch_device="CPU"),
        **dict(package="commit x", load=("0.1", "0.2"), rows=rows, order=(["tiny"], ["dots", "full"])),
        "models": {"tiny": {"lm": tiny_lm(), "params": 1000, "phases": (1.0, 2.0, 3.0)}},
    }
    text = train_gpu.report(res, "cmd", 989.0)
    out_of_memory, skipped = table(text)
    assert (
        out_of_memory["JAX batch (0.16 s crops)"] == "4 (8: out of memory)" and out_of_memory["JAX tokens/s"] == "512"
    )
    assert out_of_memory["JAX peak GiB (step / process)"] == "1 / n/a"
    assert out_of_memory["PyTorch batch"] == "out of memory at 8, 4, 2, 1" and out_of_memory["PyTorch step s"] == "-"
    assert (
        out_of_memory["ratio JAX/PyTorch tokens/s"] == "-"
        and out_of_memory["JAX compile s (search / step)"] == "3 / 20"
    )
    assert skipped["JAX step s"] == sampling_gpu.SKIPPED + " (about 30 s needed, 10 s left)"
    assert skipped["PyTorch batch"] == "8, checkpointed" and skipped["PyTorch tokens/s"] == "512"  # 8 x 4 x 8 / 0.5
    assert skipped["JAX batch (0.16 s crops)"] == "8" and skipped["JAX compile s (search / step)"] == "3 / -"
    assert "1 of 2 rows skipped in part or whole" in text and "Partial" not in text


def test_step_flops_by_hand():
    """The model FLOP count of a small LM against the formula written out: its P_audio and P_text are exactly the
    model's matrices (every kernel), the rest of its parameters embeddings, norms and one bias."""
    lm = LMConfig(dim=8, num_heads=2, num_layers=3, ffn_dim=16, card=10, text_dim=6)
    # P_audio = 3 (6 x 8^2 + 2 x 8 x 16) + 4 x 10 x 8 = 2240; P_text = 3 x 2 x 8^2 + 6 x 8 = 432
    assert train_gpu.matmul_params(lm) == (2240, 432)
    leaves = jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: init_params(lm, jax.random.key(0), True)))
    kernels = sum(x.size for path, x in leaves if "kernel" in jax.tree_util.keystr(path))
    assert kernels == 2240 + 432 and sum(x.size for _, x in leaves) == kernels + 4 * 11 * 8 + 3 * 3 * 16 + 16 + 8
    # batch 2, 5 frames: S = 8 positions; 4 text positions
    flops = train_gpu.step_flops(lm, batch=2, frames=5, text=4)
    assert flops["dense"] == 6 * 2 * (8 * 2240 + 4 * 432) == 235_776
    assert flops["attention"] == 6 * 3 * 2 * 8**2 * 8 + 12 * 3 * 2 * 8 * 4 * 8 == 36_864
    assert flops["total"] == 272_640


def search_trace(peak, limit: float, cap: int) -> tuple[int, list[list[int]]]:
    """`largest_batch` over the function `peak`, with the rounds it asked for."""
    rounds = []

    def peaks(batches: list[int]) -> list[float]:
        rounds.append(batches)
        return [peak(b) for b in batches]

    return train_gpu.largest_batch(peaks, limit, cap)[0], rounds


def test_batch_search_takes_two_rounds_for_an_affine_peak():
    assert search_trace(lambda b: 1000 + 300 * b, 1000 + 300 * 37 + 100, 64) == (37, [[1, 64], [37, 38]])
    assert search_trace(lambda b: 1000 + 300 * b, 1e9, 64) == (64, [[1, 64]])  # the cap fits
    assert search_trace(lambda b: 1000 + 300 * b, 1299, 64) == (0, [[1, 64]])  # not even one
    assert search_trace(lambda b: 1000 + 300 * b, 1300, 1) == (1, [[1]])


def test_batch_search_finds_the_largest_batch_that_fits():
    """Against every batch tried one by one, for peaks that grow (affinely, faster, in steps, past a compile that
    runs out of memory) and limits anywhere, with a bounded number of rounds."""
    peaks = {
        "affine": lambda b: 7e8 + 3.3e8 * b,
        "quadratic": lambda b: 5e8 + 2e7 * b * b,
        "steps": lambda b: 1e9 * (1 + (b + 7) // 8),
        "compile runs out": lambda b: 1e9 + 1e8 * b if b < 40 else math.inf,
    }
    for name, peak in peaks.items():
        for cap in (1, 2, 3, 17, 64):
            for limit in [*np.linspace(peak(1) - 1, 1e9 + 1e8 * 60, 23), *(peak(b) for b in (1, 5, 17, 33))]:
                best = max((b for b in range(1, cap + 1) if peak(b) <= limit), default=0)
                found, rounds = search_trace(peak, limit, cap)
                assert found == best, (name, cap, limit, rounds)
                assert len(rounds) <= 2 * math.log2(cap) + 2 and all(len(r) <= 2 for r in rounds), rounds


def test_jax_step_computes_in_bfloat16_with_scanned_layers():
    """The step the benchmark times: float32 master weights, bfloat16 products, the layers one `while` loop."""
    config = train_gpu.step_config(tiny_lm(), "dots")
    assert (config.compute_dtype, config.scan_layers, config.remat, config.t5) == ("bfloat16", True, "dots", None)
    mesh = make_mesh(devices=jax.devices()[:1])
    state, batch = step_shapes(config, mesh, 1, 8, 4)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    text = compile_step(config, mesh).lower(state, batch, {}).as_text()
    products = [line for line in text.splitlines() if "dot_general" in line]
    assert sum("bf16>" in line.rsplit("->", 1)[-1] for line in products) > len(products) // 2, products
    assert "stablehlo.while" in text


def test_pytorch_step_halves_its_batch_while_out_of_memory(monkeypatch):
    tried = []

    def steps(model, lm, batch, frames, text, steps, checkpointing):
        tried.append(batch)
        if batch > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"first": 1.0, "times": [0.5], "peak": None}

    monkeypatch.setattr(train_gpu, "torch_steps", steps)
    res = train_gpu.torch_fitting(torch.nn.Linear(2, 2), tiny_lm(), 8, 8, 4, 1, checkpointing=True)
    assert tried == [8, 4, 2] and (res["batch"], res["oom"], res["checkpointing"]) == (2, [8, 4], True)


def test_jax_step_halves_its_batch_while_out_of_memory(monkeypatch):
    """Out of memory at a batch: the step is compiled again at half of it, and the state, which the failed call
    took (donated), made anew."""

    class Step:
        """A compiled step that runs out of memory above batch 1, deleting the state it was given."""

        def __init__(self, batch):
            self.batch = batch

        def __call__(self, state, data, t5):
            assert data.codes.shape[0] == self.batch
            if self.batch > 1:
                state["w"].delete()
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.00GiB")
            return {"w": state["w"] + 1}, {"loss": jnp.float32(7.6)}

    compiled, states = [], []
    monkeypatch.setattr(
        train_gpu, "compile_at", lambda config, mesh, batch, frames, text: compiled.append(batch) or Step(batch)
    )
    monkeypatch.setattr(train_gpu, "memory_analysis", lambda c: {k: 8 for k in ("argument", "output", "alias", "temp")})

    def new_state():
        states.append({"w": jnp.zeros(3)})
        return states[-1]

    config, mesh = train_gpu.step_config(tiny_lm(), "full"), make_mesh(devices=jax.devices()[:1])
    state, res = train_gpu.jax_fitting(config, mesh, Step(4), new_state, {"w": jnp.zeros(3)}, 4, 8, 4, 2)
    assert compiled == [2, 1] and len(states) == 2  # recompiled at 2 and 1; a new state after each failure
    assert (res["batch"], res["oom"], len(res["times"]), res["step_bytes"]) == (1, [4, 2], 2, 16)
    assert float(state["w"][0]) == 3  # the warm step and two timed ones on the last new state
