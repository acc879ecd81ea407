"""`musicgen-train` / `python train.py`: train the MusicGen LM on a prepared token dataset
(`musicgen_jax.train.loop`). absl flags, for ml_collections' `--config.key=value` overrides.

    musicgen-train --config configs/debug.py --workdir runs/debug --config.data_dir=data/mymusic

Started again with the same command, a run resumes from its latest checkpoint in WORKDIR/checkpoints.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from musicgen_jax.extras import MissingExtraError
from musicgen_jax.fileio import StorageError
from musicgen_jax.train.loop import TrainingError, maybe_initialize_distributed, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/NAME.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints/ and metrics.jsonl")
_NO_PROGRESS = flags.DEFINE_bool("no_progress", False, "no progress bar")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax reports every file it writes at INFO
    maybe_initialize_distributed()
    try:
        last = train(_CONFIG.value, _WORKDIR.value, progress=not _NO_PROGRESS.value)
    except (TrainingError, MissingExtraError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if last:
        print(f"step {last['step']}: loss {last['loss']:.4f}")
    return 0


def run() -> None:
    """The console script (and `train.py`): parse the flags, run `main`, exit with its status. absl's `--help`
    lists the flags of the program's main module: these are declared its key flags."""
    for holder in (_CONFIG, _WORKDIR, _NO_PROGRESS):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])
    app.run(main)


if __name__ == "__main__":
    run()
