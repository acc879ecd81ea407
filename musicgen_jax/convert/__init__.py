"""Conversion from PyTorch checkpoints (transformers, audiocraft) and this project's own format."""
