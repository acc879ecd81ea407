"""Run by `tests/train/test_multihost.py` in place of `train.py` (same arguments): `train.py`, with its samples
watched. Each time samples are generated, the fraction of the LM's weights this process holds is written to
`$MUSICGEN_JAX_TEST_RESULT.<process index>`; any `process_allgather` of more than 1 MB fails the run (the
tiny LM is 4 MB, the sampled codes and audio a few kB): the EMA is never gathered."""

import json
import os
import runpy
import sys
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from musicgen_jax.train import samples
from tests.processes import REPO, RESULT, held_fraction

LIMIT = 1 << 20
_gather = multihost_utils.process_allgather


def guarded_gather(tree, tiled: bool = False):
    size = sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
    if size > LIMIT:
        raise AssertionError(f"process_allgather of {size} bytes: the EMA is gathered")
    return _gather(tree, tiled=tiled)


class WatchedMusicGen(samples.MusicGen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        where = Path(f"{os.environ[RESULT]}.{jax.process_index()}")
        where.write_text(json.dumps({"held": held_fraction(self.lm_params), "mesh": dict(self.mesh.shape)}))


multihost_utils.process_allgather = guarded_gather
samples.MusicGen = WatchedMusicGen
sys.argv = [str(REPO / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
