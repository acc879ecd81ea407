"""Benchmark the objective metrics: `musicgen_jax.metrics` against the PyTorch references on the same random
networks and the same clips (`--clips` generated and as many reference clips of `--seconds` at 32 kHz):

- FAD's embeddings: torchvggish's `VGG` over its numpy front end (`mel_features`) with Google's 1 s windows
  every 0.5 s, as fadtk and frechet-audio-distance run it, after julius' resampling to 16 kHz; then the same
  Frechet distance (scipy) on both sides;
- KLD: audiocraft's `PasstKLDivergenceMetric` (hear21passt's 20 s PaSST), `update` in batches of 8;
- CLAP text consistency: transformers' `ClapModel` (HTSAT-base, RoBERTa-base) with its `ClapFeatureExtractor`,
  after julius' resampling to 48 kHz, and a RoBERTa BPE tokenizer trained here on the descriptions.

JAX runs over all the clips twice (the first run compiles each shape it meets: reported apart), PyTorch warms up
on two clips; then each side's run over all the clips is timed.

    .venv/bin/python -m benchmarks.metrics --write    # writes the metrics section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import julius
import numpy as np
import torch

from benchmarks.common import (
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    other_load,
    parser,
    publish,
    section,
    sig,
    table,
)
from musicgen_jax.metrics import clap_score, frechet, kld
from musicgen_jax.metrics.clap.weights import load_clap
from musicgen_jax.metrics.passt.weights import load_passt
from musicgen_jax.metrics.resample import resample_frac
from musicgen_jax.metrics.suite import _vggish_embeddings
from musicgen_jax.metrics.vggish.weights import load_vggish

TITLE = "## Objective metrics (real-size networks, random weights)"
RATE = 32_000
TEXTS = [
    "lofi hip hop beat with a mellow piano",
    "energetic rock song with electric guitars and pounding drums",
    "calm ambient pads with soft strings and rain",
    "epic orchestral film score with brass and timpani",
]


def make_clips(count: int, seconds: float, seed: int) -> list[np.ndarray]:
    """`count` mono `[T]` float32 clips at 32 kHz: a few tones with vibrato, and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    clips = []
    for _ in range(count):
        wav = 0.02 * rng.standard_normal(t.size)
        for f0 in rng.uniform(100, 1200, 3):
            wav += 0.15 * np.sin(2 * np.pi * f0 * t + 2 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        clips.append(wav.astype(np.float32))
    return clips


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


# --- the references --------------------------------------------------------------------------------------


def torch_fad(model, generated, reference) -> float:
    """torchvggish embeddings (numpy front end per window, the network in batches of 64), scipy's distance."""
    from tests.metrics.test_vggish import reference_examples

    def embed(clips):
        out = []
        for clip in clips:
            wav = julius.resample_frac(torch.from_numpy(clip), RATE, 16_000).numpy().astype(np.float64)
            x = torch.from_numpy(reference_examples(wav)).float()[:, None]
            with torch.no_grad():
                rows = [model.features(x[i : i + 64]) for i in range(0, len(x), 64)]
                feats = torch.cat(rows).permute(0, 2, 3, 1).reshape(len(x), -1)
                out.append(model.embeddings[:-1](feats).numpy())
        return out

    return frechet.fad(embed(generated), embed(reference))


def torch_kld(metric, generated, reference) -> float:
    for start in range(0, len(generated), 8):
        preds = torch.from_numpy(np.stack(generated[start : start + 8]))[:, None]
        targets = torch.from_numpy(np.stack(reference[start : start + 8]))[:, None]
        sizes = torch.full((len(preds),), preds.shape[-1])
        with torch.no_grad():
            metric.update(preds, targets, sizes, torch.full((len(preds),), RATE))
    value = float(metric.compute()["kld"])
    metric.reset()
    return value


def torch_clap(model, extractor, tokenizer, clips, texts) -> float:
    wavs = [julius.resample_frac(torch.from_numpy(c), RATE, 48_000).numpy() for c in clips]
    audio, text = [], []
    with torch.no_grad():
        for start in range(0, len(wavs), 8):
            features = extractor(wavs[start : start + 8], sampling_rate=48_000, return_tensors="pt")
            pooled = model.audio_model(input_features=features["input_features"]).pooler_output
            audio.append(model.audio_projection(pooled))
            tokens = tokenizer(texts[start : start + 8], padding="max_length", max_length=77, return_tensors="pt")
            text.append(model.text_projection(model.text_model(**tokens).pooler_output))
    audio, text = torch.cat(audio), torch.cat(text)
    return float(torch.nn.functional.cosine_similarity(audio, text, dim=1).mean())


# --- the networks, saved in their released formats ------------------------------------------------------


def networks(directory: Path):
    """(torchvggish VGG, audiocraft's KLD metric, transformers CLAP + extractor + tokenizer) and the paths
    of the same weights in their released formats."""
    from tokenizers import ByteLevelBPETokenizer
    from torchvggish.torchvggish import _vgg
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, RobertaTokenizer

    from tests.metrics.hear21passt_api import reference

    torch.manual_seed(0)
    vggish = _vgg(postprocess=False).eval()
    torch.save(vggish.state_dict(), directory / "vggish.pth")
    passt_path = directory / "passt.pt"
    with reference(str(passt_path)) as (base20sec, kld_module), contextlib.redirect_stdout(io.StringIO()):
        from hear21passt.models.passt import get_model

        torch.save(get_model(arch="passt_20sec", pretrained=False, input_tdim=2000).state_dict(), passt_path)
        metric = kld_module.PasstKLDivergenceMetric(pretrained_length=20)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 20, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    clap_dir = directory / "clap"
    clap_dir.mkdir()
    bpe.save_model(str(clap_dir))
    tokenizer = RobertaTokenizer.from_pretrained(clap_dir)
    config = ClapConfig(
        audio_config=dict(patch_embeds_hidden_size=128, hidden_size=1024, depths=[2, 2, 12, 2], enable_fusion=False),
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=514, type_vocab_size=1, pad_token_id=1),
        projection_dim=512,
    )
    clap = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14_000, truncation="rand_trunc")
    for thing in (clap, extractor, tokenizer):
        thing.save_pretrained(clap_dir)
    return (vggish, metric, (clap, extractor, tokenizer)), (directory / "vggish.pth", passt_path, clap_dir)


