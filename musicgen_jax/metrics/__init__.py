"""Objective metrics as audiocraft computes them (its `audiocraft/metrics/`): FAD over VGGish embeddings,
KLD over PaSST's AudioSet labels, CLAP text consistency and the melody's chroma cosine similarity.

Layout: one subpackage per embedding network (`vggish/`, `passt/`, `clap/`), each a Flax port with its
front end (resampling, log-mel, framing) and its weights' key map; `networks.py` resolves and caches their
released checkpoints; the metric modules (`frechet.py`, `kld.py`, `clap_score.py`, `chroma_cosine.py`) turn
embeddings into scores; `suite.py` runs them over folders of clips (what `python -m musicgen_jax.metrics`
runs).
"""

METRICS = ("fad", "kld", "clap", "chroma")
NEEDS = {"fad": "reference", "kld": "reference", "clap": "descriptions", "chroma": "melody"}  # each one's input
ROUNDS = 200  # bootstrap draws (each of FAD's takes a 128 x 128 matrix square root, about 0.05 s)
