"""Benchmark the T5 text encoder: JAX (`musicgen_jax.text`) against transformers' PyTorch `T5EncoderModel`.

Both sides run a t5-base-size encoder (MusicGen's text encoder: d_model 768, 12 layers, 12 heads,
d_ff 3072, ReLU MLP, vocabulary 32128) on the SAME random weights and the same prompts: transformers'
model is built with `torch.manual_seed(0)`, saved with `save_pretrained` into a temporary directory
together with a sentencepiece model trained at start-up on a few dozen music descriptions, and that
directory is loaded by both `T5TextEncoder.from_pretrained` and `T5Tokenizer` / `T5EncoderModel`
`.from_pretrained`. Token ids only index the embedding, so the small tokenizer stands in for t5-base's;
it keeps most words of the prompts whole, so the sequences are about as long as with t5-base's. PyTorch
runs with sdpa attention (transformers' default, the main comparison) and with eager attention.

Measured: end-to-end (tokenize + encode, what a text conditioner does per call), the tokenizers alone
and the models alone. JAX pads the tokens to a power-of-two length bucket and compiles once per
(batch, bucket): its first call is reported apart (compile+run). PyTorch runs under
`torch.inference_mode()` with as many threads as the process may use cores, after one warm-up call.
The timed calls interleave JAX and both PyTorch variants, `--runs` rounds; the table gives medians.
Before timing, the script checks that the token ids agree and prints the largest difference of the
hidden states at unmasked positions.

    .venv/bin/python -m benchmarks.text --write     # writes the text section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import sentencepiece
import torch
import transformers
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel
from transformers import T5Tokenizer as HFT5Tokenizer

from benchmarks.common import (
    RESULTS,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    publish,
    time_interleaved,
    usable_cores,
)
from musicgen_jax.text import T5TextEncoder
from musicgen_jax.text.encoder import encode_ids, length_bucket

SECTION_TITLE = "## Text encoder (T5-base size, random weights)"

# MusicGen-style descriptions, 8 to 40 words.
PROMPTS = [
    "lofi hip hop beat with vinyl crackle, mellow piano and soft drums",
    (
        "An energetic rock anthem with distorted electric guitars, pounding drums, a driving bass line and a "
        "soaring guitar solo, recorded live in a large stadium with a cheering crowd"
    ),
    "calm ambient pads with gentle rain sounds and distant thunder",
    (
        "Epic orchestral film score for a fantasy battle scene: thundering timpani, bold brass fanfares, fast "
        "string ostinatos and a huge choir singing in Latin, building slowly from a quiet and mysterious opening "
        "to a triumphant climax at 140 bpm"
    ),
    "80s synthwave with arpeggiated synthesizers, gated reverb snare and a nostalgic lead melody at 120 bpm",
    "smooth jazz trio, upright bass, brushed drums and piano, late night club atmosphere",
    (
        "A happy acoustic folk song with fingerpicked guitar, hand claps, a whistled melody and warm male "
        "vocals humming along"
    ),
    "dark techno track with a heavy four on the floor kick, acid bassline and metallic hi-hats",
]

# The sentencepiece training text: the prompts and more descriptions in the same style.
TRAINING_LINES = PROMPTS + [
    "A calm piano melody with soft strings in the background.",
    "Energetic pop song with catchy synth hooks, claps and a female vocal chorus.",
    "Reggaeton beat with a heavy bass, dembow drums and Spanish guitar.",
    "Relaxing bossa nova with nylon guitar, light percussion and a flute.",
    "Aggressive heavy metal with double kick drums, fast riffs and screaming vocals.",
    "Chill house music with deep bass, shuffled hi-hats and airy vocal chops.",
    "Traditional Irish folk tune played on fiddle, tin whistle and bodhran.",
    "Minimal piano piece in a minor key, slow and melancholic.",
    "Funky disco groove with slap bass, wah guitar and a string section.",
    "Cinematic trailer music with booming drums, risers and a dramatic string theme.",
    "Classical string quartet playing a lively baroque dance.",
    "Drum and bass at 174 bpm with a rolling breakbeat and a wobbling sub bass.",
    "Country ballad with pedal steel guitar, acoustic strumming and a warm vocal.",
    "Ethereal choir over a slow organ drone in a cathedral.",
    "Upbeat ska with offbeat guitar chops, horns and a walking bass.",
    "Trap beat with rolling hi-hats, 808 bass and dark bells at 70 bpm.",
    "Soft lullaby with music box, harp and gentle humming.",
    "Blues shuffle with harmonica, electric guitar licks and a steady groove.",
    "Video game chiptune with square wave leads and fast arpeggios.",
    "Afrobeat groove with talking drums, horns and a hypnotic guitar riff.",
    "Meditative sitar and tabla raga, slowly building in tempo.",
    "Grunge song with fuzzy guitars, a loose drum beat and moody vocals.",
    "Big band swing with a brass section, walking bass and a swinging ride cymbal.",
    "Dreamy shoegaze with layers of reverb-drenched guitars.",
    "Punk rock with fast power chords, shouted vocals and crashing cymbals.",
    "Romantic tango with bandoneon, violin and piano.",
    "Gospel choir with Hammond organ, hand claps and a joyful lead singer.",
    "Ambient electronic soundscape with evolving textures and field recordings.",
]


def hf_config() -> HFT5Config:
    """t5-base's encoder architecture (MusicGen's text encoder)."""
    return HFT5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, feed_forward_proj="relu"
    )


def training_text(shuffled_lines: int = 3000, seed: int = 0) -> list[str]:
    """`TRAINING_LINES` and `shuffled_lines` lines of 12 of their words drawn at random (seeded).

    On the few lines alone, sentencepiece's unigram trainer stops at ~340 pieces that split most
    words in two or three (the longest prompt takes 103 tokens); with the words also seen in random
    contexts it keeps most of them whole (about 1.3 tokens per word), closer to what t5-base's 32k-piece
    vocabulary gives, so that the sequence lengths are realistic.
    """
    rng = random.Random(seed)
    words = " ".join(TRAINING_LINES).split()
    return TRAINING_LINES + [" ".join(rng.choices(words, k=12)) for _ in range(shuffled_lines)]


def write_spiece(directory: Path) -> int:
    """Train a sentencepiece unigram model (T5's special ids: pad 0, eos 1, unk 2, no bos) on
    `training_text()` and save it as `directory/spiece.model`; returns its number of pieces."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text()),
        model_writer=model,
        vocab_size=2000,
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
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def write_checkpoint(directory: Path, seed: int = 0) -> int:
    """Save a random-init transformers `T5EncoderModel` (seed `seed`) and `write_spiece`'s tokenizer
    into `directory`; returns the number of sentencepiece pieces."""
    pieces = write_spiece(directory)
    torch.manual_seed(seed)
    T5EncoderModel(hf_config()).eval().save_pretrained(directory)
    return pieces


def run(runs: int, batch: int) -> dict:
    """Build the checkpoint, check both sides agree, time them; the measurements for `report`."""
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    prompts = (PROMPTS * -(-batch // len(PROMPTS)))[:batch]
    with tempfile.TemporaryDirectory() as tmp:
        pieces = write_checkpoint(Path(tmp))
        encoder = T5TextEncoder.from_pretrained(tmp)
        tokenizer = HFT5Tokenizer.from_pretrained(tmp)
        models = {
            impl: T5EncoderModel.from_pretrained(tmp, attn_implementation=impl).eval() for impl in ("sdpa", "eager")
        }
    for impl, model in models.items():
        if model.config._attn_implementation != impl:
            raise RuntimeError(f"transformers loaded {model.config._attn_implementation} attention, asked {impl}")

    # The same tokens on both sides; the models-alone timings start from these (JAX's padded to its bucket).
    ids, mask = encoder.tokenizer(prompts)
    inputs = tokenizer(prompts, padding=True, return_tensors="pt")
    if not (
        np.array_equal(ids, inputs["input_ids"].numpy()) and np.array_equal(mask, inputs["attention_mask"].numpy())
    ):
        raise RuntimeError("the JAX and transformers tokenizers disagree on the prompts")
    n = ids.shape[1]
    bucket = length_bucket(n)
    pad = ((0, 0), (0, bucket - n))
    ids_bucket, mask_bucket = np.pad(ids, pad, constant_values=encoder.tokenizer.pad_id), np.pad(mask, pad)
    print(
        f"{batch} prompts, {mask.sum(1).min()} to {n} tokens (JAX bucket {bucket}); jax {jax.__version__} on "
        f"{jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads",
        flush=True,
    )

    def torch_end_to_end(model):
        def fn():
            with torch.inference_mode():
                batch_pt = tokenizer(prompts, padding=True, return_tensors="pt")
                out = model(input_ids=batch_pt["input_ids"], attention_mask=batch_pt["attention_mask"])
                return out.last_hidden_state

        return fn

    def torch_model(model):
        def fn():
            with torch.inference_mode():
                return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state

        return fn

    def jax_model(ids_in, mask_in):
        return lambda: jax.block_until_ready(encode_ids(encoder.config, encoder.params, ids_in, mask_in))

    print("end to end ...", flush=True)
    counters, start = cpu_counters(), time.perf_counter()
    e2e = time_interleaved(
        {
            "jax": lambda: jax.block_until_ready(encoder(prompts)),
            "sdpa": torch_end_to_end(models["sdpa"]),
            "eager": torch_end_to_end(models["eager"]),
        },
        runs,
    )
    print("tokenizers ...", flush=True)
    tok = time_interleaved(
        {
            "jax": lambda: encoder.tokenizer(prompts),
            "torch": lambda: tokenizer(prompts, padding=True, return_tensors="pt"),
        },
        runs,
    )
    print("models ...", flush=True)
    enc = time_interleaved(
        {
            "jax": jax_model(ids_bucket, mask_bucket),
            "jax_exact": jax_model(ids, mask),
            "sdpa": torch_model(models["sdpa"]),
            "eager": torch_model(models["eager"]),
        },
        runs,
    )
    others = other_load(counters, cpu_counters(), time.perf_counter() - start)

    hidden = np.asarray(e2e["jax_out"][0])
    unmasked = mask.astype(bool)
    diff = {impl: float(np.abs(hidden - e2e[f"{impl}_out"].numpy())[unmasked].max()) for impl in ("sdpa", "eager")}
    diff["exact"] = float(np.abs(np.asarray(enc["jax_exact_out"]) - hidden)[unmasked].max())
    print(
        f"max |JAX - PyTorch| of the hidden states at unmasked positions: sdpa {diff['sdpa']:.2e}, "
        f"eager {diff['eager']:.2e}",
        flush=True,
    )
    words = [len(prompt.split()) for prompt in prompts]
    return {
        "runs": runs,
        "batch": batch,
        "threads": threads,
        "load": (load_before, load_average()),
        "others": others,
        "pieces": pieces,
        "words": (min(words), max(words)),
        "tokens": (int(mask.sum(1).min()), n, bucket),
        "e2e": e2e,
        "tok": tok,
        "enc": enc,
        "diff": diff,
    }


def report(res: dict, command: str) -> str:
    """The markdown section (title, provenance, correctness, table)."""

    def cell(times: list[float]) -> tuple[str, float]:
        med, low = median_min(times)
        digits = 3 if med >= 0.01 else 5
        return f"{med:.{digits}f} (min {low:.{digits}f})", med

    def row(stage: str, jax_timing: tuple, sdpa_times: list, eager_times: list | None, first: float | None) -> str:
        jax_cell, jax_med = cell(jax_timing[1])
        sdpa_cell, sdpa_med = cell(sdpa_times)
        eager_cell = cell(eager_times)[0] if eager_times else "(same tokenizer)"
        first_cell = f"{first:.3f}" if first is not None else "—"
        return f"| {stage} | {jax_cell} | {sdpa_cell} | {eager_cell} | {sdpa_med / jax_med:.2f} | {first_cell} |"

    e2e, tok, enc, diff = res["e2e"], res["tok"], res["enc"], res["diff"]
    shortest, n, bucket = res["tokens"]
    eager_ratio = median_min(e2e["eager"][1])[0] / median_min(e2e["jax"][1])[0]
    padded, unpadded = median_min(enc["jax"][1])[0], median_min(enc["jax_exact"][1])[0]
    footnote = (
        f"End to end, PyTorch with eager attention / JAX: {eager_ratio:.2f}. Padding to the length bucket "
        f"({n} -> {bucket} tokens) costs JAX's model {100 * (padded / unpadded - 1):.0f}% (medians)."
    )
    rows = [
        row("end to end (tokenize + encode)", e2e["jax"], e2e["sdpa"][1], e2e["eager"][1], e2e["jax"][0]),
        row("tokenizer only", tok["jax"], tok["torch"][1], None, None),
        row(f"model only (JAX padded to {bucket})", enc["jax"], enc["sdpa"][1], enc["eager"][1], None),
        row(
            f"model only, JAX unpadded ({n}; diagnostic)",
            enc["jax_exact"],
            enc["sdpa"][1],
            enc["eager"][1],
            enc["jax_exact"][0],
        ),
    ]
    model = (
        "- Model: transformers `T5EncoderModel`, t5-base size (d_model 768, 12 layers, 12 heads, d_ff 3072, "
        "ReLU, vocabulary 32128), `torch.manual_seed(0)` init, loaded into JAX with "
        f"`T5TextEncoder.from_pretrained`; sentencepiece unigram tokenizer ({res['pieces']} pieces) trained at "
        f"start-up on {len(TRAINING_LINES)} music descriptions and random lines of their words"
    )
    inputs = (
        f"- Input: {res['batch']} MusicGen-style prompts of {res['words'][0]} to {res['words'][1]} words, "
        f"{shortest} to {n} tokens with `</s>` (PyTorch pads to {n}; JAX to its length bucket {bucket}, "
        "and slices the result back)"
    )
    timing = (
        f"- Timing: median (min) over {res['runs']} runs, JAX and both PyTorch variants interleaved, after a "
        "first call (JAX: compile+run, reported apart; PyTorch: warm-up). The JAX model-only row reuses the "
        "end-to-end compilation; the unpadded row compiles its own shape, as `T5TextEncoder` never would"
    )
    same = (
        "- Same computation: token ids and masks identical; max abs difference of the hidden states at "
        f"unmasked positions {diff['sdpa']:.2e} against PyTorch sdpa, {diff['eager']:.2e} against eager; "
        f"JAX padded vs unpadded {diff['exact']:.2e}"
    )
    during = (
        f"- During the run: other processes used {res['others']} of the machine's CPU time during the "
        "timed calls (from /proc/stat; near 0% means undisturbed timings)"
    )
    header = (
        "| stage | JAX median s | PyTorch (sdpa) median s | PyTorch (eager) median s "
        "| ratio PyTorch (sdpa)/JAX | JAX compile+run s |"
    )
    lines = [
        SECTION_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(
            res["threads"],
            res["load"],
            f", sentencepiece {sentencepiece.__version__}",
            torch_mode="`torch.inference_mode()`",
        ),
        during,
        model,
        inputs,
        timing,
        same,
        "",
        header,
        "|---|---|---|---|---|---|",
        *rows,
        "",
        footnote,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.text",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=10, help="timed runs per stage and framework")
    parser.add_argument(
        "--batch",
        type=int,
        default=len(PROMPTS),
        help=f"number of prompts (the {len(PROMPTS)} built-in ones, repeated if more)",
    )
    parser.add_argument("--write", action="store_true", help=f"write the text encoder section of {RESULTS}")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.batch < 1:
        parser.error("--runs and --batch must be >= 1")
    res = run(args.runs, args.batch)
    publish(report(res, command_line("benchmarks.text", argv)), args.write)


if __name__ == "__main__":
    main()
