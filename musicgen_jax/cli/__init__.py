"""The command-line tools, each a `main(argv=None) -> int` (train: absl's `run`), installed as console
scripts (setup.cfg): musicgen-sample, musicgen-convert, musicgen-train, musicgen-prepare, musicgen-codec,
musicgen-evaluate, musicgen-export (and the applications' musicgen-app, musicgen-listen). The commands of
earlier releases (`python sample.py`, `python -m musicgen_jax.data.prepare`, ...) call the same functions."""
