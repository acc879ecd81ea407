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

`--matrix` (run by `benchmarks/gpu.sh` on a GPU; on a CPU with `--models tiny` as its test) measures
instead one row per (model size, dtype, batch) of `SIZES` (small, medium, large; tiny for tests) x
`--dtypes` x `--batches`, in that order. Per size: transformers' model built once from
`torch.manual_seed(0)` on the device with sdpa attention and the JAX LM parameters from its state dict in
memory (`build_size`), the JAX decode loops of all its configurations compiled at once (`compile_loops`,
one thread each), then per dtype both models in it and per batch one warm call and `--runs` timed calls
per framework, JAX over `--frames` frames, transformers over `--torch-frames` (`measure`): steps/s,
real-time factor, compile time, peak device memory and the bound (bandwidth / LM weight bytes per step in
that dtype). Configurations that would not finish within `--budget-seconds` (`estimate_build`,
`estimate_compile`, `estimate_seconds`) are skipped and reported as such, one that runs out of device
memory is reported as "out of memory" on that side (`run_matrix`, `matrix_report`):

    python -m benchmarks.sampling --matrix --models small,medium,large --dtypes bfloat16,float32 \
        --batches 1,8,64 --frames 250 --torch-frames 64 --budget-seconds 420 --out out/gpu_sampling.md
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece
import torch
import transformers
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
)
from transformers import T5Config as HFT5Config
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
from musicgen_jax.fileio import atomic_file
from musicgen_jax.lm import pattern
from musicgen_jax.lm.model import cast_params
from musicgen_jax.lm.transformer import cache_blocks
from musicgen_jax.lm.weights import lm_config_from_hf, lm_params_from_hf_state_dict
from musicgen_jax.sampling import (
    FRAME_BUCKET,
    SamplingParams,
    frame_bucket,
    generate_tokens,
    lower_generate,
    row_keys,
)

SECTION_TITLE = "## Sampling (musicgen-small architecture, random weights)"
TOP_K, CFG = 250, 3.0
SAMPLING = SamplingParams(use_sampling=True, top_k=TOP_K, top_p=0.0, temperature=1.0, cfg_coef=CFG)
WARMUP_FRAMES = 10  # transformers' warm-up generation
GIB = 2**30
TARGET, AIM = 1.5, 2.0  # documented targets for the JAX / transformers steady step rate, not asserted
SIZES = {
    "tiny": (2, 64, 4, 256),
    "small": (24, 1024, 16, 4096),
    "medium": (48, 1536, 24, 6144),
    "large": (48, 2048, 32, 8192),
}  # decoder layers, width, heads, ffn width
CARD, CODEBOOKS = 2048, 4


def hf_config(size: str = "small") -> MusicgenConfig:
    """A MusicGen architecture of `SIZES` (4 codebooks of 2048): small, medium and large with a t5-base-size
    text encoder and EnCodec 32 kHz (real size); tiny (2 layers, width 64) with a tiny T5 (2 layers, width
    32) and a narrow EnCodec of the 32 kHz structure (4 filters, 16 channels), as the tests' tiny model."""
    layers, dim, heads, ffn = SIZES[size]
    decoder = MusicgenDecoderConfig(
        vocab_size=CARD,
        hidden_size=dim,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        ffn_dim=ffn,
        num_codebooks=CODEBOOKS,
    )
    if size != "tiny":
        return MusicgenConfig(text_encoder=text_hf_config(), audio_encoder=codec_hf_config(), decoder=decoder)
    text = HFT5Config(
        vocab_size=32128, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, feed_forward_proj="relu"
    )
    codec = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=CARD,
        use_causal_conv=False,
        use_conv_shortcut=False,
        pad_mode="reflect",
        normalize=False,
        num_lstm_layers=2,
        compress=2,
    )
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


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


def kernels_read(params, config) -> list:
    """The LM kernels a decode step reads (see `lm_weight_bytes`)."""
    kernels = []
    for i in range(config.num_layers):
        layer = params["params"][f"layers_{i}"]
        kernels += [layer["self_attn"][n]["kernel"] for n in ("q", "k", "v", "out")]
        kernels += [layer["cross_attn"][n]["kernel"] for n in ("q", "out")]
        kernels += [layer["fc1"]["kernel"], layer["fc2"]["kernel"]]
    return kernels + [params["params"][f"heads_{k}"]["kernel"] for k in range(config.num_codebooks)]


def lm_weight_bytes(params, config) -> tuple[int, int, int]:
    """(bytes, parameters, LayerNorm parameters left out) of the LM weights a decode step reads, the bytes
    by each kernel's dtype (4 per parameter in float32, 2 in bfloat16 / float16): per layer
    self-attention q, k, v, out, cross-attention q, out (its k, v act on the text, computed once per
    generation), fc1, fc2; and the codebook heads. Left out: the token embeddings (only gathered), the
    text projection (once per generation), the LayerNorms (counted apart, negligible)."""
    kernels = kernels_read(params, config)
    count = sum(k.size for k in kernels)
    norms = sum(
        leaf.size
        for i in range(config.num_layers)
        for n in ("norm_self", "norm_cross", "norm_ffn")
        for leaf in params["params"][f"layers_{i}"][n].values()
    )
    expected = (
        config.num_layers * (6 * config.dim**2 + 2 * config.dim * config.ffn_dim)
        + config.num_codebooks * config.dim * config.card
    )
    if count != expected:
        raise RuntimeError(f"counted {count} LM weights per step, expected {expected}")
    return sum(k.size * k.dtype.itemsize for k in kernels), count, norms


def kv_cache_read_bytes(config, rows: int, positions: int, steps: range) -> float:
    """Bytes of the self-attention KV cache (float32, `positions` long, `rows` rows) a decode step reads
    on average over `steps` (the positions it runs): the blocks up to its own position."""
    ends = np.cumsum(cache_blocks(positions))
    read = [ends[np.searchsorted(ends, s, side="right")] for s in steps]
    return 4 * 2 * config.num_layers * rows * config.dim * sum(read) / len(read)


