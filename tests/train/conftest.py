"""Fixtures of the training tests: the tiny transformers MusicGen checkpoints of the LM tests, and the
inputs of `train.py` runs (a token dataset with train and valid splits recording a tiny codec as its
codec, a tiny T5 with its tokenizer)."""

import pytest

from tests.codec.conftest import tiny_hf_model
from tests.datasets import write_dataset
from tests.lm.conftest import hf_musicgen, hf_musicgen_melody  # noqa: F401 (fixtures)
from tests.metrics.conftest import vggish_file  # noqa: F401 (fixture)
from tests.text.conftest import tiny_hf_t5
from tests.train import runs


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, hf_tokenizer, spiece_dir):
    """(data directory, T5 directory) for `train.py --config configs/debug.py`."""
    codec = tmp_path_factory.mktemp("codec")
    tiny_hf_model(seed=3).save_pretrained(codec)
    data = tmp_path_factory.mktemp("tokens")
    write_dataset(data, [40, 30, 35, 50, 45, 38, 41, 33] * 2 + [30, 12, 26], valid=3, codec=codec)
    t5 = tmp_path_factory.mktemp("t5")
    tiny_hf_t5(len(hf_tokenizer)).save_pretrained(t5)
    (t5 / "spiece.model").write_bytes((spiece_dir / "spiece.model").read_bytes())
    return data, t5


@pytest.fixture(scope="session")
def uninterrupted(inputs, tmp_path_factory):
    """The work directory of the debug run of `tests.train.runs` done without interruption."""
    workdir = tmp_path_factory.mktemp("run")
    runs.run(inputs, workdir)
    return workdir
