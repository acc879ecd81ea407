"""Benchmark text-to-music sampling: JAX (`musicgen_jax.sampling.generate_tokens`) against transformers'
PyTorch `MusicgenForConditionalGeneration.generate`.

Both sides run the musicgen-small architecture (decoder: 24 layers, width 1024, 16 heads, ffn 4096,
4 codebooks of 2048; text encoder: t5-base size; codec: EnCodec 32 kHz, real size) on the SAME random
weights: transformers' model is built with `torch.manual_seed(0)`, saved with `save_pretrained` into a
temporary directory together with a sentencepiece model trained at start-up (as in
`benchmarks/text.py`), and that directory is loaded into JAX with `musicgen_jax.convert.pretrained.convert`
and into transformers' tokenizer. Sampling: top-k 250, temperature 1, classifier-free guidance 3 (the
batch runs doubled on both sides), audiocraft's defaults; PRNG seeds differ between the frameworks, so
the codes differ, the work does not.

Measured per batch size (1 prompt, then 8 different prompts):
- steady decode rate: one "step" is one forward pass of the LM over one delay-pattern position with
  the KV cache (frames + 3 of them for frames of audio: the pattern holds frames + 4 positions, the
  first is the start token). The marginal rate (long - short frames) / (t_long - t_short) of two
  generation lengths removes the fixed costs (text encoding, set-up, cross-attention keys of the
  text); for transformers t is the `generate` time minus its codec decode (timed by wrapping
  `audio_encoder.decode`), for JAX the `generate_tokens` time. The short length is by default the
  smallest one in the long length's JAX compilation bucket (`musicgen_jax.sampling.frame_bucket`),
  at least a fifth of the long one: two lengths in one bucket share one compilation and one KV-cache
  layout (`musicgen_jax.lm.transformer.cache_blocks`; a step reads the blocks up to its position).
- time to first audio (warm): tokenize + text encoder + generation + codec decode of the long length.
- JAX compile time: `lower_generate(...).compile()` of the decode loop (`musicgen_jax.sampling`) for the
  batch and length bucket, timed on its own before the first call.
- peak memory: the process's resident-set high-water mark (`VmHWM`, reset before every timed call by
  writing 5 to /proc/self/clear_refs), i.e. both models resident plus that call's working memory.
- the memory-bandwidth bound: bytes of LM weights read per decode step / the bandwidth of a jitted
  `jnp.sum` over 1 GiB of float32 = the highest step rate a weight-streaming decoder can reach.

PyTorch runs under `torch.inference_mode()` with as many threads as the process may use cores, after a
short warm-up generation. The timed calls alternate JAX and PyTorch, `--runs` rounds.

    .venv/bin/python -m benchmarks.sampling --write     # writes the sampling section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
import torch
import transformers
from transformers import (
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
)
from transformers import T5Tokenizer as HFT5Tokenizer

from benchmarks.codec import hf_config as codec_hf_config
from benchmarks.common import (
    RESULTS,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    publish,
    usable_cores,
)
from benchmarks.text import PROMPTS, write_spiece
from benchmarks.text import hf_config as text_hf_config
from musicgen_jax.convert.pretrained import convert
from musicgen_jax.lm import pattern
from musicgen_jax.lm.transformer import cache_blocks
from musicgen_jax.sampling import SamplingParams, frame_bucket, generate_tokens, lower_generate, row_keys

SECTION_TITLE = "## Sampling (musicgen-small architecture, random weights)"
TOP_K, CFG = 250, 3.0
SAMPLING = SamplingParams(use_sampling=True, top_k=TOP_K, top_p=0.0, temperature=1.0, cfg_coef=CFG)
WARMUP_FRAMES = 10  # transformers' warm-up generation
GIB = 2**30
TARGET, AIM = 1.5, 2.0  # documented targets for the JAX / transformers steady step rate, not asserted


def hf_config() -> MusicgenConfig:
    """musicgen-small's architecture: t5-base-size text encoder, EnCodec 32 kHz, 24-layer decoder."""
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=1024, num_attention_heads=16, num_hidden_layers=24,
                                    ffn_dim=4096, num_codebooks=4)
    return MusicgenConfig(text_encoder=text_hf_config(), audio_encoder=codec_hf_config(), decoder=decoder)


def write_checkpoint(directory: Path, seed: int = 0) -> MusicgenForConditionalGeneration:
    """Save a random-init transformers MusicGen (seed `seed`) and the text benchmark's sentencepiece
    model (`benchmarks.text.write_spiece`) into `directory`; returns the model."""
    write_spiece(directory)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(hf_config()).eval()
    model.save_pretrained(directory)
    return model


