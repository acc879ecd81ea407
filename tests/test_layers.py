"""The package's import layers (README, "How the code is organized"): every module of `musicgen_jax` imports
only modules of its own layer or the layers below, the module graph (function-level imports included)
has no cycle, and library modules import the package at the top of the file (only entry points, whose
`--help` must not wait for JAX, import lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "musicgen_jax"

# Lowest first; a module belongs to the longest prefix listed. README's layer table says the same.
LAYERS = [
    ["config", "extras", "fileio", "audio", "checkpoint"],  # constants, files, audio I/O, checkpoint files and key maps
    ["sharding"],  # meshes and the logical-axis rules
    ["codec", "text", "lm", "chroma", "stems"],  # the models, each with its weights' key map
    # the metrics' networks, their weights' sources and their resampling
    ["metrics.vggish", "metrics.passt", "metrics.clap", "metrics.networks", "metrics.resample"],
    ["sampling", "components", "metrics"],  # the decode loop; a model's three parts; the objective metrics
    ["convert"],  # the PyTorch formats (transformers, audiocraft): reading and export
    ["train.rundir"],  # a training run's directory read as a model
    ["musicgen"],  # the MusicGen API
    ["data"],  # token datasets: preparation, shards, the input pipeline
    ["train"],  # the train step, the run loop, samples during training
    ["evaluate", "export"],  # whole-model operations behind the tools
    ["cli", "apps", "app", "listen", "__main__", ""],  # the tools, the applications (and the package's facade)
]
# may import the package lazily, with `*.__main__`: the tools (a fast `--help`) and data.prepare (the data package
# imports without JAX and T5, which only preparing needs)
LAZY = ("cli", "apps", "evaluate", "export", "data.prepare", "")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix of `module` (`__main__` modules are entry points)."""
    if module.split(".")[-1] == "__main__":
        return len(LAYERS) - 1
    best = (-1, 0)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + ".") or prefix == "":
                best = max(best, (len(prefix), index))
    return best[1]


def imports() -> dict[str, list[tuple[str, int, bool]]]:
    """`{module: [(imported module, line, at top level)]}` over the package's imports of itself, but those of a
    module's `if __name__ == "__main__":` block (an entry point's code, such as `python -m
    musicgen_jax.data.prepare` calling `musicgen_jax.cli.prepare`)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        main_blocks = [n for n in tree.body if isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)]
        skipped = {id(node) for block in main_blocks for node in ast.walk(block)}
        found = []
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "musicgen_jax":
                base = node.module.removeprefix("musicgen_jax").lstrip(".")
                names = [f"{base}.{a.name}".lstrip(".") for a in node.names]
                targets = [n for n in names if n in modules] or [base]
            elif isinstance(node, ast.Import):
                targets = [
                    a.name.removeprefix("musicgen_jax").lstrip(".")
                    for a in node.names
                    if a.name.split(".")[0] == "musicgen_jax"
                ]
            else:
                continue
            found += [(target, node.lineno, id(node) in top) for target in targets if target in modules]
        graph[module] = found
    return graph


def test_every_module_has_a_layer():
    for module in imports():
        assert (
            module == ""
            or any(module == p or module.startswith(p + ".") for ps in LAYERS for p in ps if p)
            or module.endswith("__main__")
        ), module


def test_imports_only_go_down():
    upward = [
        f"musicgen_jax.{m}:{line} imports musicgen_jax.{t} (layer {layer(t)} above {layer(m)})"
        for m, targets in imports().items()
        for t, line, _ in targets
        if layer(t) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph = {
        m: {t for t, _, _ in targets if t != m and not m.startswith(t + ".") and t != ""}
        for m, targets in imports().items()
    }
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_library_modules_import_the_package_at_the_top():
    lazy = [
        f"musicgen_jax.{m}:{line} imports musicgen_jax.{t} inside a function"
        for m, targets in imports().items()
        if m and not m.endswith("__main__") and not any(m == p or m.startswith(p + ".") for p in LAZY if p)
        for t, line, top in targets
        if not top
    ]
    assert not lazy, "\n".join(lazy)


def test_the_readme_layout_shows_every_module():
    """README's "How the code is organized" names every folder and module of the package."""
    readme = (PACKAGE.parent / "README.md").read_text()
    start = readme.index("## How the code is organized")
    block = readme[start : readme.index("```", readme.index("```", start) + 3)]
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py" and path.name not in block
    ]
    missing += [
        f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__" and f"{p.name}/" not in block
    ]
    assert not missing, missing


@pytest.mark.parametrize("bug", ["upward", "cycle", "lazy"])
def test_the_checks_fail_on_a_planted_import(bug, monkeypatch, tmp_path):
    """A copy of the package with one planted import fails the matching check."""
    import shutil

    copy = tmp_path / "musicgen_jax"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "codec" / "quantizer.py"
    line = {
        "upward": "from musicgen_jax.musicgen import MusicGen\n",
        "cycle": "from musicgen_jax.codec.model import Codec\n",
        "lazy": "def _planted():\n    from musicgen_jax.config import CodecConfig\n",
    }[bug]
    target.write_text(target.read_text() + "\n" + line)
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    check = {
        "upward": test_imports_only_go_down,
        "cycle": test_no_import_cycle,
        "lazy": test_library_modules_import_the_package_at_the_top,
    }[bug]
    with pytest.raises(AssertionError):
        check()
