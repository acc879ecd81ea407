"""Optional dependencies: sampling never imports TensorFlow (the `train` extra), and a feature whose extra is
missing is one error naming the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from musicgen_jax.data import shards
from musicgen_jax.extras import MissingExtraError
from tests.processes import REPO, device_env


def test_sampling_does_not_import_tensorflow():
    code = (
        "import sys, musicgen_jax.cli.sample, musicgen_jax.musicgen, musicgen_jax.apps.demo; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=device_env(1), cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["tensorflow", "tensorflow_datasets"])
def test_a_missing_train_extra_is_named(module, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(MissingExtraError, match=r"token datasets .* pip install 'musicgen-jax\[train\]'"):
        shards.host_tensorflow() if module == "tensorflow" else shards.features(4)