def memory_bandwidth(runs: int = 7, device: str = "cpu", calls: int = 1) -> dict:
    """Read bandwidth in GB/s (1e9 bytes/s): median over `runs` of a jitted `jnp.sum` over 1 GiB of
    float32 on JAX's default device, and of `torch.sum` over the same bytes on torch's `device` (the CPU:
    all threads), as a cross-check. Each timing covers `calls` calls issued back to back and waited for
    once, divided by `calls` (on a GPU one sum takes about as long as launching it)."""
    x = jnp.ones((GIB // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    jax_times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready([total(x) for _ in range(calls)])
        jax_times.append((time.perf_counter() - start) / calls)
    del x
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    y = torch.ones(GIB // 4, dtype=torch.float32, device=device)
    y.sum()
    sync()
    torch_times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            y.sum()
        sync()
        torch_times.append((time.perf_counter() - start) / calls)
    del y
    return {
        "jax": GIB / median_min(jax_times)[0] / 1e9,
        "torch": GIB / median_min(torch_times)[0] / 1e9,
        "runs": runs,
        "calls": calls,
    }


# --- the two generators ----------------------------------------------------------------------------


class TorchGenerator:
    """transformers' `generate` on a list of prompts, with its codec decode timed apart. On a CUDA `device`
    the GPU is waited for (`torch.cuda.synchronize`) before and after the decode and at the end, so that
    each time covers the work and not only its launch."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self.decode_time, self.codes = 0.0, None
        decode = model.audio_encoder.decode

        def timed_decode(codes, *args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = decode(codes, *args, **kwargs)
            self.sync()
            self.decode_time += time.perf_counter() - start
            self.codes = codes[0].cpu().numpy()
            return out

        model.audio_encoder.decode = timed_decode

    def __call__(self, prompts: list[str], frames: int, seed: int = 0) -> dict:
        self.decode_time = 0.0
        start = time.perf_counter()
        with torch.inference_mode():
            inputs = self.tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
            torch.manual_seed(seed)
            audio = self.model.generate(
                **inputs,
                do_sample=True,
                top_k=TOP_K,
                guidance_scale=CFG,
                max_length=pattern.num_steps(frames, (0, 1, 2, 3)),
            )
            self.sync()
        total = time.perf_counter() - start
        if self.codes.shape != (len(prompts), 4, frames):
            raise RuntimeError(f"transformers generated codes {self.codes.shape}, expected {(len(prompts), 4, frames)}")
        return {
            "total": total,
            "decode": self.decode_time,
            "generate": total - self.decode_time,
            "codes": self.codes,
            "samples": audio.shape[-1],
        }


class JaxGenerator:
    """Text encoder + `generate_tokens` + codec decode, each waited for and timed."""

    def __init__(self, components):
        self.c = components
        self.params = jax.device_put(components.lm_params)

    def __call__(self, prompts: list[str], frames: int, seed: int = 0) -> dict:
        t0 = time.perf_counter()
        text, mask = jax.block_until_ready(self.c.text_encoder(prompts))
        t1 = time.perf_counter()
        codes = jax.block_until_ready(
            generate_tokens(
                self.c.lm_config, self.params, text, mask, row_keys(seed + np.arange(len(prompts))), frames, SAMPLING
            )
        )
        t2 = time.perf_counter()
        audio = jax.block_until_ready(self.c.codec.decode(codes))
        t3 = time.perf_counter()
        return {
            "total": t3 - t0,
            "text": t1 - t0,
            "generate": t2 - t1,
            "decode": t3 - t2,
            "codes": np.asarray(codes),
            "samples": audio.shape[-1],
        }

    def compile_seconds(self, prompts: list[str], frames: int) -> float:
        """Trace, lower and compile the decode loop `generate_tokens` runs for this batch and length."""
        text, mask = self.c.text_encoder(prompts)
        start = time.perf_counter()
        lower_generate(
            self.c.lm_config, self.params, text, mask, row_keys(np.arange(len(prompts))), frames, SAMPLING
        ).compile()
        return time.perf_counter() - start


def default_short(frames: int) -> int:
    """The short length of the two-length measurement: the smallest length in the long one's JAX
    compilation bucket (both then share one compilation and one KV-cache layout, so a step at a given
    position costs the same in both), at least frames // 5; frames // 5 where that length is above 60% of
    `frames` (too close to it for a stable difference)."""
    first = next(n for n in range(1, frames + 1) if frame_bucket(n) == frame_bucket(frames))
    short = max(first, frames // 5)
    return short if short <= 0.6 * frames else max(frames // 5, 1)


def run_batch(
    jax_gen: JaxGenerator, torch_gen: TorchGenerator, prompts: list[str], frames: int, short: int, runs: int
) -> dict:
    """First calls (JAX: compile+run per length; transformers: a `WARMUP_FRAMES` warm-up), then `runs`
    rounds of JAX long, transformers long, JAX short, transformers short."""
    b = len(prompts)
    print(f"batch {b}: transformers warm-up ({WARMUP_FRAMES} frames) ...", flush=True)
    warm = timed(lambda: torch_gen(prompts, WARMUP_FRAMES))
    res: dict = {
        "batch": b,
        "frames": frames,
        "short": short,
        "torch_warmup": warm[0],
        "first": {},
        "jax": {frames: [], short: []},
        "torch": {frames: [], short: []},
        "peak": {"jax": 0.0, "torch": warm[1]},
        "rss_before": rss_gib(),
    }
    for n in (frames, short) if frame_bucket(short) != frame_bucket(frames) else (frames,):
        print(f"batch {b}: JAX compile, then first call, {n} frames ...", flush=True)
        compile_seconds = jax_gen.compile_seconds(prompts, n)
        seconds, peak, out = timed(lambda n=n: jax_gen(prompts, n))
        res["first"][n] = out | {"wall": seconds, "compile": compile_seconds}
        res["peak"]["jax"] = max(res["peak"]["jax"], peak)
    counters = cpu_counters()
    for r in range(runs):
        for n in (frames, short):
            for name, gen in (("jax", jax_gen), ("torch", torch_gen)):
                seconds, peak, out = timed(lambda gen=gen, n=n, r=r: gen(prompts, n, seed=1 + r))
                res[name][n].append(out)
                res["peak"][name] = max(res["peak"][name], peak)
                print(
                    f"batch {b}, run {r + 1}/{runs}, {n} frames: {name} total {seconds:.1f} s "
                    f"(generation {out['generate']:.1f} s, {(n + 3) / out['generate']:.2f} steps/s)",
                    flush=True,
                )
    res["others"] = other_load(counters)
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
        out[name] = {
            "marginal": (long - short) / (gen_long - gen_short),
            "average": (long + 3) / gen_long,
            "ttfa": median_min([r["total"] for r in res[name][long]])[0],
            "generate": gen_long,
            "decode": median_min([r["decode"] for r in res[name][long]])[0],
        }
    first = res["first"]
    out["compile"] = {n: first[n]["compile"] for n in first}
    out["first_ttfa"] = first[long]["wall"]
    return out


def package_state() -> str:
    """The commit of the working tree and whether `musicgen_jax/` has uncommitted changes."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "musicgen_jax"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split("\n")
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
    print(
        f"loaded in {load_seconds:.0f} s; LM reads {weight_bytes / 1e9:.3f} GB of weights per step; jax "
        f"{jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with {threads} threads",
        flush=True,
    )
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
    return {
        "runs": runs,
        "threads": threads,
        "package": package_state(),
        "load": (load_before, load_average()),
        "load_seconds": load_seconds,
        "config": config,
        "frame_rate": frame_rate,
        "weight_bytes": weight_bytes,
        "weight_count": weight_count,
        "norm_count": norm_count,
        "bandwidth": bandwidth,
        "batches": batches,
        "memory_stats": jax.devices()[0].memory_stats(),
        "max_rss": peak_rss_gib(),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


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
            f"| {jx['ttfa']:.1f} | {pt['ttfa']:.1f} | {r['peak']['jax']:.2f} | {r['peak']['torch']:.2f} |"
        )
        notes.append(
            f"- Batch {b}: {r['frames']} and {r['short']} frames ({r['frames'] + 3} and {r['short'] + 3} steps); "
            f"prompts up to {r['tokens']} tokens; time to first audio = text "
            f"{r['jax'][r['frames']][0]['text']:.2f} s + "
            f"generation {jx['generate']:.1f} s + codec decode {jx['decode']:.2f} s (JAX), generation with text "
            f"encoding {pt['generate']:.1f} s + codec decode {pt['decode']:.2f} s (transformers); JAX cold (first "
            f"call, compiling the generation) {s['first_ttfa']:.1f} s; transformers warm-up ({WARMUP_FRAMES} frames) "
            f"{r['torch_warmup']:.1f} s; resident before the timed calls {r['rss_before']:.2f} GiB; first-stage codes: "
            f"{r['distinct_codes'][0]} distinct (JAX), {r['distinct_codes'][1]} (transformers); other processes used "
            f"{r['others']} of the machine's CPU time during the timed calls (from /proc/stat)"
        )
    batch1 = res["batches"][1]
    b1 = batch1["summary"]
    cache_positions = pattern.num_steps(frame_bucket(batch1["frames"]), config.delays)
    cache = kv_cache_read_bytes(config, 2, cache_positions, range(batch1["short"] + 3, batch1["frames"] + 3))
    bound_cache = bw["jax"] * 1e9 / (res["weight_bytes"] + cache)
    bound_lines = [
        (
            f"- Memory read bandwidth: {bw['jax']:.2f} GB/s (jitted `jnp.sum` over 1 GiB of float32, median of "
            f"{bw['runs']}; `torch.sum` with {res['threads']} threads: {bw['torch']:.2f} GB/s)."
        ),
        (
            f"- LM weights read per decode step: {res['weight_bytes'] / 1e9:.3f} GB = {res['weight_count']:,} float32 "
            f"parameters: per layer ({config.num_layers}) the self-attention q, k, v, out ({4 * config.dim**2:,}), the "
            f"cross-attention q, out ({2 * config.dim**2:,}; its k, v act on the text once per generation) "
            f"and fc1, fc2 "
            f"({2 * config.dim * config.ffn_dim:,}); plus the {config.num_codebooks} codebook heads "
            f"({config.num_codebooks * config.dim * config.card:,}). Not counted: the token embeddings (4 rows "
            f"gathered per step), the text projection (once per generation), the LayerNorms ({res['norm_count']:,} "
            "parameters, negligible), the KV cache."
        ),
        (
            f"- Bound: {bw['jax']:.2f} GB/s / {res['weight_bytes'] / 1e9:.3f} GB = **{bound:.2f} steps/s**. JAX at "
            f"batch 1 (2 rows with CFG, weights read once per step for both): {b1['jax']['marginal']:.2f} steps/s = "
            f"**{100 * b1['jax']['marginal'] / bound:.0f}% of the bound**; transformers "
            f"{100 * b1['torch']['marginal'] / bound:.0f}%."
        ),
        (
            f"- Adding the KV cache (preallocated, {cache_positions} positions x 2 rows x {config.num_layers} layers "
            f"x k, v, in blocks of {cache_blocks(cache_positions)} positions; a step reads the blocks up to its "
            f"position: {cache / 1e9:.3f} GB per step on average over the steps of the steady rate): bound "
            f"{bound_cache:.2f} steps/s, JAX at {100 * b1['jax']['marginal'] / bound_cache:.0f}% of it."
        ),
    ]
    model = (
        "- Model: transformers `MusicgenForConditionalGeneration`, musicgen-small architecture (decoder 24 "
        "layers, width 1024, 16 heads, ffn 4096, 4 codebooks x 2048; T5 encoder t5-base size; EnCodec 32 kHz "
        "real size), `torch.manual_seed(0)` init, `save_pretrained` into a temporary directory with a "
        "sentencepiece model trained at start-up, loaded into JAX with `musicgen_jax.convert.pretrained.convert` "
        f"(build, save and load: {res['load_seconds']:.0f} s). The JAX decode loop (`generate_tokens`: one "
        "`lax.fori_loop` over the pattern steps, KV cache preallocated to the length bucket) runs the 24 layers "
        "unrolled (faster per step than the scanned layout: see the layers section) in float32, linear "
        "kernels [out, in] multiplied as (W x^T)^T, KV cache in blocks [B, H, n, Dh] (`cache_blocks`) of "
        "which a step reads those up to its position, top-k by a bisection threshold; transformers in float32, "
        f"`DynamicCache`. musicgen_jax: {res['package']}."
    )
    sampling = (
        f"- Sampling: top-k {TOP_K}, temperature 1, classifier-free guidance {CFG:g} (transformers "
        f"`generate(do_sample=True, top_k={TOP_K}, guidance_scale={CFG:g}, max_length=frames + 4)`; JAX "
        f"`SamplingParams(top_k={TOP_K}, cfg_coef={CFG:g})`); batch 8 uses 8 different prompts, passed at "
        "once."
    )
    timing = (
        f"- Timing: median over {res['runs']} run(s) per length, JAX and transformers alternating, after the "
        "first calls (JAX: compile+run per compilation; transformers: a short warm-up). A step is one LM "
        "forward over one pattern position (frames + 3 per generation). Steady rate = (long - short frames) / "
        "(t_long - t_short), with t the generation time alone (JAX: `generate_tokens`; transformers: "
        "`generate` minus its codec decode, timed by wrapping `audio_encoder.decode`), which removes fixed "
        "costs; in brackets the plain average (frames + 3) / t_long. The short length is the smallest in the "
        "long one's JAX compilation bucket (`frame_bucket`), at least a fifth of it, so both JAX lengths run "
        "the same compiled loop with the same KV cache. Time to first audio (warm): tokenize + text encoder + "
        "generation + codec decode. Compile: `lower_generate(...).compile()` of the decode loop, timed on its "
        "own before the first call."
    )
    memory = (
        f"- Memory: peak RSS per call = the process's VmHWM, reset before each call (/proc/self/clear_refs), so "
        f"it includes both frameworks' resident weights (about 2.2 GB each) plus that call's working set; "
        f"JAX's column includes its compiling first calls. Process max RSS over the whole run "
        f"(`getrusage`): {res['ru_maxrss']:.2f} GiB. `jax.devices()[0].memory_stats()` on CPU: "
        f"{res['memory_stats']!r} (XLA:CPU keeps no allocator statistics)."
    )
    header = (
        "| batch | JAX steps/s steady (average) | transformers steps/s steady (average) | ratio JAX/transformers "
        "| JAX compile s | JAX time to first audio s | transformers time to first audio s "
        "| JAX peak RSS GiB | transformers peak RSS GiB |"
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
        model,
        sampling,
        timing,
        memory,
        *notes,
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Targets (documented, not asserted): JAX steady step rate >= {TARGET:g}x transformers', aiming for {AIM:g}x.",
        "",
        "Memory-bandwidth bound (batch 1):",
        "",
        *bound_lines,
        "",
    ]
    return "\n".join(lines)


# --- the GPU matrix (--matrix) ---------------------------------------------------------------------------

MATRIX_TITLE = "## Sampling on a GPU (MusicGen small, medium and large architectures, random weights)"
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SKIPPED, OOM = "skipped: time budget", "out of memory"
# per sub-model (a single "sdpa" would apply to all, and EnCodec, with no attention, refuses it)
ATTENTION = {"text_encoder": "sdpa", "decoder": "sdpa", "audio_encoder": "eager"}


def lm_step_bytes(size: str, dtype: str) -> int:
    """Bytes of LM weights a decode step of `SIZES[size]` reads in `dtype` (what `lm_weight_bytes` counts)."""
    layers, dim, _, ffn = SIZES[size]
    return jnp.dtype(dtype).itemsize * (layers * (6 * dim**2 + 2 * dim * ffn) + CODEBOOKS * dim * CARD)


def step_traffic(size: str, dtype: str, batch: int, frames: int) -> float:
    """Bytes a decode step reads on average: `lm_step_bytes` plus the self-attention keys and values of the
    2 * `batch` rows (guidance) over half of the frames + 4 pattern positions."""
    layers, dim, _, _ = SIZES[size]
    return lm_step_bytes(size, dtype) + 2 * layers * 2 * batch * dim * jnp.dtype(dtype).itemsize * (frames + 4) / 2


def estimate_seconds(
    done: list[dict], size: str, batch: int, dtype: str, frames: dict[str, int], runs: int, bandwidth: float
) -> float:
    """Expected seconds of one (size, batch, dtype) configuration's calls in `measure` (its compilation is part
    of the size's compile phase: `estimate_compile`), from the measured ones in `done` (0 before the first):
    the nearest of them (same size first, then same dtype, then the closest batch) with its warm-up calls (s)
    scaled by the decoder layer count, plus `runs` rounds of frames[side] + 3 steps per framework ("jax",
    "torch"), each at the reference's seconds per step scaled by the layer count (per-layer costs: kernel
    launches, Python) and increased by the extra bytes a step reads (`step_traffic`) at `bandwidth` (bytes/s)."""
    if not done:
        return 0.0
    ref = min(done, key=lambda r: (r["size"] != size, r["dtype"] != dtype, abs(math.log(batch / r["batch"]))))
    layers = SIZES[size][0] / SIZES[ref["size"]][0]
    extra = (
        max(
            0.0,
            step_traffic(size, dtype, batch, frames["jax"])
            - step_traffic(ref["size"], ref["dtype"], ref["batch"], frames["jax"]),
        )
        / bandwidth
    )
    steps = sum((frames[side] + 3) * (seconds * layers + extra) for side, seconds in ref["step_seconds"].items())
    return ref["warm"] * layers + runs * steps


def estimate_compile(phases: dict[str, tuple[int, float]], size: str, count: int) -> float:
    """Seconds of `size`'s compile phase (`compile_loops`) for `count` decode loops, from the measured phases
    (size -> (loops, seconds); 0 before the first): the one of the closest layer count, scaled by the layer
    count and by `count` over its loop count (loops compiled at once still share the CPU)."""
    if not phases:
        return 0.0
    ref = min(phases, key=lambda s: abs(SIZES[s][0] - SIZES[size][0]))
    loops, seconds = phases[ref]
    return seconds * SIZES[size][0] / SIZES[ref][0] * count / loops


def estimate_build(builds: dict[str, float], size: str) -> float:
    """Seconds to build `size`'s models (`build_size`): the largest size built so far scaled by the LM
    weights; 0 before the first build."""
    if not builds:
        return 0.0
    ref = max(builds, key=lambda s: lm_step_bytes(s, "float32"))
    return builds[ref] * lm_step_bytes(size, "float32") / lm_step_bytes(ref, "float32")


def out_of_memory(error: Exception) -> bool:
    """Whether `error` is torch's or XLA's out-of-memory error."""
    text = str(error)
    return (
        isinstance(error, torch.cuda.OutOfMemoryError)
        or "RESOURCE_EXHAUSTED" in text
        or "out of memory" in text.lower()
    )


def matrix_prompts(batch: int) -> list[str]:
    """`batch` prompts: `PROMPTS` (8 different ones) repeated."""
    return (PROMPTS * -(-batch // len(PROMPTS)))[:batch]


def warm_frames(frames: int) -> int:
    """The warm-up length: `WARMUP_FRAMES` (at most `frames`) in `frames`' compilation bucket
    (`frame_bucket`), so that JAX's warm call runs the programs the timed calls run."""
    return max(min(WARMUP_FRAMES, frames), frame_bucket(frames) - FRAME_BUCKET + 1)


CAST_PARTS = ("text_encoder", "enc_to_dec_proj", "decoder")  # transformers' parts run in the benchmark's dtype
CAST_PREFIXES = tuple(f"{name}." for name in CAST_PARTS)


def build_size(size: str, batches: list[int], tokenizer, device: str) -> dict:
    """Everything a model size's configurations share: transformers' model of `size` in float32
    (`torch.manual_seed(0)`, sdpa attention (`ATTENTION`), built on torch's `device`) with its generator, a
    float32 copy of the state of its `CAST_PARTS` on the host (`torch_in_dtype` casts from it), the text states of each
    batch's prompts from its float32 T5 encoder (JAX's input: [B, N, d_model] float32 and the mask [B, N]
    int32), and the JAX LM parameters from the same state dict, float32 on the host (`cast_params` places
    them in a dtype)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration._from_config(hf_config(size), attn_implementation=ATTENTION).eval()
    if model.decoder.config._attn_implementation != "sdpa":
        raise RuntimeError(f"transformers' decoder runs {model.decoder.config._attn_implementation!r} attention")
    texts = {}
    with torch.inference_mode():
        for b in batches:
            inputs = tokenizer(matrix_prompts(b), padding=True, return_tensors="pt").to(device)
            hidden = model.text_encoder(**inputs).last_hidden_state
            texts[b] = (
                jnp.asarray(hidden.float().cpu().numpy()),
                jnp.asarray(inputs["attention_mask"].cpu().numpy(), jnp.int32),
            )
    lm_config = lm_config_from_hf(model.config.to_dict())
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k.startswith(CAST_PREFIXES)}
    lm_state = {k: v.numpy() for k, v in state.items() if not k.startswith("text_encoder.")}
    host_params = lm_params_from_hf_state_dict(lm_state, lm_config, f"random {size}")
    return {
        "generator": TorchGenerator(model, tokenizer, device),
        "model": model,
        "state": state,
        "texts": texts,
        "lm_config": lm_config,
        "host_params": host_params,
        "attention": model.decoder.config._attn_implementation,
    }


def jax_params(built: dict, size: str, dtype: str):
    """The JAX LM parameters of `build_size` in `dtype` (`cast_params`) on JAX's default device, checked to
    read `lm_step_bytes` per step."""
    params = cast_params(jax.device_put(built["host_params"]), dtype)
    if lm_weight_bytes(params, built["lm_config"])[0] != lm_step_bytes(size, dtype):
        raise RuntimeError(f"the {size} LM in {dtype} does not read {lm_step_bytes(size, dtype)} bytes per step")
    return params


def torch_in_dtype(built: dict, dtype: str) -> None:
    """transformers' text encoder, projection and decoder (`CAST_PARTS`) cast to `dtype` from the float32 weights
    of the host state dict, reloaded once they have been cast (the codec stays float32: its decode is timed
    apart, not counted)."""
    model = built["model"]
    if model.decoder.dtype != torch.float32:
        for name in CAST_PARTS:
            getattr(model, name).to(torch.float32)
        model.load_state_dict(built["state"], strict=False)
    for name in CAST_PARTS:
        getattr(model, name).to(TORCH_DTYPES[dtype])


def compile_loops(built: dict, plan: list[tuple[str, int]], frames: int) -> dict:
    """The JAX decode loops of every (dtype, batch) of `plan`, all compiled at once, one thread each
    (`lower_generate(...).compile()` on the shapes of the parameters in that dtype; XLA compiles without
    holding the GIL, and `generate_tokens` later reuses the executables): per configuration {"compile": its
    wall seconds (so with the others compiling beside it), "loop_bytes": `compiled_bytes`}, or `OOM`."""
    shapes = {
        dtype: jax.eval_shape(lambda p, dtype=dtype: cast_params(p, dtype), built["host_params"])
        for dtype in dict.fromkeys(d for d, _ in plan)
    }

    def one(dtype: str, batch: int):
        text, mask = built["texts"][batch]
        start = time.perf_counter()
        try:
            compiled = lower_generate(
                built["lm_config"], shapes[dtype], text, mask, row_keys(np.arange(batch)), frames, SAMPLING
            ).compile()
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"batch {batch} {dtype}: jax ran out of memory compiling: {str(e)[:200]}", flush=True)
            return OOM
        return {"compile": time.perf_counter() - start, "loop_bytes": compiled_bytes(compiled)}

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        futures = {config: pool.submit(one, *config) for config in plan}
        return {config: future.result() for config, future in futures.items()}


def jax_generate(built: dict, params, batch: int, frames: int, seed: int) -> float:
    """Seconds of one `generate_tokens` call (waited for) on `batch`'s text states."""
    text, mask = built["texts"][batch]
    keys = row_keys(seed + np.arange(batch))
    start = time.perf_counter()
    jax.block_until_ready(generate_tokens(built["lm_config"], params, text, mask, keys, frames, SAMPLING))
    return time.perf_counter() - start


def compiled_bytes(compiled) -> int | None:
    """Device bytes of a compiled program (`memory_analysis()`): arguments + outputs + temporaries - the
    outputs that alias (donated) arguments; None where the backend gives no analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def measure(
    built: dict, params, compiled, size: str, batch: int, dtype: str, frames: dict[str, int], runs: int, cuda: bool
) -> dict:
    """One configuration, its JAX decode loop compiled (`compile_loops`' result `compiled`): one warm call per
    framework (`warm_frames`; JAX's compiles its prefill and reuses the compiled loop), then `runs` rounds of
    JAX, transformers, frames[side] frames each. A framework that runs out of device memory is marked `OOM`
    and not called again. Returns the generation seconds per call and framework, compile seconds, device bytes
    (the compiled loop's, JAX's process peak where reported, transformers' peak over the timed calls), and for
    `estimate_seconds` the warm-up seconds and seconds per step of each framework."""
    start = time.perf_counter()
    prompts = matrix_prompts(batch)
    res: dict = {
        "size": size,
        "batch": batch,
        "dtype": dtype,
        "compile": None,
        "loop_bytes": None,
        "jax": [],
        "torch": [],
        "torch_peak": None,
    }
    if compiled == OOM:
        res["jax"] = OOM
    else:
        res.update(compiled)

    def attempt(side: str, fn) -> None:
        if res[side] == OOM:
            return
        try:
            fn()
        except Exception as e:
            if not out_of_memory(e):
                raise
            print(f"{size} batch {batch} {dtype}: {side} ran out of memory: {str(e)[:200]}", flush=True)
            res[side] = OOM
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()

    def torch_run(seed: int) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        res["torch"].append(built["generator"](prompts, frames["torch"], seed=seed)["generate"])
        if cuda:
            res["torch_peak"] = max(res["torch_peak"] or 0, torch.cuda.max_memory_allocated())

    print(
        f"{size} batch {batch} {dtype}: warm-up calls ({warm_frames(frames['jax'])} / "
        f"{warm_frames(frames['torch'])} frames) ...",
        flush=True,
    )
    attempt("jax", lambda: jax_generate(built, params, batch, warm_frames(frames["jax"]), 0))
    attempt("torch", lambda: built["generator"](prompts, warm_frames(frames["torch"])))
    res["warm"] = time.perf_counter() - start
    for r in range(runs):
        attempt("jax", lambda r=r: res["jax"].append(jax_generate(built, params, batch, frames["jax"], 1 + r)))
        attempt("torch", lambda r=r: torch_run(1 + r))
    res["jax_peak"] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    res["step_seconds"] = {
        side: median_min(res[side])[0] / (frames[side] + 3) for side in ("jax", "torch") if res[side] != OOM
    }
    res["seconds"] = time.perf_counter() - start
    rates = ", ".join(
        f"{side} " + (fmt(1 / res["step_seconds"][side]) if side in res["step_seconds"] else OOM)
        for side in ("jax", "torch")
    )
    print(f"{size} batch {batch} {dtype}: steps/s {rates}; {res['seconds']:.0f} s", flush=True)
    return res


def run_matrix(
    models: list[str],
    batches: list[int],
    dtypes: list[str],
    frames: int,
    torch_frames: int,
    runs: int,
    budget: float,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Every (size, dtype, batch) in that order, within `budget` seconds from the start (the imports before it
    not counted). Per size: its plan (the dtypes x batches) is cut from the end while its estimated time
    (`estimate_build`, `estimate_compile`, `estimate_seconds`) exceeds what is left, and the configurations cut
    are recorded as skipped with the estimate; then its models are built once (`build_size`), the JAX decode
    loops of the whole plan compiled at once (`compile_loops`), and per dtype the JAX parameters placed and
    transformers' model cast (`jax_params`, `torch_in_dtype`) and each batch measured (`measure`: JAX over
    `frames` frames, transformers over `torch_frames`) unless its own estimate no longer fits. Each size's
    models are freed before the next. After each row (measured or skipped) `on_row` gets the result so far
    (`matrix_report` reads it as partial while `len(rows) < total`), so a run stopped from outside keeps the
    rows it measured."""
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device, threads = ("cuda" if cuda else "cpu"), usable_cores()
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 float32 matmuls, as XLA's default precision on the GPU
    else:
        torch.set_num_threads(threads)
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print("memory bandwidth ...", flush=True)
    bandwidth = memory_bandwidth(device=device, calls=10 if cuda else 1)
    bw = bandwidth["jax"] * 1e9
    print(f"jnp.sum over 1 GiB: {bandwidth['jax']:.1f} GB/s (torch.sum {bandwidth['torch']:.1f} GB/s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_spiece(Path(tmp))
        tokenizer = HFT5Tokenizer.from_pretrained(tmp)
    rows, done, builds, phases, attention = [], [], {}, {}, set()
    steps = {"jax": frames, "torch": torch_frames}
    jax_device = jax.devices()[0]
    memory = f", {torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB" if cuda else ""
    fixed = {
        "cuda": cuda,
        "frames": frames,
        "torch_frames": torch_frames,
        "runs": runs,
        "budget": budget,
        "bandwidth": bandwidth,
        "threads": threads,
        "models": models,
        "dtypes": dtypes,
        "frame_rate": hf_config(models[0]).audio_encoder.frame_rate,
        "jax_device": f"{jax_device.platform} ({jax_device.device_kind})",
        "package": package_state(),
        "torch_device": f"{torch.cuda.get_device_name()}{memory}" if cuda else "CPU",
        "total": len(dtypes) * len(models) * len(batches),
    }

    def result() -> dict:
        return {
            **fixed,
            "rows": list(rows),
            "elapsed": time.perf_counter() - start,
            "builds": dict(builds),
            "phases": dict(phases),
            "attention": sorted(attention),
            "load": (load_before, load_average()),
        }

    def add(row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(result())

    def left() -> float:
        return budget - (time.perf_counter() - start)

    def skip(size: str, dtype: str, batch: int, need: float) -> None:
        print(f"{size} batch {batch} {dtype}: {SKIPPED} (about {need:.0f} s needed, {left():.0f} s left)", flush=True)
        add({"size": size, "batch": batch, "dtype": dtype, "skipped": (need, left())})

    for size in models:
        plan = [(d, b) for d in dtypes for b in batches]
        build = estimate_build(builds, size)
        while plan:
            need = (
                build
                + estimate_compile(phases, size, len(plan))
                + sum(estimate_seconds(done, size, b, d, steps, runs, bw) for d, b in plan)
            )
            if need <= left():
                break
            skip(size, *plan.pop(), need)
        if not plan:
            continue
        print(f"building {size} (torch.manual_seed(0)) on {device} ...", flush=True)
        t = time.perf_counter()
        built = build_size(size, batches, tokenizer, device)
        builds[size] = time.perf_counter() - t
        attention.add(built["attention"])
        print(f"{size}: compiling {len(plan)} JAX decode loops at once ...", flush=True)
        t = time.perf_counter()
        compiled = compile_loops(built, plan, frames)
        phases[size] = (len(plan), time.perf_counter() - t)
        for dtype in dict.fromkeys(d for d, _ in plan):
            params = jax_params(built, size, dtype)
            torch_in_dtype(built, dtype)
            for b in [b for d, b in plan if d == dtype]:
                need = estimate_seconds(done, size, b, dtype, steps, runs, bw)
                if need > left():
                    skip(size, dtype, b, need)
                    continue
                done.append(measure(built, params, compiled[dtype, b], size, b, dtype, steps, runs, cuda))
                add(done[-1])
            del params
        del built, compiled
        gc.collect()
        jax.clear_caches()
        if cuda:
            torch.cuda.empty_cache()
    return result()


def fmt(x: float) -> str:
    """A rate or time: one decimal from 1 up, three significant digits below."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def matrix_row(r: dict, frames: dict[str, int], frame_rate: float, bandwidth: float) -> str:
    """One table row of `matrix_report` (`frames` per framework, `bandwidth` in bytes/s)."""
    bound = fmt(bandwidth / lm_step_bytes(r["size"], r["dtype"]))
    lead = f"| {r['size']} | {r['batch']} ({2 * r['batch']}) | {r['dtype']} |"
    if "skipped" in r:
        need, left = r["skipped"]
        return f"{lead} {SKIPPED} (about {need:.0f} s needed, {max(left, 0.0):.0f} s left) |{' - |' * 7} {bound} |"
    seconds = {side: None if r[side] == OOM else median_min(r[side])[0] for side in ("jax", "torch")}
    steps = {side: None if s is None else (frames[side] + 3) / s for side, s in seconds.items()}
    rate = {side: OOM if v is None else fmt(v) for side, v in steps.items()}
    rtf = {side: OOM if s is None else fmt(frames[side] / frame_rate / s) for side, s in seconds.items()}
    ratio = "-" if None in steps.values() else f"**{steps['jax'] / steps['torch']:.2f}**"

    def gib(b):
        return "n/a" if b is None else f"{b / GIB:.3g}"

    compile_cell = "-" if r["compile"] is None else fmt(r["compile"])
    return (
        f"{lead} {rate['jax']} | {rate['torch']} | {ratio} | {rtf['jax']} | {rtf['torch']} | {compile_cell} "
        f"| {gib(r['loop_bytes'])} / {gib(r['jax_peak'])} | {gib(r['torch_peak'])} | {bound} |"
    )


def matrix_report(res: dict, command: str) -> str:
    """The markdown section of `run_matrix`: title, command, provenance, notes, one row per configuration."""
    frames, torch_frames, bw = res["frames"], res["torch_frames"], res["bandwidth"]
    rows = sorted(
        res["rows"], key=lambda r: (res["models"].index(r["size"]), res["dtypes"].index(r["dtype"]), r["batch"])
    )
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    skipped = sum("skipped" in r for r in res["rows"])
    weights = "; ".join(
        f"{s}: " + ", ".join(f"{lm_step_bytes(s, d) / 1e9:.3f} GB in {d}" for d in dtypes) for s in sizes
    )
    architectures = "; ".join("{} {} layers, width {}, {} heads, ffn {}".format(s, *SIZES[s]) for s in sizes)
    header = (
        "| model | batch (rows with CFG) | dtype | JAX steps/s | transformers steps/s | ratio JAX/transformers "
        "| JAX real-time factor | transformers real-time factor | JAX compile s "
        "| JAX peak GiB (decode loop / process) | transformers peak GiB | bound steps/s |"
    )
    notes = [
        f"- Device: JAX {res['jax_device']}; torch {res['torch_device']}.",
        (
            f"- Models: transformers `MusicgenForConditionalGeneration` built from its config with "
            f"`torch.manual_seed(0)` "
            "on the device, `attn_implementation` sdpa for the text encoder and decoder (the decoder runs "
            f"{', '.join(res['attention'])}; EnCodec has no attention): decoder "
            f"{architectures}; 4 codebooks x {CARD}; T5 encoder t5-base size and EnCodec 32 kHz real size (tiny: a "
            "2-layer T5 of width 32 and a narrow EnCodec). JAX: the LM parameters from the same state dict in memory "
            "(`lm_params_from_hf_state_dict`), cast with `cast_params` (matrices in the dtype, norms and biases "
            "float32), and the T5 encoder's float32 states of the same prompts; transformers: text encoder, projection "
            "and decoder cast to the dtype (the codec float32)."
            + (
                " float32 matmuls in TF32 on both: XLA's default precision on the GPU, torch "
                '`set_float32_matmul_precision("high")`.'
                if res["cuda"]
                else ""
            )
            + f" musicgen_jax: {res['package']}."
        ),
        (
            f"- Sampling: JAX {frames} frames ({frames / res['frame_rate']:g} s of audio, {frames + 3} steps), "
            f"transformers {torch_frames} ({torch_frames / res['frame_rate']:g} s, {torch_frames + 3} steps), top-k "
            f"{TOP_K}, temperature 1, guidance {CFG:g} (the batch runs doubled on both sides); transformers "
            f"`generate(do_sample=True, top_k={TOP_K}, guidance_scale={CFG:g}, max_length=frames + 4)`, JAX "
            f"`generate_tokens` with `SamplingParams(top_k={TOP_K}, cfg_coef={CFG:g})`, keys from `row_keys`; "
            "prompts: the 8 of `benchmarks.text.PROMPTS`, repeated to the batch, tokenized by a sentencepiece model "
            "trained at start-up."
        ),
        (
            f"- Timing: per model size the JAX decode loops of all its configurations are compiled at once, one thread "
            "each (`lower_generate(...).compile()`; the compile column is each one's wall time, the others compiling "
            "beside it; the calls reuse those executables), then per configuration one warm call per framework "
            f"({warm_frames(frames)} / {warm_frames(torch_frames)} frames; JAX's compiles its prefill), then "
            f"{res['runs']} timed round(s) of JAX then transformers (median). Steps/s = (frames + 3) / generation "
            "seconds; real-time factor = seconds of audio per row / generation seconds. Generation seconds: JAX "
            "`generate_tokens` (prefill and decode loop, waited for); transformers `generate` minus its codec decode "
            "(`audio_encoder.decode` wrapped and timed, the GPU synchronized around it), its T5 encoding included. "
            "Ratio = JAX steps/s / transformers steps/s."
            + (
                f" transformers runs {torch_frames} frames rather than {frames} to keep the run short "
                "(`--torch-frames`)."
                if torch_frames < frames
                else ""
            )
        ),
        (
            "- Memory: JAX decode loop = the compiled loop's `memory_analysis()` (arguments + outputs + temporaries - "
            "aliased outputs: weights, KV cache, state); JAX process = `memory_stats()['peak_bytes_in_use']` after the "
            "configuration (the high-water mark since start, all configurations so far; n/a on the CPU); "
            "transformers = "
            "`torch.cuda.max_memory_allocated()` over the timed calls after `reset_peak_memory_stats()` (the "
            "whole model "
            'resident plus the call\'s working memory; n/a on the CPU). Out of device memory: "out of memory" on '
            "that side."
        ),
        (
            f"- Bound: {bw['jax']:.1f} GB/s read bandwidth (jitted `jnp.sum` over 1 GiB of float32 on the JAX "
            f"device, median of {bw['runs']} timings of {bw['calls']} call(s); `torch.sum`: {bw['torch']:.1f} GB/s) / "
            f"LM weight bytes a step reads ({weights}: per layer self-attention q, k, v, out, cross-attention q, out, "
            "fc1, fc2, and the codebook heads; not the KV cache) = the highest step rate a weight-streaming decoder "
            "reaches, at any batch."
        ),
        *(
            [
                f"- Partial: written after {len(rows)} of the {res['total']} configurations, while the run went on; "
                "a complete run rewrites this section."
            ]
            if len(rows) < res["total"]
            else []
        ),
        (
            f"- Time budget: {res['budget']:g} s from the start of the run (imports not counted); used "
            f"{res['elapsed']:.0f} s; {skipped} of {len(rows)} configurations skipped. Before each model size the time "
            "its configurations need is estimated from what was measured (build scaled by the LM weights, the compile "
            "phase by the layer count and number of loops; per configuration the nearest measured one, same size, "
            "then same dtype, then closest batch: warm-up scaled by the layer count, seconds per step by the layer "
            "count plus the extra weight and KV-cache bytes at the measured bandwidth); configurations are cut from "
            "the end of the size's list until the rest fits (a cut one's figure: what the list up to it needs), and "
            "each is checked again before it runs. Model builds: "
            + (", ".join(f"{s} {t:.0f} s" for s, t in res["builds"].items()) or "none")
            + "; compile phases: "
            + (", ".join(f"{s} {t:.0f} s for {n} loops" for s, (n, t) in res["phases"].items()) or "none")
            + "."
        ),
    ]
    return "\n".join(
        [
            MATRIX_TITLE,
            "",
            f"Command: `{command}`",
            "",
            *machine_lines(
                res["threads"],
                res["load"],
                f", sentencepiece {sentencepiece.__version__}",
                torch_mode="`torch.inference_mode()`",
            ),
            *notes,
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(matrix_row(r, {"jax": frames, "torch": torch_frames}, res["frame_rate"], bw["jax"] * 1e9) for r in rows),
            "",
        ]
    )


def write_file(path: Path, text: str) -> None:
    """`text` to `path` atomically (a temporary name beside it, then `os.replace`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    print(f"wrote {path}")


def names(choices) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names from `choices`."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or any(t not in choices for t in items):
            raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of {', '.join(choices)}")
        return items

    return parse


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of positive integers."""
    try:
        items = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of positive integers")
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sampling",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="audio to generate (the long length), seconds")
    parser.add_argument(
        "--short-seconds",
        type=float,
        default=None,
        help="the short length of the two-length step-rate measurement, seconds (default: the "
        "smallest length sharing the long one's JAX compilation, at least a fifth of it)",
    )
    parser.add_argument(
        "--batch8-seconds", type=float, default=None, help="the long length at batch 8 (default: --seconds)"
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="timed rounds per length (--matrix: per configuration) and framework"
    )
    parser.add_argument("--skip-batch8", action="store_true", help="measure batch 1 only")
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"write the sampling section (--matrix: the GPU section; needs a GPU) of {RESULTS}",
    )
    matrix = parser.add_argument_group("the GPU matrix (benchmarks/gpu.sh): one row per model, batch and dtype")
    matrix.add_argument("--matrix", action="store_true", help="run the matrix instead of the two-length benchmark")
    matrix.add_argument(
        "--models", type=names(SIZES), default="small,medium,large", help=f"comma-separated, of {', '.join(SIZES)}"
    )
    matrix.add_argument("--batches", type=positive_ints, default="1,8,64", help="comma-separated batch sizes")
    matrix.add_argument(
        "--dtypes",
        type=names(TORCH_DTYPES),
        default="bfloat16,float32",
        help=f"comma-separated, of {', '.join(TORCH_DTYPES)}, run in this order",
    )
    matrix.add_argument("--frames", type=int, default=250, help="frames to generate (50 per second of audio)")
    matrix.add_argument(
        "--torch-frames",
        type=int,
        default=None,
        help="frames transformers generates, at most --frames (default: --frames; fewer keep the run short)",
    )
    matrix.add_argument(
        "--budget-seconds",
        type=float,
        default=420.0,
        help="skip (and report) the configurations that would not finish within this many seconds",
    )
    matrix.add_argument("--out", type=Path, default=None, help="also write the section to this file")
    args = parser.parse_args(argv)
    if args.matrix:
        torch_frames = args.frames if args.torch_frames is None else min(args.torch_frames, args.frames)
        if args.runs < 1 or args.frames < 1 or torch_frames < 1 or args.budget_seconds <= 0:
            parser.error("--runs, --frames and --torch-frames must be >= 1, --budget-seconds > 0")
        if args.write and jax.default_backend() != "gpu":
            parser.error(
                f"--matrix --write writes the GPU section of {RESULTS}: JAX runs on "
                f"{jax.default_backend()} here (use --out)"
            )
        command = command_line("benchmarks.sampling", argv)

        def partial(res: dict) -> None:  # the complete report is written once, below
            if len(res["rows"]) < res["total"]:
                write_file(args.out, matrix_report(res, command))

        res = run_matrix(
            args.models,
            sorted(set(args.batches)),
            list(dict.fromkeys(args.dtypes)),
            args.frames,
            torch_frames,
            args.runs,
            args.budget_seconds,
            on_row=None if args.out is None else partial,
        )
        section = matrix_report(res, command)
        if args.out is not None:
            write_file(args.out, section)
        publish(section, args.write)
        return
    batch8 = args.seconds if args.batch8_seconds is None else args.batch8_seconds
    short = args.short_seconds
    if (
        args.runs < 1
        or args.seconds <= 0
        or batch8 <= 0
        or (short is not None and not 0 < short < min(args.seconds, batch8))
    ):
        parser.error("--runs must be >= 1, --seconds and --batch8-seconds > 0, 0 < --short-seconds < both")
    res = run(args.seconds, args.runs, args.skip_batch8, batch8, short)
    publish(report(res, command_line("benchmarks.sampling", argv)), args.write)


if __name__ == "__main__":
    main()
