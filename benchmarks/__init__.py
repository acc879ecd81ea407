"""Benchmarks of musicgen_jax against the PyTorch reference; run as modules, e.g. `python -m benchmarks.codec`."""
