"""Benchmark text-to-music sampling on the CPU: JAX (`musicgen_jax.sampling.generate_tokens`) against
transformers' `MusicgenForConditionalGeneration.generate`, musicgen-small architecture, same random weights.

Per batch size (1 prompt, then 8) it measures the steady decode rate of both (from two generation lengths, which
removes the fixed costs), the time to first audio, JAX's compile time, the peak resident memory, and the
memory-bandwidth bound of a weight-streaming decoder. The model definitions here (`hf_config`, `TorchGenerator`,
`lm_weight_bytes`) are shared with the GPU matrix, `benchmarks.sampling_gpu`.

    .venv/bin/python -m benchmarks.sampling --write     # writes the sampling section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import jax
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
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    memory_bandwidth,
    other_load,
    package_state,
    parser,
    publish,
    section,
    table,
    usable_cores,
)
from benchmarks.text import PROMPTS, prompt_batch, write_spiece
from benchmarks.text import hf_config as text_hf_config
from musicgen_jax.convert.pretrained import convert
from musicgen_jax.lm import pattern
from musicgen_jax.lm.transformer import cache_blocks
from musicgen_jax.sampling import (
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
TARGET, AIM = 1.5, 2.0  # documented targets for the JAX / transformers steady step rate, not asserted
SIZES = {
    "tiny": (2, 64, 4, 256),
    "small": (24, 1024, 16, 4096),
    "medium": (48, 1536, 24, 6144),
    "large": (48, 2048, 32, 8192),
}  # decoder layers, width, heads, ffn width
CARD, CODEBOOKS = 2048, 4


def hf_config(size: str = "small", **decoder) -> MusicgenConfig:
    """A MusicGen architecture of `SIZES` (4 codebooks of 2048), `decoder` options changed: small, medium and large
    with a t5-base-size text encoder and EnCodec 32 kHz (real size); tiny (2 layers, width 64, the tests' model)
    with a 2-layer T5 of width 32 and an EnCodec of 4 filters and 16 channels."""
    layers, dim, heads, ffn = SIZES[size]
    decoder = MusicgenDecoderConfig(
        **{
            "vocab_size": CARD,
            "hidden_size": dim,
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "ffn_dim": ffn,
            "num_codebooks": CODEBOOKS,
            **decoder,
        }
    )
    if size == "tiny":
        text = text_hf_config(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2)
        codec = codec_hf_config(num_filters=4, hidden_size=16)
    else:
        text, codec = text_hf_config(), codec_hf_config()
    return MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)


def write_checkpoint(directory: Path, config: MusicgenConfig | None = None) -> MusicgenForConditionalGeneration:
    """Save a transformers MusicGen of `config` (default `hf_config()`), initialized from `torch.manual_seed(0)`,
    and the text benchmark's sentencepiece model (`benchmarks.text.write_spiece`) into `directory`; returns it."""
    write_spiece(directory)
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(config or hf_config()).eval()
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


def timed(fn):
    """(seconds, peak RSS GiB during the call, output) of `fn()`."""
    reset_peak_rss()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, peak_rss_gib(), out


# --- the bandwidth bound --------------------------------------------------------------------------------


def step_params(config) -> int:
    """Parameters of the LM kernels a decode step reads: per layer self-attention q, k, v, out, cross-attention
    q, out (its k, v act on the text once per generation), fc1, fc2; and the codebook heads. Not read per step: the
    token embeddings (only gathered), the text projection (once per generation); the LayerNorms are negligible."""
    return config.num_layers * (6 * config.dim**2 + 2 * config.dim * config.ffn_dim) + (
        config.num_codebooks * config.dim * config.card
    )


def lm_weight_bytes(params, config) -> int:
    """Bytes of the `step_params` kernels in `params`, each by its dtype (checked to be those parameters)."""
    kernels = [params["params"][f"heads_{k}"]["kernel"] for k in range(config.num_codebooks)]
    for i in range(config.num_layers):
        layer = params["params"][f"layers_{i}"]
        kernels += [layer["self_attn"][n]["kernel"] for n in ("q", "k", "v", "out")]
        kernels += [layer["cross_attn"][n]["kernel"] for n in ("q", "out")] + [layer["fc1"]["kernel"]]
        kernels.append(layer["fc2"]["kernel"])
    if sum(k.size for k in kernels) != step_params(config):
        raise RuntimeError(
            f"counted {sum(k.size for k in kernels)} LM weights per step, expected {step_params(config)}"
        )
    return sum(k.size * k.dtype.itemsize for k in kernels)


def kv_cache_read_bytes(config, rows: int, positions: int, steps: range) -> float:
    """Bytes of the self-attention KV cache (float32, `positions` long, `rows` rows) a decode step reads
    on average over `steps` (the positions it runs): the blocks up to its own position."""
    ends = np.cumsum(cache_blocks(positions))
    read = [ends[np.searchsorted(ends, s, side="right")] for s in steps]
    return 4 * 2 * config.num_layers * rows * config.dim * sum(read) / len(read)


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
            self.model.generate(
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
            "generate": total - self.decode_time,
            "codes": self.codes,
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
        jax.block_until_ready(self.c.codec.decode(codes))
        return {"total": time.perf_counter() - t0, "generate": t2 - t1, "codes": np.asarray(codes)}

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
        "first": {},
        "jax": {frames: [], short: []},
        "torch": {frames: [], short: []},
        "peak": {"jax": 0.0, "torch": warm[1]},
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
                _, peak, out = timed(lambda gen=gen, n=n, r=r: gen(prompts, n, seed=1 + r))
                res[name][n].append(out)
                res["peak"][name] = max(res["peak"][name], peak)
                print(f"batch {b}, run {r + 1}, {n} frames: {name} {(n + 3) / out['generate']:.2f} steps/s", flush=True)
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
        }
    first = res["first"]
    out["compile"] = {n: first[n]["compile"] for n in first}
    out["first_ttfa"] = first[long]["wall"]
    return out


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
    weight_bytes = lm_weight_bytes(components.lm_params, config)
    print(f"loaded in {load_seconds:.0f} s; memory bandwidth ...", flush=True)
    bandwidth = memory_bandwidth()

    batches = {}
    plan = [(1, seconds)] + ([] if skip_batch8 else [(8, batch8_seconds)])
    for b, secs in plan:
        frames = round(secs * frame_rate)
        short = default_short(frames) if short_seconds is None else round(short_seconds * frame_rate)
        if not 0 < short < frames:
            raise ValueError(f"the short length ({short} frames) must be between 0 and {frames} frames")
        batches[b] = run_batch(jax_gen, torch_gen, prompt_batch(b), frames, short, runs)
        batches[b]["summary"] = summarize(batches[b])
        batches[b]["seconds"] = secs
    return {
        "runs": runs,
        "threads": threads,
        "package": package_state(),
        "load": (load_before, load_average()),
        "load_seconds": load_seconds,
        "config": config,
        "weight_bytes": weight_bytes,
        "bandwidth": bandwidth,
        "batches": batches,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


NOTES = """\
- Model: transformers `MusicgenForConditionalGeneration`, musicgen-small architecture (decoder 24 layers, width \
1024, 16 heads, ffn 4096, 4 codebooks x 2048; T5 encoder t5-base size; EnCodec 32 kHz real size), \
`torch.manual_seed(0)` init, `save_pretrained` with a sentencepiece model trained at start-up, loaded into JAX with \
`musicgen_jax.convert.pretrained.convert` (build, save and load: {load_seconds:.0f} s). JAX: `generate_tokens` in \
float32, layers unrolled, KV cache preallocated to the length bucket; transformers in float32, `DynamicCache`. \
musicgen_jax: {package}.
- Sampling: top-k {top_k}, temperature 1, classifier-free guidance {cfg:g}; batch 8 uses 8 different prompts.
- Timing: median over {runs} run(s) per length, JAX and transformers alternating, after the first calls (JAX: \
compile+run; transformers: a {warm}-frame warm-up). A step is one LM forward over one pattern position (frames + 3 \
per generation). Steady rate = (long - short frames) / (t_long - t_short), t the generation time alone (JAX: \
`generate_tokens`; transformers: `generate` minus its codec decode); in brackets (frames + 3) / t_long. The short \
length shares the long one's JAX compilation. Time to first audio (warm): tokenize + text encoder + generation + \
codec decode. Compile: `lower_generate(...).compile()`, timed apart.
- Memory: peak RSS per call = the process's VmHWM, reset before each call, so both frameworks' resident weights \
plus that call's working set; process max RSS over the run: {max_rss:.2f} GiB."""
COLUMNS = {
    "batch": "{}",
    "JAX steps/s steady (average)": "{:.2f} ({:.2f})",
    "transformers steps/s steady (average)": "{:.2f} ({:.2f})",
    "ratio JAX/transformers": "**{:.2f}** ({:.2f})",
    "JAX compile s": "{}",
    "JAX time to first audio s": "{:.1f}",
    "transformers time to first audio s": "{:.1f}",
    "JAX peak RSS GiB": "{:.2f}",
    "transformers peak RSS GiB": "{:.2f}",
}


def report(res: dict, command: str) -> str:
    """The RESULTS.md section: provenance, one row per batch size, the bandwidth bound."""
    config, bw = res["config"], res["bandwidth"]
    rows, notes = [], []
    for b, r in res["batches"].items():
        s = r["summary"]
        jx, pt = s["jax"], s["torch"]
        compile_cell = " / ".join(f"{seconds:.1f}" for seconds in s["compile"].values())
        rows.append(
            (
                f"{b} ({2 * b} rows with CFG), {r['seconds']:g} s = {r['frames']} frames",
                (jx["marginal"], jx["average"]),
                (pt["marginal"], pt["average"]),
                (jx["marginal"] / pt["marginal"], jx["average"] / pt["average"]),
                compile_cell + (" (both lengths)" if len(s["compile"]) == 1 else ""),
                jx["ttfa"],
                pt["ttfa"],
                r["peak"]["jax"],
                r["peak"]["torch"],
            )
        )
        notes.append(
            f"- Batch {b}: {r['frames']} and {r['short']} frames; JAX cold (first call, compiling) "
            f"{s['first_ttfa']:.1f} s; first-stage codes: {r['distinct_codes'][0]} distinct (JAX), "
            f"{r['distinct_codes'][1]} (transformers); other processes used {r['others']} of the CPU time"
        )
    b1, bound = res["batches"][1], bw["jax"] * 1e9 / res["weight_bytes"]
    rate = b1["summary"]["jax"]["marginal"]
    positions = pattern.num_steps(frame_bucket(b1["frames"]), config.delays)
    cache = kv_cache_read_bytes(config, 2, positions, range(b1["short"] + 3, b1["frames"] + 3))
    bound_lines = [
        f"- Bound: {bw['jax']:.2f} GB/s (jitted `jnp.sum` over 1 GiB of float32, median of {bw['runs']}; `torch.sum`: "
        f"{bw['torch']:.2f} GB/s) / {res['weight_bytes'] / 1e9:.3f} GB of LM weights a step reads (`step_params`) = "
        f"**{bound:.2f} steps/s**. JAX at batch 1: **{100 * rate / bound:.0f}% of the bound**; transformers "
        f"{100 * b1['summary']['torch']['marginal'] / bound:.0f}%.",
        f"- With the KV cache a step reads ({cache / 1e9:.3f} GB on average over the steady rate's steps): bound "
        f"{bw['jax'] * 1e9 / (res['weight_bytes'] + cache):.2f} steps/s, JAX at "
        f"{100 * rate * (res['weight_bytes'] + cache) / (bw['jax'] * 1e9):.0f}% of it.",
    ]
    facts = [
        *machine_lines(
            res["threads"],
            res["load"],
            f", sentencepiece {sentencepiece.__version__}",
            torch_mode="`torch.inference_mode()`",
        ),
        NOTES.format(
            load_seconds=res["load_seconds"],
            package=res["package"],
            top_k=TOP_K,
            cfg=CFG,
            runs=res["runs"],
            warm=WARMUP_FRAMES,
            max_rss=res["ru_maxrss"],
        ),
        *notes,
    ]
    target = (
        f"Targets (documented, not asserted): JAX steady step rate >= {TARGET:g}x transformers', aiming for {AIM:g}x."
    )
    bound_text = "Memory-bandwidth bound (batch 1):\n\n" + "\n".join(bound_lines)
    return section(SECTION_TITLE, command, facts, table(COLUMNS, rows), target, bound_text)


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.sampling", __doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="audio to generate (the long length), seconds")
    p.add_argument(
        "--short-seconds",
        type=float,
        default=None,
        help="the short length of the two-length step rate, seconds (default: the smallest length sharing the long "
        "one's JAX compilation, at least a fifth of it)",
    )
    p.add_argument("--batch8-seconds", type=float, default=None, help="the long length at batch 8 (default --seconds)")
    p.add_argument("--runs", type=int, default=1, help="timed rounds per length and framework")
    p.add_argument("--skip-batch8", action="store_true", help="measure batch 1 only")
    args = p.parse_args(argv)
    batch8 = args.seconds if args.batch8_seconds is None else args.batch8_seconds
    short = args.short_seconds
    if (
        args.runs < 1
        or min(args.seconds, batch8) <= 0
        or (short is not None and not 0 < short < min(args.seconds, batch8))
    ):
        p.error("--runs must be >= 1, --seconds and --batch8-seconds > 0, 0 < --short-seconds < both")
    res = run(args.seconds, args.runs, args.skip_batch8, batch8, short)
    publish(report(res, command_line("benchmarks.sampling", argv)), args.write)


if __name__ == "__main__":
    main()
