"""Experiment configs: one file per experiment with `get_config()` (ml_collections, big_vision style)."""
