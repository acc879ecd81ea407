"""Benchmark the T5 text encoder: JAX (`musicgen_jax.text`) against transformers' PyTorch `T5EncoderModel`.

Both sides run a t5-base-size encoder on the same random weights and the same prompts, tokenized by a
sentencepiece model trained at start-up (token ids only index the embedding, so a small tokenizer that keeps
most words whole stands in for t5-base's). Timed end to end (tokenize + encode, what a text conditioner does
per call), the tokenizers alone and the models alone; PyTorch with sdpa and with eager attention.

    .venv/bin/python -m benchmarks.text --write     # writes the text section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import io
import random
import tempfile
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
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    parser,
    publish,
    section,
    table,
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


def prompt_batch(batch: int) -> list[str]:
    """`batch` prompts: `PROMPTS` repeated."""
    return (PROMPTS * -(-batch // len(PROMPTS)))[:batch]


def hf_config(**options) -> HFT5Config:
    """t5-base's encoder architecture (MusicGen's text encoder), `options` changed."""
    size = {"d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12}
    return HFT5Config(vocab_size=32128, feed_forward_proj="relu", **(size | options))


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


def write_spiece(directory: Path, lines: list[str] | None = None, vocab_size: int = 2000) -> int:
    """Train a sentencepiece unigram model (T5's special ids: pad 0, eos 1, unk 2, no bos) on `lines`
    (default `training_text()`) and save it as `directory/spiece.model`; returns its number of pieces."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text() if lines is None else lines),
        model_writer=model,
        vocab_size=vocab_size,
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
    texts = prompt_batch(batch)
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
    ids, mask = encoder.tokenizer(texts)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    if not (
        np.array_equal(ids, inputs["input_ids"].numpy()) and np.array_equal(mask, inputs["attention_mask"].numpy())
    ):
        raise RuntimeError("the JAX and transformers tokenizers disagree on the prompts")
    n = ids.shape[1]
    bucket = length_bucket(n)
    pad = ((0, 0), (0, bucket - n))
    ids_bucket, mask_bucket = np.pad(ids, pad, constant_values=encoder.tokenizer.pad_id), np.pad(mask, pad)
    print(f"{batch} prompts, {mask.sum(1).min()} to {n} tokens (JAX bucket {bucket})", flush=True)

    def torch_end_to_end(model):
        def fn():
            with torch.inference_mode():
                batch_pt = tokenizer(texts, padding=True, return_tensors="pt")
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
    counters = cpu_counters()
    e2e = time_interleaved(
        {
            "jax": lambda: jax.block_until_ready(encoder(texts)),
            "sdpa": torch_end_to_end(models["sdpa"]),
            "eager": torch_end_to_end(models["eager"]),
        },
        runs,
    )
    print("tokenizers ...", flush=True)
    tok = time_interleaved(
        {
            "jax": lambda: encoder.tokenizer(texts),
            "torch": lambda: tokenizer(texts, padding=True, return_tensors="pt"),
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
    others = other_load(counters)

    hidden = np.asarray(e2e["jax_out"][0])
    unmasked = mask.astype(bool)
    diff = {impl: float(np.abs(hidden - e2e[f"{impl}_out"].numpy())[unmasked].max()) for impl in ("sdpa", "eager")}
    diff["exact"] = float(np.abs(np.asarray(enc["jax_exact_out"]) - hidden)[unmasked].max())
    words = [len(prompt.split()) for prompt in texts]
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


NOTES = (
    "- Timing: median (min) over {runs} runs, JAX and both PyTorch variants interleaved, after a first call (JAX: "
    "compile+run, reported apart; PyTorch: warm-up). The JAX model-only row reuses the end-to-end compilation; the "
    "unpadded row compiles its own shape, as `T5TextEncoder` never would"
)


def seconds(times: tuple[float, float]) -> str:
    """A (median, min) cell in seconds: 3 decimals, 5 below 0.01 s."""
    digits = 3 if times[0] >= 0.01 else 5
    return f"{times[0]:.{digits}f} (min {times[1]:.{digits}f})"


COLUMNS = {
    "stage": "{}",
    "JAX median s": seconds,
    "PyTorch (sdpa) median s": seconds,
    "PyTorch (eager) median s": seconds,
    "ratio PyTorch (sdpa)/JAX": "{:.2f}",
    "JAX compile+run s": "{:.3f}",
}


def report(res: dict, command: str) -> str:
    """The RESULTS.md section: provenance, the agreement of both sides, one row per stage."""
    e2e, tok, enc, diff = res["e2e"], res["tok"], res["enc"], res["diff"]
    shortest, n, bucket = res["tokens"]

    def row(stage: str, jax_timing: tuple, sdpa: list, eager: list | None, first: bool) -> tuple:
        jax_t, sdpa_t = median_min(jax_timing[1]), median_min(sdpa)
        eager_t = median_min(eager) if eager else "(same tokenizer)"
        return stage, jax_t, sdpa_t, eager_t, sdpa_t[0] / jax_t[0], jax_timing[0] if first else "—"

    rows = [
        row("end to end (tokenize + encode)", e2e["jax"], e2e["sdpa"][1], e2e["eager"][1], True),
        row("tokenizer only", tok["jax"], tok["torch"][1], None, False),
        row(f"model only (JAX padded to {bucket})", enc["jax"], enc["sdpa"][1], enc["eager"][1], False),
        row(f"model only, JAX unpadded ({n}; diagnostic)", enc["jax_exact"], enc["sdpa"][1], enc["eager"][1], True),
    ]
    eager_ratio = median_min(e2e["eager"][1])[0] / median_min(e2e["jax"][1])[0]
    padding = median_min(enc["jax"][1])[0] / median_min(enc["jax_exact"][1])[0] - 1
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            f", sentencepiece {sentencepiece.__version__}",
            torch_mode="`torch.inference_mode()`",
            others=res["others"],
        ),
        f"- Model: transformers `T5EncoderModel`, t5-base size, `torch.manual_seed(0)` init, loaded into JAX with "
        f"`T5TextEncoder.from_pretrained`; sentencepiece unigram tokenizer ({res['pieces']} pieces) trained at "
        f"start-up on {len(TRAINING_LINES)} music descriptions and random lines of their words",
        f"- Input: {res['batch']} MusicGen-style prompts of {res['words'][0]} to {res['words'][1]} words, "
        f"{shortest} to {n} tokens with `</s>` (PyTorch pads to {n}; JAX to its length bucket {bucket}, and slices "
        "the result back)",
        NOTES.format(runs=res["runs"]),
        "- Same computation: token ids and masks identical; max abs difference of the hidden states at unmasked "
        f"positions {diff['sdpa']:.2e} against PyTorch sdpa, {diff['eager']:.2e} against eager; JAX padded vs "
        f"unpadded {diff['exact']:.2e}",
    ]
    footnote = (
        f"End to end, PyTorch with eager attention / JAX: {eager_ratio:.2f}. Padding to the length bucket "
        f"({n} -> {bucket} tokens) costs JAX's model {100 * padding:.0f}% (medians)."
    )
    return section(SECTION_TITLE, command, facts, table(COLUMNS, rows), footnote)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.text", __doc__)
    p.add_argument("--runs", type=int, default=10, help="timed runs per stage and framework")
    p.add_argument("--batch", type=int, default=len(PROMPTS), help="number of prompts (PROMPTS, repeated if more)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.batch < 1:
        p.error("--runs and --batch must be >= 1")
    publish(report(run(args.runs, args.batch), command_line("benchmarks.text", argv)), args.write)


if __name__ == "__main__":
    main()
