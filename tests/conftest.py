"""Test-wide settings.

XLA:CPU takes about 2 s to compile each partitionable threefry RNG call (jax 0.10.2, measured on
this project's 2-core machines), which made random initialization of a tiny codec take 20 s; the
classic threefry compiles in 0.1 s. Tests draw random values only where no value is asserted, so
they use the classic one. JAX's persistent compilation cache is off: `sample.main`, run in-process,
would otherwise point it at one test's temporary directory for the rest of the session.

Tests never reach the network: an autouse fixture puts huggingface_hub (and transformers, which asks
it) in offline mode, in this process and, through the environment, in the subprocesses tests start.

Shared fixtures: a T5-style sentencepiece model trained here on a few lines (`spiece_dir`) and
transformers' tokenizer built from it (`hf_tokenizer`, the reference for token ids).
"""

import io

import huggingface_hub.constants as hub_constants
import jax
import pytest
from transformers import T5Tokenizer as HFT5Tokenizer

jax.config.update("jax_threefry_partitionable", False)
jax.config.update("jax_enable_compilation_cache", False)  # sample.main in-process must not cache into tmp dirs


LINES = [
    "A calm piano melody with soft strings in the background.",
    "Energetic rock song with electric guitars and drums!",
    "lofi hip hop beat, 90 bpm, chill, relaxing",
    "Orchestral film score: epic, dramatic; brass & timpani.",
    "Jazz trio — upright bass, brushed drums, and piano (live recording).",
    "80s synthwave with arpeggiated synths at 120 BPM",
    "Ambient drone, evolving pads, field recordings of rain",
    "Reggaeton con bajo fuerte y voces en español",
    "Techno 4/4 kick, hi-hats, acid 303 bassline",
]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, model_cache_dir):
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for subprocesses, and huggingface_hub's constant, read at
    import, for this process: a hub download fails at once unless the file is in the cache. Models that
    `MusicGen.get_pretrained` converts are cached in the session's temporary `model_cache_dir` (tests
    may point MUSICGEN_JAX_CACHE elsewhere), never in the user's ~/.cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(model_cache_dir))


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="session")
def spiece_dir(tmp_path_factory):
    """A directory with a T5-style sentencepiece model (pad 0, eos 1, unk 2, no bos; nmt_nfkc)."""
    import sentencepiece

    directory = tmp_path_factory.mktemp("spiece")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES * 20),
        model_writer=model,
        vocab_size=110,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        normalization_rule_name="nmt_nfkc",
        character_coverage=1.0,
        minloglevel=2,
    )
    (directory / "spiece.model").write_bytes(model.getvalue())
    return directory


@pytest.fixture(scope="session")
def hf_tokenizer(spiece_dir):
    return HFT5Tokenizer.from_pretrained(spiece_dir)


@pytest.fixture(scope="session")
def gcs():
    """A GCS emulator (`tests/gcs.py`) for the session, this process's clients pointed at it (its
    variables are set before any client starts: TensorFlow reads them once); subprocesses get them
    through `gcs.env`."""
    import os

    from tests.gcs import started

    server = started()
    os.environ.update(server.env)
    yield server
    server.stop()