# --- memory -------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    """VmHWM (since the last `reset_peak_rss`), else the lifetime `ru_maxrss`, in GiB."""
    hwm = _status_kib("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 2**20


def rss_gib() -> float:
    return (_status_kib("VmRSS") or 0) / 2**20


def timed(fn):
    """(seconds, peak RSS GiB during the call, output) of `fn()`."""
    reset_peak_rss()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, peak_rss_gib(), out


# --- the bandwidth bound --------------------------------------------------------------------------------

def lm_weight_bytes(params, config) -> tuple[int, int, int]:
    """(bytes, parameters, LayerNorm parameters left out) of the LM weights a decode step reads: per layer
    self-attention q, k, v, out, cross-attention q, out (its k, v act on the text, computed once per
    generation), fc1, fc2; and the codebook heads. Left out: the token embeddings (only gathered), the
    text projection (once per generation), the LayerNorms (counted apart, negligible)."""
    count = 0
    norms = 0
    for i in range(config.num_layers):
        layer = params["params"][f"layers_{i}"]
        kernels = [layer["self_attn"][n]["kernel"] for n in ("q", "k", "v", "out")]
        kernels += [layer["cross_attn"][n]["kernel"] for n in ("q", "out")]
        kernels += [layer["fc1"]["kernel"], layer["fc2"]["kernel"]]
        count += sum(k.size for k in kernels)
        norms += sum(leaf.size for n in ("norm_self", "norm_cross", "norm_ffn") for leaf in layer[n].values())
    count += sum(params["params"][f"heads_{k}"]["kernel"].size for k in range(config.num_codebooks))
    expected = config.num_layers * (6 * config.dim**2 + 2 * config.dim * config.ffn_dim) \
        + config.num_codebooks * config.dim * config.card
    if count != expected:
        raise RuntimeError(f"counted {count} LM weights per step, expected {expected}")
    return 4 * count, count, norms


def kv_cache_read_bytes(config, rows: int, positions: int, steps: range) -> float:
    """Bytes of the self-attention KV cache (float32, `positions` long, `rows` rows) a decode step reads
    on average over `steps` (the positions it runs): the blocks up to its own position."""
    ends = np.cumsum(cache_blocks(positions))
    read = [ends[np.searchsorted(ends, s, side="right")] for s in steps]
    return 4 * 2 * config.num_layers * rows * config.dim * sum(read) / len(read)


def memory_bandwidth(runs: int = 7) -> dict:
    """Read bandwidth in GB/s (1e9 bytes/s): median over `runs` of a jitted `jnp.sum` over 1 GiB of
    float32, and of `torch.sum` (all threads) over the same bytes, as a cross-check."""
    x = jnp.ones((GIB // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    jax_times = []
    for _ in range(runs):
        start = time.perf_counter()
        total(x).block_until_ready()
        jax_times.append(time.perf_counter() - start)
    del x
    y = torch.ones(GIB // 4, dtype=torch.float32)
    y.sum()
    torch_times = []
    for _ in range(runs):
        start = time.perf_counter()
        y.sum()
        torch_times.append(time.perf_counter() - start)
    del y
    return {"jax": GIB / median_min(jax_times)[0] / 1e9, "torch": GIB / median_min(torch_times)[0] / 1e9,
            "runs": runs}


# --- the two generators ----------------------------------------------------------------------------

class TorchGenerator:
    """transformers' `generate` on a list of prompts, with its codec decode timed apart."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.decode_time, self.codes = 0.0, None
        decode = model.audio_encoder.decode

        def timed_decode(codes, *args, **kwargs):
            start = time.perf_counter()
            out = decode(codes, *args, **kwargs)
            self.decode_time += time.perf_counter() - start
            self.codes = codes[0].numpy()
            return out

        model.audio_encoder.decode = timed_decode

    def __call__(self, prompts: list[str], frames: int, seed: int = 0) -> dict:
        self.decode_time = 0.0
        start = time.perf_counter()
        with torch.inference_mode():
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt")
            torch.manual_seed(seed)
            audio = self.model.generate(**inputs, do_sample=True, top_k=TOP_K, guidance_scale=CFG,
                                        max_length=pattern.num_steps(frames, (0, 1, 2, 3)))
        total = time.perf_counter() - start
        if self.codes.shape != (len(prompts), 4, frames):
            raise RuntimeError(f"transformers generated codes {self.codes.shape}, expected {(len(prompts), 4, frames)}")
        return {"total": total, "decode": self.decode_time, "generate": total - self.decode_time,
                "codes": self.codes, "samples": audio.shape[-1]}


class JaxGenerator:
    """Text encoder + `generate_tokens` + codec decode, each waited for and timed."""

    def __init__(self, components):
        self.c = components
        self.params = jax.device_put(components.lm_params)

    def __call__(self, prompts: list[str], frames: int, seed: int = 0) -> dict:
        t0 = time.perf_counter()
        text, mask = jax.block_until_ready(self.c.text_encoder(prompts))
        t1 = time.perf_counter()
        codes = jax.block_until_ready(generate_tokens(self.c.lm_config, self.params, text, mask,
                                                      row_keys(seed + np.arange(len(prompts))), frames, SAMPLING))
        t2 = time.perf_counter()
        audio = jax.block_until_ready(self.c.codec.decode(codes))
        t3 = time.perf_counter()
        return {"total": t3 - t0, "text": t1 - t0, "generate": t2 - t1, "decode": t3 - t2,
                "codes": np.asarray(codes), "samples": audio.shape[-1]}

    def compile_seconds(self, prompts: list[str], frames: int) -> float:
        """Trace, lower and compile the decode loop `generate_tokens` runs for this batch and length."""
        text, mask = self.c.text_encoder(prompts)
        start = time.perf_counter()
        lower_generate(self.c.lm_config, self.params, text, mask, row_keys(np.arange(len(prompts))), frames,
                       SAMPLING).compile()
        return time.perf_counter() - start


def default_short(frames: int) -> int:
    """The short length of the two-length measurement: the smallest length in the long one's JAX
    compilation bucket (both then share one compilation and one KV-cache layout, so a step at a given
    position costs the same in both), at least frames // 5; frames // 5 where that length is above 60% of
    `frames` (too close to it for a stable difference)."""
    first = next(n for n in range(1, frames + 1) if frame_bucket(n) == frame_bucket(frames))
    short = max(first, frames // 5)
    return short if short <= 0.6 * frames else max(frames // 5, 1)


def run_batch(jax_gen: JaxGenerator, torch_gen: TorchGenerator, prompts: list[str], frames: int, short: int,
              runs: int) -> dict:
    """First calls (JAX: compile+run per length; transformers: a `WARMUP_FRAMES` warm-up), then `runs`
    rounds of JAX long, transformers long, JAX short, transformers short."""
    b = len(prompts)
    print(f"batch {b}: transformers warm-up ({WARMUP_FRAMES} frames) ...", flush=True)
    warm = timed(lambda: torch_gen(prompts, WARMUP_FRAMES))
    res: dict = {"batch": b, "frames": frames, "short": short, "torch_warmup": warm[0],
                 "first": {}, "jax": {frames: [], short: []}, "torch": {frames: [], short: []},
                 "peak": {"jax": 0.0, "torch": warm[1]}, "rss_before": rss_gib()}
    for n in (frames, short) if frame_bucket(short) != frame_bucket(frames) else (frames,):
        print(f"batch {b}: JAX compile, then first call, {n} frames ...", flush=True)
        compile_seconds = jax_gen.compile_seconds(prompts, n)
        seconds, peak, out = timed(lambda n=n: jax_gen(prompts, n))
        res["first"][n] = out | {"wall": seconds, "compile": compile_seconds}
        res["peak"]["jax"] = max(res["peak"]["jax"], peak)
    counters, start = cpu_counters(), time.perf_counter()
    for r in range(runs):
        for n in (frames, short):
            for name, gen in (("jax", jax_gen), ("torch", torch_gen)):
                seconds, peak, out = timed(lambda gen=gen, n=n, r=r: gen(prompts, n, seed=1 + r))
                res[name][n].append(out)
                res["peak"][name] = max(res["peak"][name], peak)
                print(f"batch {b}, run {r + 1}/{runs}, {n} frames: {name} total {seconds:.1f} s "
                      f"(generation {out['generate']:.1f} s, {(n + 3) / out['generate']:.2f} steps/s)", flush=True)
    res["others"] = other_load(counters, cpu_counters(), time.perf_counter() - start)
    codes = res["jax"][frames][0]["codes"]
    res["distinct_codes"] = (len(np.unique(codes[:, 0])), len(np.unique(res["torch"][frames][0]["codes"][:, 0])))
    return res


def summarize(res: dict) -> dict:
    """Medians of the timed rounds: step rates, time to first audio, compile."""
    long, short = res["frames"], res["short"]
    out = {}
    for name in ("jax", "torch"):
        gen_long = median_min([r["generate"] for r in res[name][long]])[0]
        gen_short = median_min([r["generate"] for r in res[name][short]])[0]
        out[name] = {"marginal": (long - short) / (gen_long - gen_short), "average": (long + 3) / gen_long,
                     "ttfa": median_min([r["total"] for r in res[name][long]])[0], "generate": gen_long,
                     "decode": median_min([r["decode"] for r in res[name][long]])[0]}
    first = res["first"]
    out["compile"] = {n: first[n]["compile"] for n in first}
    out["first_ttfa"] = first[long]["wall"]
    return out


def package_state() -> str:
    """The commit of the working tree and whether `musicgen_jax/` has uncommitted changes."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "musicgen_jax"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split("\n")
        changed = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"commit {head}" + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def run(seconds: float, runs: int, skip_batch8: bool, batch8_seconds: float, short_seconds: float | None) -> dict:
    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print("building the model (torch.manual_seed(0)) and loading it into JAX ...", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_checkpoint(Path(tmp))
        components = convert(tmp)
        tokenizer = HFT5Tokenizer.from_pretrained(tmp)
    load_seconds = time.perf_counter() - start
    config = components.lm_config
    frame_rate = components.codec.frame_rate
    ids, mask = components.text_encoder.tokenizer(PROMPTS)
    inputs = tokenizer(PROMPTS, padding=True, return_tensors="np")
    if not (np.array_equal(ids, inputs["input_ids"]) and np.array_equal(mask, inputs["attention_mask"])):
        raise RuntimeError("the JAX and transformers tokenizers disagree on the prompts")
    jax_gen, torch_gen = JaxGenerator(components), TorchGenerator(model, tokenizer)
    weight_bytes, weight_count, norm_count = lm_weight_bytes(components.lm_params, config)
    print(f"loaded in {load_seconds:.0f} s; LM reads {weight_bytes / 1e9:.3f} GB of weights per step; jax "
          f"{jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads",
          flush=True)
    print("memory bandwidth ...", flush=True)
    bandwidth = memory_bandwidth()
    print(f"jnp.sum over 1 GiB: {bandwidth['jax']:.2f} GB/s (torch.sum {bandwidth['torch']:.2f} GB/s)", flush=True)

    batches = {}
    plan = [(1, seconds)] + ([] if skip_batch8 else [(8, batch8_seconds)])
    for b, secs in plan:
        frames = round(secs * frame_rate)
        short = default_short(frames) if short_seconds is None else round(short_seconds * frame_rate)
        if not 0 < short < frames:
            raise ValueError(f"the short length ({short} frames) must be between 0 and {frames} frames")
        prompts = (PROMPTS * -(-b // len(PROMPTS)))[:b]
        batches[b] = run_batch(jax_gen, torch_gen, prompts, frames, short, runs)
        batches[b]["summary"] = summarize(batches[b])
        batches[b]["seconds"] = secs
        batches[b]["tokens"] = int(np.asarray(components.text_encoder.tokenizer(prompts)[1]).sum(1).max())
    return {"runs": runs, "threads": threads, "package": package_state(), "load": (load_before, load_average()),
            "load_seconds": load_seconds, "config": config, "frame_rate": frame_rate, "weight_bytes": weight_bytes,
            "weight_count": weight_count, "norm_count": norm_count, "bandwidth": bandwidth, "batches": batches,
            "memory_stats": jax.devices()[0].memory_stats(), "max_rss": peak_rss_gib(),
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def report(res: dict, command: str) -> str:
    """The markdown section (title, provenance, table, bandwidth bound)."""
    config, bw = res["config"], res["bandwidth"]
    bound = bw["jax"] * 1e9 / res["weight_bytes"]
    rows, notes = [], []
    for b, r in res["batches"].items():
        s = r["summary"]
        jx, pt = s["jax"], s["torch"]
        compile_cell = " / ".join(f"{s['compile'][n]:.1f}" for n in s["compile"])
        if len(s["compile"]) == 1:
            compile_cell += " (both lengths)"
        rows.append(
            f"| {b} ({2 * b} rows with CFG), {r['seconds']:g} s = {r['frames']} frames | {jx['marginal']:.2f} "
            f"({jx['average']:.2f}) | {pt['marginal']:.2f} ({pt['average']:.2f}) | "
            f"**{jx['marginal'] / pt['marginal']:.2f}** ({jx['average'] / pt['average']:.2f}) | {compile_cell} "
            f"| {jx['ttfa']:.1f} | {pt['ttfa']:.1f} | {r['peak']['jax']:.2f} | {r['peak']['torch']:.2f} |")
        notes.append(
            f"- Batch {b}: {r['frames']} and {r['short']} frames ({r['frames'] + 3} and {r['short'] + 3} steps); "
            f"prompts up to {r['tokens']} tokens; time to first audio = text "
            f"{r['jax'][r['frames']][0]['text']:.2f} s + "
            f"generation {jx['generate']:.1f} s + codec decode {jx['decode']:.2f} s (JAX), generation with text "
            f"encoding {pt['generate']:.1f} s + codec decode {pt['decode']:.2f} s (transformers); JAX cold (first "
            f"call, compiling the generation) {s['first_ttfa']:.1f} s; transformers warm-up ({WARMUP_FRAMES} frames) "
            f"{r['torch_warmup']:.1f} s; resident before the timed calls {r['rss_before']:.2f} GiB; first-stage codes: "
            f"{r['distinct_codes'][0]} distinct (JAX), {r['distinct_codes'][1]} (transformers); other processes used "
            f"{r['others']} of the machine's CPU time during the timed calls (from /proc/stat)")
    batch1 = res["batches"][1]
    b1 = batch1["summary"]
    cache_positions = pattern.num_steps(frame_bucket(batch1["frames"]), config.delays)
    cache = kv_cache_read_bytes(config, 2, cache_positions, range(batch1["short"] + 3, batch1["frames"] + 3))
    bound_cache = bw["jax"] * 1e9 / (res["weight_bytes"] + cache)
    bound_lines = [
        (f"- Memory read bandwidth: {bw['jax']:.2f} GB/s (jitted `jnp.sum` over 1 GiB of float32, median of "
         f"{bw['runs']}; `torch.sum` with {res['threads']} threads: {bw['torch']:.2f} GB/s)."),
        (f"- LM weights read per decode step: {res['weight_bytes'] / 1e9:.3f} GB = {res['weight_count']:,} float32 "
         f"parameters: per layer ({config.num_layers}) the self-attention q, k, v, out ({4 * config.dim**2:,}), the "
         f"cross-attention q, out ({2 * config.dim**2:,}; its k, v act on the text once per generation) and fc1, fc2 "
         f"({2 * config.dim * config.ffn_dim:,}); plus the {config.num_codebooks} codebook heads "
         f"({config.num_codebooks * config.dim * config.card:,}). Not counted: the token embeddings (4 rows "
         f"gathered per step), the text projection (once per generation), the LayerNorms ({res['norm_count']:,} "
         "parameters, negligible), the KV cache."),
        (f"- Bound: {bw['jax']:.2f} GB/s / {res['weight_bytes'] / 1e9:.3f} GB = **{bound:.2f} steps/s**. JAX at "
         f"batch 1 (2 rows with CFG, weights read once per step for both): {b1['jax']['marginal']:.2f} steps/s = "
         f"**{100 * b1['jax']['marginal'] / bound:.0f}% of the bound**; transformers "
         f"{100 * b1['torch']['marginal'] / bound:.0f}%."),
        (f"- Adding the KV cache (preallocated, {cache_positions} positions x 2 rows x {config.num_layers} layers "
         f"x k, v, in blocks of {cache_blocks(cache_positions)} positions; a step reads the blocks up to its "
         f"position: {cache / 1e9:.3f} GB per step on average over the steps of the steady rate): bound "
         f"{bound_cache:.2f} steps/s, JAX at {100 * b1['jax']['marginal'] / bound_cache:.0f}% of it."),
    ]
    model = ("- Model: transformers `MusicgenForConditionalGeneration`, musicgen-small architecture (decoder 24 "
             "layers, width 1024, 16 heads, ffn 4096, 4 codebooks x 2048; T5 encoder t5-base size; EnCodec 32 kHz "
             "real size), `torch.manual_seed(0)` init, `save_pretrained` into a temporary directory with a "
             "sentencepiece model trained at start-up, loaded into JAX with `musicgen_jax.convert.pretrained.convert` "
             f"(build, save and load: {res['load_seconds']:.0f} s). The JAX decode loop (`generate_tokens`: one "
             "`lax.fori_loop` over the pattern steps, KV cache preallocated to the length bucket) runs the 24 layers "
             "unrolled (faster per step than the scanned layout: see the layers section) in float32, linear "
             "kernels [out, in] multiplied as (W x^T)^T, KV cache in blocks [B, H, n, Dh] (`cache_blocks`) of "
             "which a step reads those up to its position, top-k by a bisection threshold; transformers in float32, "
             f"`DynamicCache`. musicgen_jax: {res['package']}.")
    sampling = (f"- Sampling: top-k {TOP_K}, temperature 1, classifier-free guidance {CFG:g} (transformers "
                f"`generate(do_sample=True, top_k={TOP_K}, guidance_scale={CFG:g}, max_length=frames + 4)`; JAX "
                f"`SamplingParams(top_k={TOP_K}, cfg_coef={CFG:g})`); batch 8 uses 8 different prompts, passed at "
                "once.")
    timing = (f"- Timing: median over {res['runs']} run(s) per length, JAX and transformers alternating, after the "
              "first calls (JAX: compile+run per compilation; transformers: a short warm-up). A step is one LM "
              "forward over one pattern position (frames + 3 per generation). Steady rate = (long - short frames) / "
              "(t_long - t_short), with t the generation time alone (JAX: `generate_tokens`; transformers: "
              "`generate` minus its codec decode, timed by wrapping `audio_encoder.decode`), which removes fixed "
              "costs; in brackets the plain average (frames + 3) / t_long. The short length is the smallest in the "
              "long one's JAX compilation bucket (`frame_bucket`), at least a fifth of it, so both JAX lengths run "
              "the same compiled loop with the same KV cache. Time to first audio (warm): tokenize + text encoder + "
              "generation + codec decode. Compile: `lower_generate(...).compile()` of the decode loop, timed on its "
              "own before the first call.")
    memory = (f"- Memory: peak RSS per call = the process's VmHWM, reset before each call (/proc/self/clear_refs), so "
              f"it includes both frameworks' resident weights (about 2.2 GB each) plus that call's working set; "
              f"JAX's column includes its compiling first calls. Process max RSS over the whole run "
              f"(`getrusage`): {res['ru_maxrss']:.2f} GiB. `jax.devices()[0].memory_stats()` on CPU: "
              f"{res['memory_stats']!r} (XLA:CPU keeps no allocator statistics).")
    header = ("| batch | JAX steps/s steady (average) | transformers steps/s steady (average) | ratio JAX/transformers "
              "| JAX compile s | JAX time to first audio s | transformers time to first audio s "
              "| JAX peak RSS GiB | transformers peak RSS GiB |")
    lines = [
        SECTION_TITLE, "",
        f"Command: `{command}`", "",
        *machine_lines(res["threads"], res["load"], f", sentencepiece {sentencepiece.__version__}",
                       torch_mode="`torch.inference_mode()`"),
        model, sampling, timing, memory, *notes, "",
        header,
        "|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        f"Targets (documented, not asserted): JAX steady step rate >= {TARGET:g}x transformers', aiming for {AIM:g}x.",
        "",
        "Memory-bandwidth bound (batch 1):", "",
        *bound_lines, "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio to generate (the long length), seconds")
    parser.add_argument("--short-seconds", type=float, default=None,
                        help="the short length of the two-length step-rate measurement, seconds (default: the "
                             "smallest length sharing the long one's JAX compilation, at least a fifth of it)")
    parser.add_argument("--batch8-seconds", type=float, default=None,
                        help="the long length at batch 8 (default: --seconds)")
    parser.add_argument("--runs", type=int, default=1, help="timed rounds per length and framework")
    parser.add_argument("--skip-batch8", action="store_true", help="measure batch 1 only")
    parser.add_argument("--write", action="store_true", help=f"write the sampling section of {RESULTS}")
    args = parser.parse_args(argv)
    batch8 = args.seconds if args.batch8_seconds is None else args.batch8_seconds
    short = args.short_seconds
    if args.runs < 1 or args.seconds <= 0 or batch8 <= 0 or (
            short is not None and not 0 < short < min(args.seconds, batch8)):
        parser.error("--runs must be >= 1, --seconds and --batch8-seconds > 0, 0 < --short-seconds < both")
    res = run(args.seconds, args.runs, args.skip_batch8, batch8, short)
    publish(report(res, command_line("benchmarks.sampling", argv)), args.write)


if __name__ == "__main__":
    main()
