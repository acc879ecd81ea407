"""CLAP (`musicgen_jax.metrics.clap`) against transformers' `ClapModel`, laion_clap's `CLAP_Module` and
audiocraft's `CLAPTextConsistencyMetric`, all on one random network at HTSAT-base / roberta-base size
(HTSAT depths 2, 2, 12, 2, width 128 -> 1024; RoBERTa 12 layers of 768; projections to 512), every
parameter and batch-norm statistic random, a RoBERTa BPE tokenizer trained here (vocabulary of ~300).

laion_clap 1.1.7 runs with stand-ins for the modules it imports but does not use here (torchvision,
webdataset, wget, braceexpand, ftfy; timm's absence it handles itself); its `RobertaModel.from_pretrained
("roberta-base")` builds the random RoBERTa instead, and its `RobertaTokenizer.from_pretrained("roberta-base")`
(and audiocraft's) reads the trained tokenizer from an offline hub cache.

Measured (2-core CPU, float32; max abs error over the reference's max abs value): log-mel input features
4.6e-7 of transformers' `ClapFeatureExtractor` (float64); audio embeddings 1.1e-6, text 1.4e-6 of
transformers'; audio 1.5e-6, text 1.2e-6 of laion_clap's; the mean text consistency 6e-8 from audiocraft's
(-0.0347). Weight matrices are drawn with variance 1 / fan_in (see `_randomize`): at transformers' std 0.02
the embeddings are mostly biases, and dropping the relative position bias moved them by only 1.3e-4.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import re
import sys
import types

import numpy as np
import pytest
import torch

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.metrics.clap.audio import fit_length, log_mel
from musicgen_jax.metrics.clap.weights import load_clap
from musicgen_jax.metrics.clap_score import text_consistency
from tests import audiocraft_api
from tests.conftest import LINES
from tests.hub import add_repo, use_offline_cache
from tests.torch_init import constant_parameters, randomize_constants

pytestmark = pytest.mark.slow  # real-size networks on both sides

SR = 48_000
TEXTS = ["A calm piano melody with soft strings", "Energetic rock song with electric guitars and drums!", "lofi"]
TOL = 1e-4

# Absent here (or without a build for this torch), imported by laion_clap / audiocraft but not run.
STANDINS = tuple(m for m in audiocraft_api.UNUSED if m not in ("laion_clap", "torchmetrics")) + (
    "webdataset",
    "wget",
    "braceexpand",
    "ftfy",
)


class _Finder(audiocraft_api._Finder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STANDINS and name not in sys.modules:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None


@contextlib.contextmanager
def _standins():
    """The stand-ins importable inside the block only: the empty modules made there leave sys.modules after it
    (objects made in the block keep them), so that later tests import their own working stand-ins."""
    finder, before = _Finder(), set(sys.modules)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if isinstance(sys.modules[name], audiocraft_api._Absent):
                del sys.modules[name]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A byte-level BPE RoBERTa tokenizer (vocab.json + merges.txt; <s>=0, <pad>=1, </s>=2) trained on LINES."""
    from tokenizers import ByteLevelBPETokenizer

    directory = tmp_path_factory.mktemp("roberta_tok")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        LINES * 5 + TEXTS, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tok.save_model(str(directory))
    return directory


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tokenizer_dir):
    """An offline hub cache whose `roberta-base` holds the trained tokenizer."""
    cache = tmp_path_factory.mktemp("hub")
    add_repo(cache, "roberta-base", tokenizer_dir)
    return cache


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, hub):
    use_offline_cache(monkeypatch, hub)


def _randomize(module, seed: int) -> None:
    """Every parameter random: weight matrices (and the relative position tables) drawn with variance
    1 / fan_in, so that the input, not the biases, dominates the embeddings (transformers' std 0.02 leaves
    18 Swin blocks' outputs mostly bias); norm scales and biases random; batch-norm statistics random."""
    randomize_constants(module, seed, bias_std=0.02)
    generator = torch.Generator().manual_seed(seed + 1)
    for name, p in module.named_parameters():
        if p.ndim >= 2 and not re.search(r"embeddings\.|_extractor\.", name):  # not laion_clap's STFT / mel kernels
            p.copy_(torch.randn(p.shape, generator=generator) / np.sqrt(np.prod(p.shape[1:])))
    assert not constant_parameters(module)
    for name, buf in module.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=generator) * 10 - 30)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=generator) * 300 + 50)


def _hf_config(vocab: int):
    from transformers import ClapConfig

    return ClapConfig(
        audio_config=dict(patch_embeds_hidden_size=128, hidden_size=1024, depths=[2, 2, 12, 2], enable_fusion=False),
        text_config=dict(
            vocab_size=vocab,
            num_hidden_layers=12,
            layer_norm_eps=1e-5,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=1,
        ),
        projection_dim=512,
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory, tokenizer_dir):
    """(transformers ClapModel, its feature extractor, its save_pretrained directory, HF tokenizer)."""
    from transformers import ClapFeatureExtractor, ClapModel, RobertaTokenizer

    tokenizer = RobertaTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = ClapModel(_hf_config(len(tokenizer))).eval()
    with torch.no_grad():
        _randomize(model, 0)
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14_000, truncation="rand_trunc")
    directory = tmp_path_factory.mktemp("clap_hf")
    model.save_pretrained(directory)
    extractor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, extractor, directory, tokenizer


@pytest.fixture(scope="module")
def clips():
    """Two 4 s clips (repeated and padded to 10 s) and two of 12 s (cropped), [4, T] at 48 kHz."""
    rng = np.random.default_rng(0)
    short = rng.standard_normal((2, 4 * SR)).astype(np.float32) * 0.3
    long = rng.standard_normal((2, 12 * SR)).astype(np.float32) * 0.3
    return short, long