def run(count: int, seconds: float) -> dict:
    generated, reference = make_clips(count, seconds, 1), make_clips(count, seconds, 2)
    texts = (TEXTS * -(-count // len(TEXTS)))[:count]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MUSICGEN_JAX_CACHE"] = str(Path(tmp) / "cache")
        (vggish, metric, (clap, extractor, tokenizer)), paths = networks(Path(tmp))
        ours_vggish, ours_passt, ours_clap = load_vggish(paths[0]), load_passt(paths[1]), load_clap(paths[2])

        def jax_fad(g, r):
            to_16k = [[np.asarray(resample_frac(c, RATE, 16_000)) for c in clips] for clips in (g, r)]
            return frechet.fad(*[_vggish_embeddings(ours_vggish, clips) for clips in to_16k])

        cases = {
            "FAD (VGGish, 16 kHz)": (
                lambda g, r, t: jax_fad(g, r),
                lambda g, r, t: torch_fad(vggish, g, r),
            ),
            "KLD (PaSST, 32 kHz)": (
                lambda g, r, t: kld.passt_kld(ours_passt, g, r, RATE).mean()["kld"],
                lambda g, r, t: torch_kld(metric, g, r),
            ),
            "CLAP (HTSAT + RoBERTa, 48 kHz)": (
                lambda g, r, t: float(np.mean(clap_score.text_consistency(ours_clap, g, t, RATE))),
                lambda g, r, t: torch_clap(clap, extractor, tokenizer, g, t),
            ),
        }
        load = load_average()
        before = cpu_counters()
        for name, (ours, peer) in cases.items():
            first_jax, _ = timed(ours, generated, reference, texts)  # compiles every shape the run meets
            timed(peer, generated[:2], reference[:2], texts[:2])
            jax_s, jax_value = timed(ours, generated, reference, texts)
            torch_s, torch_value = timed(peer, generated, reference, texts)
            rows.append((name, first_jax, jax_s, torch_s, torch_s / jax_s, jax_value, torch_value))
            print(rows[-1], flush=True)
        return {
            "rows": rows,
            "count": count,
            "seconds": seconds,
            "load": (load, load_average()),
            "others": other_load(before),
        }


def report(result: dict, command: str) -> str:
    columns = {
        "metric": "{}",
        "JAX first run s (compiling)": sig,
        "JAX s": sig,
        "PyTorch s": sig,
        "ratio PyTorch/JAX": "**{:.2f}**",
        "JAX value": "{:.4g}",
        "PyTorch value": "{:.4g}",
    }
    facts = [
        f"- Clips: {result['count']} generated and {result['count']} reference clips of {result['seconds']:g} s "
        "at 32 kHz (tones with vibrato and noise); CLAP scores the generated ones against 4 descriptions",
        "- Values differ between the sides only where the peers differ from audiocraft (the PyTorch FAD here "
        "skips audiocraft's 16-bit write; transformers' CLAP front end pads a batch to its longest clip); the "
        "parity tests bound each network's difference",
        *machine_lines(torch.get_num_threads(), result["load"], others=result["others"]),
    ]
    return section(TITLE, command, facts, table(columns, result["rows"]))


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.metrics", __doc__)
    p.add_argument("--clips", type=int, default=100, help="generated clips (and as many reference clips)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    args = p.parse_args(argv)
    if args.clips < 2 or args.seconds < 1:
        p.error("--clips must be at least 2 and --seconds at least 1")
    publish(report(run(args.clips, args.seconds), command_line("benchmarks.metrics", argv)), args.write)


if __name__ == "__main__":
    main()
