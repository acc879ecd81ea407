"""PaSST (Koutini et al. 2022, "Efficient Training of Audio Transformers with Patchout"), the AudioSet classifier
of the KLD metric: model.py (hear21passt's `AugmentMelSTFT` front end and the ViT-style network, inference path),
weights.py (the released checkpoints' key map)."""

from musicgen_jax.metrics.passt.model import PASST_20SEC_URL, PaSST, PasstConfig

__all__ = ["PASST_20SEC_URL", "PaSST", "PasstConfig"]