@pytest.fixture(scope="module")
def ours(hf):
    return load_clap(hf[2])


def _hf_features(extractor, wavs, seed):
    np.random.seed(seed)  # the crop offsets: np.random.randint per clip, as laion_clap draws them
    return extractor(list(wavs), sampling_rate=SR, return_tensors="pt")["input_features"]


def test_front_end_matches_feature_extractor(hf, ours, clips):
    _, extractor, _, _ = hf
    cfg = ours.config.audio
    for wavs in clips:
        offsets = ours.crop_offsets(*wavs.shape, seed=3)
        mel = np.asarray(log_mel(fit_length(wavs, cfg.clip_samples, offsets), cfg))
        expected = _hf_features(extractor, wavs, seed=3)[:, 0].numpy()
        assert mel.shape == expected.shape == (2, 1001, 64)
        assert rel(mel, expected) < 1e-5


def test_embeddings_match_transformers(hf, ours, clips):
    model, extractor, _, tokenizer = hf
    for wavs in clips:
        features = _hf_features(extractor, wavs, seed=5)
        with torch.no_grad():
            pooled = model.audio_model(input_features=features).pooler_output
            expected = torch.nn.functional.normalize(model.audio_projection(pooled), dim=-1).numpy()
        got = ours.audio_embeddings(wavs, seed=5)
        assert got.shape == (2, 512)
        assert rel(got, expected) < TOL
    tokens = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        pooled = model.text_model(**tokens).pooler_output
        expected = torch.nn.functional.normalize(model.text_projection(pooled), dim=-1).numpy()
    np.testing.assert_array_equal(ours.tokenizer(TEXTS)[0], tokens["input_ids"].numpy())
    got = ours.text_embeddings(TEXTS)
    assert got.shape == (3, 512)
    assert rel(got, expected) < TOL


@pytest.fixture(scope="module")
def laion(tokenizer_dir, hub):
    """laion_clap's CLAP_Module(enable_fusion=False, amodel="HTSAT-base"), random, with its `.pt` path."""
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    vocab = len(RobertaTokenizer.from_pretrained(tokenizer_dir))
    config = RobertaConfig(vocab_size=vocab, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    mp = pytest.MonkeyPatch()
    use_offline_cache(mp, hub)
    mp.setattr(RobertaModel, "from_pretrained", classmethod(lambda cls, *a, **k: RobertaModel(config)))
    with _standins():
        import laion_clap

        torch.manual_seed(1)
        module = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-base", device="cpu")
    with torch.no_grad():
        _randomize(module.model, 1)
    module.eval()
    yield module, mp
    mp.undo()


@pytest.fixture(scope="module")
def laion_pt(laion, tmp_path_factory):
    path = tmp_path_factory.mktemp("laion") / "clap.pt"
    state = {f"module.{k}": v for k, v in laion[0].model.state_dict().items()}
    torch.save({"epoch": 15, "state_dict": state}, path)
    return path


def test_laion_checkpoint_matches_laion_clap(laion, laion_pt, clips):
    module, _ = laion
    ours = load_clap(laion_pt)  # tokenizer: "roberta-base" from the (offline) hub cache
    for i, wavs in enumerate(clips):
        np.random.seed(7 + i)
        with torch.no_grad():
            expected = module.get_audio_embedding_from_data(torch.from_numpy(wavs), use_tensor=True).numpy()
        assert rel(ours.audio_embeddings(wavs, seed=7 + i), expected) < TOL
    with torch.no_grad():
        expected = module.get_text_embedding(TEXTS, use_tensor=True).numpy()
    assert rel(ours.text_embeddings(TEXTS), expected) < TOL


def test_text_consistency_matches_audiocraft(laion, laion_pt, monkeypatch):
    module, _ = laion
    with _standins():
        from audiocraft.metrics import clap_consistency

    # the module's own `laion_clap` is None when another test imported audiocraft.metrics without the stand-ins
    monkeypatch.setattr(clap_consistency, "laion_clap", types.SimpleNamespace(CLAP_Module=lambda **kwargs: module))
    monkeypatch.setattr(clap_consistency, "load_clap_state_dict", lambda model, path: None)
    monkeypatch.setattr(clap_consistency.AudioCraftEnvironment, "resolve_reference_path", lambda path: path)
    metric = clap_consistency.CLAPTextConsistencyMetric("unused.pt", model_arch="HTSAT-base")
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((3, 2, 3 * 32_000)) * 0.3).astype(np.float32)  # stereo 3 s at 32 kHz
    with torch.no_grad():
        metric.update(torch.from_numpy(audio), TEXTS, torch.full((3,), audio.shape[-1]), torch.full((3,), 32_000))
    expected = metric.compute()
    per_clip = text_consistency(load_clap(laion_pt), list(audio), TEXTS, 32_000)
    assert per_clip.shape == (3,)
    assert abs(float(per_clip.mean()) - expected) < 1e-5 * max(1.0, abs(expected))


def test_bad_checkpoint_names_the_key(hf, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from musicgen_jax.metrics.clap.weights import convert

    directory = tmp_path / "bad"
    shutil.copytree(hf[2], directory)
    state = load_file(str(directory / "model.safetensors"))
    key = "audio_model.audio_encoder.layers.2.blocks.5.attention.self.relative_position_bias_table"
    del state[key]
    state["text_model.pooler.dense.bias"] = state["text_model.pooler.dense.bias"][:-1]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"relative_position_bias_table[\s\S]*text_model\.pooler\.dense\.bias"):
        convert(directory)
