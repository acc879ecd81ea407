"""Benchmark training: the musicgen_jax train step against the equivalent PyTorch step (transformers), the
per-device memory of musicgen-large's train step under FSDP, and that of fine-tuning musicgen-medium and
-large on one device, full and with low-rank adapters.

Training-step section: the musicgen-small architecture (decoder width 1024, 16 heads, ffn 4096, 4
codebooks of 2048; t5-base-size text encoder; EnCodec 32 kHz, unused by the step) with `--layers`
decoder layers (default 4 of the real 24, to fit a small CPU in a few minutes: the layers' cost grows with
their number, that of the T5 encoder, embeddings and codebook heads does not), random
weights: transformers' `MusicgenForConditionalGeneration` built with `torch.manual_seed(0)` (decoder
dropout 0, as the JAX model has none), saved with `save_pretrained` with the sentencepiece model of
`benchmarks.text`, and loaded into JAX with `musicgen_jax.convert.pretrained.convert`: the SAME weights,
and the same batch (`--batch` prompts of `benchmarks.text.PROMPTS` padded to `--text-tokens` T5 tokens,
random codes [B, 4, `--frames`], full crops).

- musicgen_jax: `compile_step` on a 1-device mesh (`make_mesh(devices=jax.devices()[:1])`), float32: the
  frozen T5 encoder inside the step, classifier-free guidance dropout 0.3 (the recipe), delay pattern,
  loss, gradients, global-norm clipping 1.0, AdamW (lr 1e-4 after the recipe's warm-up, betas 0.9 / 0.95,
  weight decay 0.1, eps 1e-8), EMA (decay 0.99, every 10 steps), state donated.
- PyTorch: `model(input_ids, attention_mask, decoder_input_ids, labels)` (the loss), `loss.backward()`,
  `torch.nn.utils.clip_grad_norm_(trainable, 1.0)`, `torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9,
  0.95), weight_decay=0.1, eps=1e-8).step()`, with the text and audio encoders frozen (`requires_grad_(False)`,
  eval mode, as audiocraft) and out of the optimizer; labels = the delay-pattern targets of
  `musicgen_jax.train.loss.training_sequences` (-100 where not counted), decoder inputs
  `model.prepare_decoder_input_ids_from_labels(labels)`, as `tests/train/test_loss.py`.

Parity: a second JAX step compiled with `cfg_dropout=0` and no warm-up (lr 1e-4 at step 0, as PyTorch's)
runs two steps from the same weights as the first two PyTorch steps; the losses and the gradient norms
(before clipping) of both steps are compared (the second step's after one AdamW update on each side).

Timing: JAX compile (`lower(...).compile()` of the timed step) apart; then one untimed first call of each
and `--steps` timed steps alternating JAX and PyTorch (`benchmarks.common.time_pair`), median. Throughput:
audio frames per second of wall time = batch x frames / step time (x 4 codebooks: codebook tokens/s).
Parts (unless `--skip-parts`): the T5 forward, the LM's loss and gradients, the update, each timed on its
own, and the decoder layers' matrix products bare at the step's shapes (`product_seconds`), JAX and PyTorch.

Memory section: musicgen-large's LM (width 2048, 32 heads, 48 layers scanned, ffn 8192, 4 codebooks of
2048, text width 768) train step (`scan_layers=True`, precomputed text states [B, 128, 768] instead of
T5) in each step variant of `--memory-variants` (rematerialization policy / compute dtype, default
none/float32, full/float32, full/bfloat16, dots/bfloat16), compiled for FSDP meshes
`make_mesh(data=1, fsdp=N)` of 8, 64 and 256 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=256`, in a subprocess) from `jax.ShapeDtypeStruct`s
carrying the shardings, no array allocated; per device: the state's bytes from its shapes and shardings,
and XLA's `memory_analysis()` of the compiled step (arguments, outputs, aliased, temporaries) at
per-device batch 1 and 2 of 1500 frames (30 s), extrapolated linearly in the batch; the first variant
also at per-device batch 1 of 250, 500 and 1000 frames on 8 devices.

Fine-tuning section: the train step of musicgen-medium's LM (width 1536, 24 heads, 48 layers, ffn 6144)
and musicgen-large's (as above), each fully fine-tuned (every parameter trains: AdamW moments of all of
them) and with low-rank adapters (`StepConfig(lora_rank=--lora-rank)`, default 8: only the adapters train
and have AdamW moments and an EMA; the frozen float32 parameters stay),
compiled on ONE device (`make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])`, in a subprocess) with the
configs' fine-tuning settings (`scan_layers=True`, `remat="full"`, `compute_dtype="bfloat16"`) at batch 1
of 1500 frames (30 s) with precomputed text states [1, 128, 768], from `jax.ShapeDtypeStruct`s (nothing
allocated), one compile after the other; per device: the state's bytes from its shapes (params / optimizer
state / EMA), XLA's `memory_analysis()` (arguments, temporaries, outputs, aliased), the peak, and whether
it fits a 16 GiB and a 24 GiB device.

    .venv/bin/python -m benchmarks.train --write     # writes the training sections of benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks.train --sections finetune --write     # the fine-tuning section only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import (
    RESULTS,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    other_load,
    publish,
    time_pair,
    usable_cores,
)

STEP_TITLE = "## Training step (musicgen-small architecture, random weights)"
MEMORY_TITLE = "## Training memory (musicgen-large under FSDP, simulated devices)"
FINETUNE_TITLE = "## Fine-tuning memory (musicgen-medium and -large on one device, full and LoRA)"
SECTIONS = ("step", "memory", "finetune")
FRAME_RATE = 50  # EnCodec 32 kHz frames per second
GIB = 2**30

# musicgen-large (audiocraft's large grid: clipping 3.0, guidance dropout 0.2; neither changes the memory)
LARGE = dict(dim=2048, num_heads=32, num_layers=48, ffn_dim=8192, card=2048, delays=(0, 1, 2, 3), text_dim=768)
MEDIUM = dict(dim=1536, num_heads=24, num_layers=48, ffn_dim=6144, card=2048, delays=(0, 1, 2, 3), text_dim=768)
# fine-tuned models: (LM, clipping norm, guidance dropout) of configs/musicgen_{medium,large}.py (no change to memory)
FINETUNE_MODELS = {"musicgen-medium": (MEDIUM, 1.0, 0.3), "musicgen-large": (LARGE, 3.0, 0.2)}
FINETUNE_RANK = 8  # default `--lora-rank`
FINETUNE_CAPACITIES = (16, 24)  # GiB on one device: a 16 GB and a 24 GB GPU
MEMORY_DEVICES = (8, 64, 256)
MEMORY_FRAMES, MEMORY_TEXT = 1500, 128
SWEEP_FRAMES = (250, 500, 1000)  # crop lengths compiled at per-device batch 1 on the smallest mesh
CAPACITIES = (16, 80)  # GiB per device
BREAKDOWN_RUNS = 6
PRODUCT_RUNS = 10  # timed calls per bare matrix product (`product_seconds`)
# step variants of the memory section, remat policy / compute dtype (`StepConfig.remat`, `.compute_dtype`)
MEMORY_VARIANTS = ("none/float32", "full/float32", "full/bfloat16", "dots/bfloat16")


# --- training step: JAX against PyTorch -----------------------------------------------------------


def hf_config(layers: int):
    """musicgen-small's architecture with `layers` decoder layers and no decoder dropout."""
    from transformers import MusicgenConfig, MusicgenDecoderConfig

    from benchmarks.codec import hf_config as codec_hf_config
    from benchmarks.text import hf_config as text_hf_config

    decoder = MusicgenDecoderConfig(
        vocab_size=2048,
        hidden_size=1024,
        num_attention_heads=16,
        num_hidden_layers=layers,
        ffn_dim=4096,
        num_codebooks=4,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    return MusicgenConfig(text_encoder=text_hf_config(), audio_encoder=codec_hf_config(), decoder=decoder)


def make_batch(tokenizer, batch: int, frames: int, text_tokens: int, seed: int = 0) -> dict:
    """`batch` prompts (cycled from `benchmarks.text.PROMPTS`) padded to `text_tokens`, random codes."""
    from benchmarks.text import PROMPTS

    prompts = (PROMPTS * -(-batch // len(PROMPTS)))[:batch]
    ids, text_mask = tokenizer(prompts, length=text_tokens, truncate=True)
    codes = np.random.default_rng(seed).integers(0, 2048, (batch, 4, frames)).astype(np.int32)
    return {
        "codes": codes,
        "mask": np.ones(codes.shape, bool),
        "text_ids": ids.astype(np.int32),
        "text_mask": text_mask.astype(np.int32),
        "prompt_tokens": int(text_mask.sum(1).max()),
    }


def _median_seconds(fn, runs: int) -> float:
    """Median wall time of `runs` consecutive calls of `fn` after one untimed call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median_min(times)[0]


class TorchTrainer:
    """transformers' MusicGen forward with labels, backward, clipping and AdamW on one fixed batch."""

    def __init__(self, model, batch: dict, delays, card: int):
        import torch

        from musicgen_jax.train.loss import training_sequences

        self.model = model
        model.train()
        for frozen in (model.text_encoder, model.audio_encoder):
            frozen.requires_grad_(False)
            frozen.eval()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
        _, targets, valid = (np.asarray(a) for a in training_sequences(batch["codes"], batch["mask"], delays, card))
        labels = torch.from_numpy(np.where(valid, targets, -100).transpose(0, 2, 1)).long()  # [B, S - 1, K]
        # transformers 5's MusicgenForConditionalGeneration reads a decoder_start_token_id its decoder config
        # lacks; its own shift (start = bos = pad = card) gives the pattern's inputs (tests/train/test_loss.py)
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels).reshape(-1, labels.shape[1])
        self.inputs = {
            "input_ids": torch.from_numpy(batch["text_ids"]).long(),
            "attention_mask": torch.from_numpy(batch["text_mask"]).long(),
            "decoder_input_ids": decoder_ids,
            "labels": labels,
        }

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.trainable)

    def step(self, exact_norm: bool = False) -> dict:
        """One training step; `exact_norm`: also the gradients' global norm accumulated in float64 (the
        parity check; `clip_grad_norm_` accumulates in float32, which loses ~1e-4 on CPU at this size)."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(**self.inputs).loss
        loss.backward()
        exact = (
            math.sqrt(sum(float(p.grad.double().square().sum()) for p in self.trainable if p.grad is not None))
            if exact_norm
            else None
        )
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "grad_norm": float(norm), "exact_norm": exact}

    def parts(self) -> dict:
        """The step's parts as callables: T5 forward; LM forward + backward from the T5 states;
        clipping + AdamW."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        inputs = self.inputs

        def encode():
            with torch.no_grad():
                return self.model.text_encoder(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                ).last_hidden_state

        states = encode()

        def lm():
            self.optimizer.zero_grad(set_to_none=True)
            self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=inputs["attention_mask"],
                decoder_input_ids=inputs["decoder_input_ids"],
                labels=inputs["labels"],
            ).loss.backward()

        def update():
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.optimizer.step()

        return {"text": encode, "lm": lm, "update": update}


class JaxTrainer:
    """A compiled musicgen_jax train step on a 1-device mesh, its state kept between calls."""

    def __init__(self, config, params, t5_params, batch: dict, mesh):
        from musicgen_jax.train.trainer import compile_step, global_batch, init_state

        self.state = init_state(config, 0, mesh, params=params)
        self.batch = global_batch({k: batch[k] for k in ("codes", "mask", "text_ids", "text_mask")}, mesh)
        self.t5 = jax.device_put(t5_params)
        start = time.perf_counter()
        self.compiled = compile_step(config, mesh).lower(self.state, self.batch, self.t5).compile()
        self.compile_seconds = time.perf_counter() - start
        self.null_text = []

    def flops(self) -> float | None:
        try:
            cost = self.compiled.cost_analysis()
        except Exception:  # noqa: BLE001 - optional diagnostics
            return None
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None

    def parts(self, config) -> dict:
        """The step's parts as callables, each jitted on its own: T5 forward; loss + gradients of the LM
        from the T5 states; clipping + AdamW update (no EMA)."""
        import optax

        from musicgen_jax.train.trainer import loss_fn, text_states

        batch, state = self.batch, self.state
        encode = jax.jit(lambda t5, b: text_states(config, t5, b))
        text = encode(self.t5, batch)
        grad = jax.jit(lambda p, b, t: jax.value_and_grad(loss_fn, has_aux=True)(p, config, b, t, b.text_mask))
        grads = grad(state.params, batch, text)[1]
        optimizer = config.optim.optimizer()
        update = jax.jit(lambda g, o, p: optax.apply_updates(p, optimizer.update(g, o, p)[0]))
        return {
            "text": lambda: jax.block_until_ready(encode(self.t5, batch)),
            "lm": lambda: jax.block_until_ready(grad(state.params, batch, text)),
            "update": lambda: jax.block_until_ready(update(grads, state.opt_state, state.params)),
        }

    def step(self) -> dict:
        self.state, metrics = self.compiled(self.state, self.batch, self.t5)
        metrics = jax.device_get(metrics)
        self.null_text.append(bool(metrics["null_text"]))
        return {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])}


def layer_products(dim: int, ffn: int, rows: int, text_rows: int, stacked: bool) -> list[tuple[int, int, int, int]]:
    """(rows, in, out, count) of one decoder layer's projections on `rows` audio and `text_rows` text
    positions: self-attention q / k / v, self-attention out and cross-attention q / out, cross-attention
    k / v, fc1, fc2. `stacked`: q / k / v and cross-attention k / v each as one product of the stacked
    kernels (`lm.transformer.products`, as the JAX LM computes them), else one product per kernel."""
    fused = (
        [(rows, dim, 3 * dim, 1), (text_rows, dim, 2 * dim, 1)]
        if stacked
        else [(rows, dim, dim, 3), (text_rows, dim, dim, 2)]
    )
    return [fused[0], (rows, dim, dim, 3), fused[1], (rows, dim, ffn, 1), (rows, ffn, dim, 1)]


def product_seconds(shapes: dict[str, list[tuple[int, int, int, int]]], runs: int) -> dict:
    """Seconds of the bare matrix products of `shapes["jax"]` and `shapes["torch"]` ((rows, in, out, count),
    float32), each as the forward `x W^T` and its two gradient products `g W` and `g^T x`, summed with the
    counts: XLA's (one jitted `dot_general` each) and PyTorch's (`F.linear`, `g @ W`, `g.t() @ x`)."""
    import torch
    from jax import lax

    def dot(a, b, contract_a, contract_b):
        return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())))

    forms = {
        "jax": [
            jax.jit(lambda x, w, g: dot(x, w, 1, 1)),
            jax.jit(lambda x, w, g: dot(g, w, 1, 0)),
            jax.jit(lambda x, w, g: dot(g, x, 0, 0)),
        ],
        "torch": [lambda x, w, g: torch.nn.functional.linear(x, w), lambda x, w, g: g @ w, lambda x, w, g: g.t() @ x],
    }
    convert = {"jax": jax.device_put, "torch": torch.from_numpy}
    ready = {"jax": jax.block_until_ready, "torch": lambda y: y}
    total = {"jax": 0.0, "torch": 0.0}
    rng = np.random.default_rng(0)
    for side, side_shapes in shapes.items():
        for rows, fan_in, fan_out, count in side_shapes:
            arrays = [
                convert[side](rng.standard_normal(shape, dtype=np.float32))
                for shape in ((rows, fan_in), (fan_out, fan_in), (rows, fan_out))
            ]
            for fn in forms[side]:

                def call(fn=fn, side=side, arrays=arrays):
                    return ready[side](fn(*arrays))

                total[side] += count * _median_seconds(call, runs)
    return total


def run_step(
    batch_size: int, frames: int, steps: int, layers: int, text_tokens: int, scan: bool, parts: bool = True
) -> dict:
    import torch
    import transformers
    from transformers import MusicgenForConditionalGeneration

    from benchmarks.text import write_spiece
    from musicgen_jax.convert.pretrained import convert
    from musicgen_jax.lm.model import stack_layers
    from musicgen_jax.sharding import make_mesh
    from musicgen_jax.train.trainer import OptimConfig, StepConfig

    threads = usable_cores()
    torch.set_num_threads(threads)
    load_before = load_average()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print(f"building the model ({layers} decoder layers, torch.manual_seed(0)) and loading it into JAX ...", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_spiece(Path(tmp))
        torch.manual_seed(0)
        model = MusicgenForConditionalGeneration(hf_config(layers))
        model.save_pretrained(tmp)
        components = convert(tmp)
    load_seconds = time.perf_counter() - start
    lm_config, text = components.lm_config, components.text_encoder
    params = stack_layers(components.lm_params) if scan else components.lm_params
    batch = make_batch(text.tokenizer, batch_size, frames, text_tokens)
    mesh = make_mesh(devices=jax.devices()[:1])
    torch_trainer = TorchTrainer(model, batch, lm_config.delays, lm_config.card)
    jax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    if jax_count != torch_trainer.parameter_count():
        raise RuntimeError(
            f"trainable parameters differ: JAX {jax_count:,}, PyTorch {torch_trainer.parameter_count():,}"
        )
    print(
        f"loaded in {load_seconds:.0f} s; {jax_count:,} trainable parameters; batch {batch_size} x {frames} frames, "
        f"{text_tokens} text tokens; jax {jax.__version__} on {jax.devices()[0].platform}, torch "
        f"{torch.__version__} with {threads} threads",
        flush=True,
    )

    print("parity: 2 steps each, cfg_dropout 0, lr 1e-4 from step 0 ...", flush=True)
    parity_config = StepConfig(lm_config, text.config, OptimConfig(warmup_steps=0), cfg_dropout=0.0, scan_layers=scan)
    start = time.perf_counter()
    torch_parity = [torch_trainer.step(exact_norm=True) for _ in range(2)]
    torch_parity_seconds = time.perf_counter() - start
    parity_trainer = JaxTrainer(parity_config, params, text.params, batch, mesh)
    jax_parity = [parity_trainer.step() for _ in range(2)]
    parity_compile = parity_trainer.compile_seconds
    del parity_trainer
    for s, (j, t) in enumerate(zip(jax_parity, torch_parity, strict=True)):
        print(
            f"step {s + 1}: loss JAX {j['loss']:.7f} PyTorch {t['loss']:.7f}; grad norm JAX {j['grad_norm']:.7f} "
            f"PyTorch {t['exact_norm']:.7f} (float64; clip_grad_norm_ {t['grad_norm']:.7f})",
            flush=True,
        )

    print("compiling the timed JAX step (recipe: cfg_dropout 0.3, warm-up) ...", flush=True)
    timed_config = StepConfig(lm_config, text.config, OptimConfig(), cfg_dropout=0.3, scan_layers=scan)
    jax_trainer = JaxTrainer(timed_config, params, text.params, batch, mesh)
    print(f"compiled in {jax_trainer.compile_seconds:.1f} s; timing {steps} steps each ...", flush=True)
    counters = cpu_counters()
    timed = time_pair(jax_trainer.step, torch_trainer.step, steps)
    others = other_load(counters)
    for name in ("jax", "torch"):
        print(
            f"{name}: first {timed[name][0]:.2f} s, steps {', '.join(f'{t:.2f}' for t in timed[name][1])} s", flush=True
        )
    if parts:
        print("parts of the step ...", flush=True)
        sides = (("jax", jax_trainer.parts(timed_config)), ("torch", torch_trainer.parts()))
        parts = {
            side: {part: _median_seconds(fn, BREAKDOWN_RUNS) for part, fn in trainer_parts.items()}
            for side, trainer_parts in sides
        }
        rows = batch_size * (frames + max(lm_config.delays))
        shapes = {
            side: layer_products(
                lm_config.dim, lm_config.ffn_dim, rows, batch_size * text_tokens, stacked=side == "jax"
            )
            for side in parts
        }
        products = product_seconds(shapes, PRODUCT_RUNS)
        for name in parts:
            parts[name]["products"] = layers * products[name]
        parts["product_count"] = {side: layers * 3 * sum(count for *_, count in shapes[side]) for side in shapes}
        print(parts, flush=True)
    return {
        "batch": batch_size,
        "frames": frames,
        "steps": steps,
        "layers": layers,
        "text_tokens": text_tokens,
        "prompt_tokens": batch["prompt_tokens"],
        "scan": scan,
        "threads": threads,
        "load": (load_before, load_average()),
        "others": others,
        "load_seconds": load_seconds,
        "params": jax_count,
        "jax_parity": jax_parity,
        "torch_parity": torch_parity,
        "torch_parity_seconds": torch_parity_seconds,
        "parity_compile": parity_compile,
        "parts": parts,
        "compile": jax_trainer.compile_seconds,
        "flops": jax_trainer.flops(),
        "timed": timed,
        "null_text": sum(jax_trainer.null_text),
        "calls": len(jax_trainer.null_text),
        "attn": getattr(model.config.decoder, "_attn_implementation", None) or "default",
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def report_step(res: dict, command: str) -> str:
    b, f, k = res["batch"], res["frames"], 4
    rows, med = [], {}
    for name, label in (("jax", "musicgen_jax `compile_step`"), ("torch", "PyTorch (transformers + AdamW)")):
        first, times = res["timed"][name]
        m, lo = median_min(times)
        med[name] = m
        rows.append(
            f"| {label} | {m:.2f} (min {lo:.2f}) | {first:.2f} | {b * f / m:.1f} | {b * f * k / m:.1f} "
            f"| {b * f / FRAME_RATE / m:.3f} |"
        )
    ratio = med["torch"] / med["jax"]
    jp, tp = res["jax_parity"], res["torch_parity"]
    parity = "; ".join(
        f"step {s + 1}: loss {j['loss']:.7f} (JAX) / {t['loss']:.7f} (PyTorch), relative difference "
        f"{_rel(j['loss'], t['loss']):.1e}; gradient norm before clipping {j['grad_norm']:.7f} / {t['exact_norm']:.7f} "
        f"(PyTorch's gradients summed in float64), relative difference {_rel(j['grad_norm'], t['exact_norm']):.1e}"
        for s, (j, t) in enumerate(zip(jp, tp, strict=True))
    )
    clip_note = (
        f"PyTorch's own `clip_grad_norm_` returns {tp[0]['grad_norm']:.7f} at step 1 "
        f"({_rel(tp[0]['grad_norm'], tp[0]['exact_norm']):.1e} below the float64 norm: its float32 "
        "accumulation over the 2M-element embedding and head matrices on CPU), so its clipping scale "
        "differs from JAX's by that much"
    )
    part_lines = []
    if res["parts"]:
        pj, pt, count = res["parts"]["jax"], res["parts"]["torch"], res["parts"]["product_count"]
        part_lines = [
            f"Parts of the step, each timed on its own after the steps (median of {BREAKDOWN_RUNS} consecutive calls "
            "after one "
            "untimed; JAX: each part jitted separately, the update without the EMA; PyTorch: T5 under `no_grad`, the "
            "LM forward with labels from the T5 states (`encoder_outputs`) + backward, then `clip_grad_norm_` + "
            "AdamW `step`):",
            "",
            "| part | JAX s | PyTorch s | ratio PyTorch/JAX |",
            "|---|---|---|---|",
            *[
                f"| {label} | {pj[key]:.3f} | {pt[key]:.3f} | {pt[key] / pj[key]:.2f} |"
                for key, label in (
                    ("text", "T5 encoder forward (frozen)"),
                    ("lm", "LM loss + gradients (from the T5 states)"),
                    ("update", "clipping + AdamW update"),
                )
            ],
            f"| of the LM: the decoder layers' matrix products alone ({count['torch']} in PyTorch, {count['jax']} in "
            "JAX, whose q / k / v and cross-attention k / v are one product each of the stacked kernels; each "
            "projection's forward `x W^T` and its gradient products `g W`, `g^T x`; XLA `dot_general` / PyTorch "
            f"`F.linear`, `@`; median of {PRODUCT_RUNS} consecutive calls each, summed) | {pj['products']:.3f} | "
            f"{pt['products']:.3f} | {pt['products'] / pj['products']:.2f} |",
            "",
            f"Of the LM's {pj['lm'] - pt['lm']:+.3f} s (JAX minus PyTorch), {pj['products'] - pt['products']:+.3f} s "
            "is the decoder layers' matrix products: the same float32 work in XLA:CPU's GEMM (YNNPACK here; its "
            "oneDNN and Eigen paths, tried with `XLA_FLAGS` on an Intel Xeon, were no faster) at the ratio above "
            "against PyTorch's MKL; the rest "
            f"({pj['lm'] - pj['products']:.3f} s against {pt['lm'] - pt['products']:.3f} s) is attention (PyTorch: "
            "one fused `scaled_dot_product_attention` kernel per call and its backward), norms, GELU, embeddings, "
            "heads and loss, with XLA running independent products concurrently on the two cores.",
            "",
        ]
    flops = res["flops"]
    flops_text = (
        f" XLA's cost analysis counts {flops / 1e9:.0f} GFLOP per JAX step: {flops / 1e9 / med['jax']:.1f} "
        f"GFLOP/s achieved (PyTorch, same work: {flops / 1e9 / med['torch']:.1f})."
        if flops
        else ""
    )
    layout = "scanned (`scan_layers=True`)" if res["scan"] else "unrolled (`scan_layers=False`, the small recipe's)"
    lines = [
        STEP_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(res["threads"], res["load"], torch_mode="autograd on: training"),
        f"- During the run: other processes used {res['others']} of the machine's CPU time during the timed steps "
        "(from /proc/stat; near 0% means undisturbed timings).",
        f"- Model: transformers `MusicgenForConditionalGeneration`, musicgen-small architecture with "
        f"**{res['layers']} decoder layers** (of the real 24; width 1024, 16 heads, ffn 4096, 4 codebooks x 2048, "
        f"decoder dropout 0; T5 encoder t5-base size, frozen; EnCodec real size, unused), `torch.manual_seed(0)` init, "
        "`save_pretrained` + `musicgen_jax.convert.pretrained.convert` (build, save, load: "
        f"{res['load_seconds']:.0f} s): "
        f"{res['params']:,} trainable parameters on both sides (LM + text projection). The layers' cost grows "
        "with their number (`--layers 24` for the full depth), the frozen T5 forward, the embeddings and the 4 "
        "codebook heads are a fixed part that weighs more at 4 layers than at 24: the ratio is the figure to read, "
        "and the parts table below says where the time goes. JAX layers "
        f"{layout}; PyTorch attention `{res['attn']}`.",
        f"- Batch: {b} prompts of `benchmarks.text.PROMPTS` (up to {res['prompt_tokens']} tokens) padded to "
        f"{res['text_tokens']} T5 tokens (the recipe's `text_length`), random codes [{b}, 4, {f}] = "
        f"{f / FRAME_RATE:g} s "
        f"crops, all frames counted; the delay pattern makes {f + 3} positions per row.",
        "- musicgen_jax step: `compile_step` on a 1-device mesh, float32, T5 inside the step (`stop_gradient`), "
        "classifier-free guidance dropout 0.3 (whole batch nulled in "
        f"{res['null_text']} of its {res['calls']} calls here; the work is the same), loss, gradients, "
        "`clip_by_global_norm(1.0)`, AdamW (betas 0.9 / 0.95, weight decay 0.1, eps 1e-8; the recipe's warm-up "
        "schedule, which changes the values, not the work), EMA (decay 0.99 every 10 steps, a `where` every step), "
        f"state donated. Compile (`lower(...).compile()`): **{res['compile']:.1f} s**.",
        "- PyTorch step: `zero_grad`, forward with labels (T5 run inside, frozen: `requires_grad_(False)`, eval "
        "mode), `loss.backward()`, `clip_grad_norm_(trainable, 1.0)`, `torch.optim.AdamW(lr=1e-4, betas=(0.9, "
        "0.95), weight_decay=0.1, eps=1e-8)` (default implementation) `.step()`; no CFG dropout and no EMA (audiocraft "
        "updates its EMA outside the step).",
        f"- Same computation (same weights and batch, JAX compiled with `cfg_dropout=0` and no warm-up so that lr "
        f"is 1e-4 at step 0 as in PyTorch; compile {res['parity_compile']:.1f} s; the first PyTorch steps, "
        f"{res['torch_parity_seconds']:.1f} s for both, are its warm-up): {parity}. {clip_note}.",
        f"- Timing: median (min) of {res['steps']} timed steps each, JAX and PyTorch alternating, after one untimed "
        "first call of each (`benchmarks.common.time_pair`; JAX's after its compile). Throughput = batch x frames "
        "/ step time (audio frames, i.e. 20 ms of audio each, per second of wall time); x 4 codebooks for codebook "
        f"tokens; audio seconds = frames / 50.{flops_text} Process max RSS (both models and states): "
        f"{res['ru_maxrss']:.2f} GiB.",
        "",
        "| step | median s | first call s | audio frames/s | codebook tokens/s | audio s per s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Speed ratio PyTorch / JAX (median step times): **{ratio:.2f}** (above 1: JAX faster). Target stated in "
        "the training issue: JAX at least as fast as PyTorch (documented, not asserted).",
        "",
        *part_lines,
    ]
    return "\n".join(lines)


# --- training memory: musicgen-large under FSDP, simulated devices ------------------------------------


def _memory_worker(
    out_path: str, devices: list[int], frames: int, text: int, sweep: list[int], variants: list[str]
) -> None:
    """In a process started with 256 host devices: compile the large step of each variant ("remat/dtype")
    for each mesh, write JSON."""
    import dataclasses

    import jax.numpy as jnp

    from musicgen_jax.config import LMConfig
    from musicgen_jax.sharding import make_mesh, shardings
    from musicgen_jax.train.trainer import (
        Batch,
        OptimConfig,
        StepConfig,
        batch_sharding,
        compile_step,
        state_shapes,
        state_specs,
    )

    lm = LMConfig(**LARGE)
    base = StepConfig(lm, None, OptimConfig(max_norm=3.0), cfg_dropout=0.2, scan_layers=True)
    shapes, specs = state_shapes(base), state_specs(base)  # the state does not depend on remat or compute dtype
    meshes = {n: make_mesh(data=1, fsdp=n, devices=jax.devices()[:n]) for n in devices}
    state_shardings = {n: shardings(specs, mesh) for n, mesh in meshes.items()}
    out = {
        "device_count": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "param_count": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params)),
        "global_state": {
            part: sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(getattr(shapes, part)))
            for part in ("params", "opt_state", "ema")
        },
        "state": {
            n: {
                part: sum(
                    int(np.prod(h.shard_shape(x.shape))) * x.dtype.itemsize
                    for x, h in zip(
                        jax.tree.leaves(getattr(shapes, part)), jax.tree.leaves(getattr(sharding, part)), strict=True
                    )
                )
                for part in ("params", "opt_state", "ema")
            }
            for n, sharding in state_shardings.items()
        },
        "variants": {},
    }

    def compile_at(config, variant: str, n: int, per_device: int, length: int) -> dict:
        mesh = meshes[n]
        state = jax.tree.map(
            lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), shapes, state_shardings[n]
        )
        bs, rows = batch_sharding(mesh), per_device * n
        batch = {
            "codes": jax.ShapeDtypeStruct((rows, lm.num_codebooks, length), jnp.int32, sharding=bs),
            "mask": jax.ShapeDtypeStruct((rows, lm.num_codebooks, length), jnp.bool_, sharding=bs),
            "text_embeddings": jax.ShapeDtypeStruct((rows, text, lm.text_dim), jnp.float32, sharding=bs),
            "text_mask": jax.ShapeDtypeStruct((rows, text), jnp.int32, sharding=bs),
        }
        start = time.perf_counter()
        compiled = compile_step(config, mesh).lower(state, Batch(**batch), {}).compile()
        seconds = time.perf_counter() - start
        m = compiled.memory_analysis()
        fields = (
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "temp_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        res = {"compile": seconds, "available": m is not None}
        if m is not None:
            res.update({f.replace("_size_in_bytes", ""): int(getattr(m, f, -1)) for f in fields})
        print(
            f"{variant}, {n} devices, per-device batch {per_device}, {length} frames: compiled in {seconds:.1f} s, "
            f"{ {k: round(v / GIB, 2) for k, v in res.items() if k not in ('compile', 'available')} } GiB",
            file=sys.stderr,
            flush=True,
        )
        return res

    for variant in variants:
        remat, dtype = variant.split("/")
        config = dataclasses.replace(base, remat=remat, compute_dtype=dtype)
        out["variants"][variant] = {
            "compiles": {n: {b: compile_at(config, variant, n, b, frames) for b in (1, 2)} for n in devices},
            "sweep": {
                length: compile_at(config, variant, devices[0], 1, length)  # the first variant's only
                for length in (sweep if variant == variants[0] else [])
            },
        }
    Path(out_path).write_text(json.dumps(out))


def _peak(c: dict) -> int:
    """Per-device bytes live during the step: arguments + temporaries + outputs not aliased to arguments."""
    return c["argument"] + c["temp"] + c["output"] - c["alias"]


def _in_subprocess(worker: str, args: tuple, env: dict) -> tuple[dict, float]:
    """(the JSON result, wall seconds) of `benchmarks.train.<worker>(out_path, *args)` run in a fresh Python
    process with `env` added to the environment (device flags must be set before jax starts)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        code = f"from benchmarks.train import {worker}; {worker}({str(out)!r}, *{args!r})"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, **env}, check=True)
        return json.loads(out.read_text()), time.perf_counter() - start


def run_memory(frames: int, text: int, variants: list[str]) -> dict:
    load_before = load_average()
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(MEMORY_DEVICES)}"
    res, wall = _in_subprocess(
        "_memory_worker",
        (list(MEMORY_DEVICES), frames, text, list(SWEEP_FRAMES), variants),
        {"XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"},
    )
    res["state"] = {int(n): s for n, s in res["state"].items()}
    res["variants"] = {
        v: {
            "compiles": {int(n): {int(b): c for b, c in m.items()} for n, m in r["compiles"].items()},
            "sweep": {int(k): c for k, c in r["sweep"].items()},
        }
        for v, r in res["variants"].items()
    }
    return {**res, "wall": wall, "frames": frames, "text": text, "load": (load_before, load_average())}


def max_batch(c1: dict, c2: dict, capacity: int) -> tuple[int, float]:
    """(largest per-device batch whose extrapolated peak fits `capacity` bytes, bytes per extra example)."""
    slope = _peak(c2) - _peak(c1)
    fixed = _peak(c1) - slope
    return (max(0, math.floor((capacity - fixed) / slope)) if slope > 0 else -1), slope


def _fit_line(sweep: dict, lm: dict) -> list[str]:
    """A least-squares fit of the temporaries over the crop lengths: temp = a + b S + c S^2."""
    points = [(length + len(lm["delays"]) - 1, c["temp"]) for length, c in sorted(sweep.items()) if c["available"]]
    if len(points) < 4:
        return []
    c2, c1, c0 = np.polyfit(*zip(*points), 2)
    return [
        f"A least-squares fit over these lengths, temp = a + b S + c S^2: a = {c0 / GIB:.2f} GiB, b = "
        f"{c1 / (lm['dim'] * lm['num_layers'] * 4):.1f} x (width x layers x 4 bytes) per position, c = "
        f"{c2 / (lm['num_heads'] * lm['num_layers'] * 4):.2f} x (heads x layers x 4 bytes), i.e. the bytes of "
        f"about {c2 / (lm['num_heads'] * lm['num_layers'] * 4):.0f} float32 [heads, S, S] arrays per layer and "
        f"{c1 / (lm['dim'] * lm['num_layers'] * 4):.0f} float32 vectors of the width per position and layer.",
        "",
    ]


# what each step variant changes against another, for the closing paragraph: (from, to, the change)
MEMORY_COMPARISONS = (
    (
        "none/float32",
        "full/float32",
        'Rematerializing every layer (`remat="full"`: the backward pass keeps only '
        "the layer inputs and recomputes each layer's forward, about a third more FLOPs per step)",
    ),
    (
        "full/float32",
        "full/bfloat16",
        'bfloat16 compute on top (`compute_dtype="bfloat16"`: the kept layer '
        "inputs in half precision; master weights, gradients, softmax and logits stay float32)",
    ),
    (
        "full/bfloat16",
        "dots/bfloat16",
        'Keeping the projections\' outputs instead (`remat="dots"`: only attention and the elementwise ops recomputed)',
    ),
)


def _memory_summary(res: dict, fits: dict) -> str:
    """The closing paragraph, from `fits[variant][n]` = (bytes per example, [largest batch per capacity])."""
    frames, lm = res["frames"], LARGE
    n, n0 = max(res["state"]), min(res["state"])
    positions = frames + len(lm["delays"]) - 1
    attn = lm["num_heads"] * positions**2 * 4 * lm["num_layers"]
    per_example = {v: f[n][0] for v, f in fits.items() if n in f}
    text = [
        f"Per example at {frames} frames ({frames / FRAME_RATE:g} s) on {n} devices: "
        + ", ".join(f"{v} {b / GIB:.2f} GiB" for v, b in per_example.items())
        + "."
    ]
    if "none/float32" in per_example:
        text.append(
            f"Without rematerialization every layer's activations are kept for the backward pass, "
            f"{attn / GIB:.1f} GiB of attention matrices alone ({lm['num_heads']} x {positions}^2 float32 x "
            f"{lm['num_layers']} layers), growing quadratically with the crop."
        )
    for a, b, change in MEMORY_COMPARISONS:
        if a in per_example and b in per_example:
            ratio = per_example[a] / per_example[b]
            text.append(
                f"{change} takes it from {per_example[a] / GIB:.2f} to {per_example[b] / GIB:.2f} GiB ("
                + (f"{ratio:.1f}x less)." if ratio >= 1 else f"{1 / ratio:.1f}x more).")
            )
    complete = [v for v, f in fits.items() if n in f and n0 in f]
    if complete:
        best = max(complete, key=lambda v: fits[v][n][1])
        (b16, b80), (b16_0, b80_0) = fits[best][n][1], fits[best][n0][1]
        text.append(
            f"Recommended where memory sets the batch: {best}, which fits the most examples, a per-device "
            f"batch of up to {b16} on 16 GiB and {b80} on 80 GiB devices at {n} devices ({b16_0} / {b80_0} "
            f"at {n0}, where the state takes {sum(res['state'][n0].values()) / GIB:.2f} GiB per device)."
        )
    text.append("The state shrinks as 1/N under FSDP; the activations do not.")
    return " ".join(text)


def report_memory(res: dict, command: str) -> str:
    import flax

    frames, text = res["frames"], res["text"]
    lm = LARGE
    positions = frames + len(lm["delays"]) - 1
    g = res["global_state"]
    rows, fits = [], {}
    for variant, r in res["variants"].items():
        for n, c in r["compiles"].items():
            c1, c2 = c[1], c[2]
            if not (c1["available"] and c2["available"]):
                rows.append(f"| {variant} | {n} | memory analysis unavailable | | | | | | | |")
                continue
            cells = [max_batch(c1, c2, cap * GIB) for cap in CAPACITIES]
            fits.setdefault(variant, {})[n] = (cells[0][1], [b for b, _ in cells])
            rows.append(
                f"| {variant} | {n} | {c1['argument'] / GIB:.2f} | {c1['temp'] / GIB:.2f} | {c2['temp'] / GIB:.2f} "
                f"| {_peak(c1) / GIB:.2f} | {cells[0][1] / GIB:.2f} | {cells[0][0]} | {cells[1][0]} "
                f"| {c1['compile']:.0f} / {c2['compile']:.0f} |"
            )
    first = next(iter(res["variants"]))
    n0 = min(res["state"])
    sweep = {**res["variants"][first]["sweep"], frames: res["variants"][first]["compiles"][n0][1]}
    sweep_rows = []
    for length in sorted(sweep):
        c = sweep[length]
        if c["available"]:
            p = length + len(lm["delays"]) - 1
            sweep_rows.append(
                f"| {length} ({length / FRAME_RATE:g} s) | {c['temp'] / GIB:.2f} | {_peak(c) / GIB:.2f} "
                f"| {lm['num_heads'] * p**2 * 4 * lm['num_layers'] / GIB:.2f} |"
            )
    state = ", ".join(
        f"{n} devices {sum(s.values()) / GIB:.2f} ({s['params'] / GIB:.2f} / {s['opt_state'] / GIB:.2f} "
        f"/ {s['ema'] / GIB:.2f})"
        for n, s in res["state"].items()
    )
    lines = [
        MEMORY_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(None, res["load"], f", flax {flax.__version__}"),
        f"- Model: musicgen-large's LM (width {lm['dim']}, {lm['num_heads']} heads, {lm['num_layers']} layers, ffn "
        f"{lm['ffn_dim']}, {len(lm['delays'])} codebooks x {lm['card']}, text width {lm['text_dim']}): "
        f"{res['param_count']:,} parameters; state (float32 params, AdamW moments, EMA): "
        f"{g['params'] / GIB:.2f} + {g['opt_state'] / GIB:.2f} + {g['ema'] / GIB:.2f} GiB in all; per device "
        f"(sum over the state's arrays of their shard's bytes, GiB, params / AdamW moments / EMA): {state}.",
        f"- Step: `compile_step(StepConfig(lm, t5=None, scan_layers=True, remat=R, compute_dtype=D, ...))` (the "
        f"{lm['num_layers']} layers one `lax.scan`) for each variant R/D of the table: remat `none` (every "
        "intermediate kept for the backward pass), `full` (`nothing_saveable` per layer: only the layer inputs kept, "
        "the rest recomputed) or `dots` (`dots_with_no_batch_dims_saveable`: the projections' outputs kept too); "
        "compute `float32`, or `bfloat16` over the float32 master weights (logits, loss and attention softmax "
        f"float32). Batches of precomputed text states [B, {text}, {lm['text_dim']}] float32 + text_mask (no T5), "
        f"codes / mask [B, 4, {frames}] ({frames / FRAME_RATE:g} s crops, {positions} pattern positions), meshes "
        f"`make_mesh(data=1, fsdp=N, devices=jax.devices()[:N])`, lowered from `jax.ShapeDtypeStruct`s with the "
        "state's shardings (`state_shapes` + `shardings(state_specs(...))`) and `batch_sharding(mesh)`: nothing "
        f"allocated. Simulated devices: {res['device_count']} host CPU devices "
        "(`XLA_FLAGS=--xla_force_host_platform_device_count=256`, in a subprocess); "
        f"all compiles took {res['wall']:.0f} s in all.",
        "- Columns, per device: argument, temp = `compiled.memory_analysis()` argument and temporary sizes (the "
        "state is donated: outputs alias it); peak = argument + temp + the outputs not aliased to arguments; per "
        "example = peak(batch 2) - peak(batch 1); the largest per-device batch that fits 16 / 80 GiB is "
        "extrapolated linearly from the compiles at per-device batch 1 and 2 (0: not even one example fits).",
        "- Caveat: these are XLA:CPU's buffer assignments for the scanned layout (`scan_layers=True`; with unrolled "
        "layers XLA:CPU drops the rematerialization's optimization barriers, so its compiles show no saving there); "
        "the GPU and TPU compilers fuse and schedule differently (the residuals autodiff keeps for the backward "
        "pass are the same), so read them as estimates.",
        "",
        "| step (remat / compute) | devices (FSDP) | argument GiB | temp GiB, batch 1 | temp GiB, batch 2 "
        "| peak GiB, batch 1 | GiB per example | max batch, 16 GiB | max batch, 80 GiB | compile s (b1 / b2) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Crop length, step {first}, at per-device batch 1 on {n0} devices (temporaries against the bytes of one "
        f"float32 attention matrix [heads, S, S] per layer, S = frames + 3, x {lm['num_layers']} layers):",
        "",
        "| frames | temp GiB | peak GiB | attention matrices x layers GiB |",
        "|---|---|---|---|",
        *sweep_rows,
        "",
        *_fit_line(sweep, lm),
        _memory_summary(res, fits),
        "",
    ]
    return "\n".join(lines)


# --- fine-tuning memory: musicgen-medium and -large on one device, full and with adapters ----------


def _nbytes(tree) -> int:
    """Bytes of the arrays (or `jax.ShapeDtypeStruct`s) of `tree`: the sum of prod(shape) x itemsize."""
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _finetune_worker(out_path: str, frames: int, text: int, rank: int) -> None:
    """In a subprocess: compile the fine-tuning step of each of `FINETUNE_MODELS`, full (`lora_rank=0`) and
    with rank-`rank` adapters, one after the other, on a 1-device mesh from shapes only (the state's
    `state_shapes` with the shardings of `state_specs`; batch 1: codes / mask [1, K, frames], text_embeddings
    [1, text, text_dim] float32, text_mask [1, text]); write JSON {"models": {model: {"full" | "lora": ...}}}."""
    import jax.numpy as jnp

    from musicgen_jax.config import LMConfig
    from musicgen_jax.sharding import make_mesh, shardings
    from musicgen_jax.train.trainer import (
        Batch,
        OptimConfig,
        StepConfig,
        batch_sharding,
        compile_step,
        state_shapes,
        state_specs,
    )

    mesh = make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    bs = batch_sharding(mesh)
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "temp_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    models = {}
    for name, (model, max_norm, cfg_dropout) in FINETUNE_MODELS.items():
        lm = LMConfig(**model)
        batch = {
            "codes": jax.ShapeDtypeStruct((1, lm.num_codebooks, frames), jnp.int32, sharding=bs),
            "mask": jax.ShapeDtypeStruct((1, lm.num_codebooks, frames), jnp.bool_, sharding=bs),
            "text_embeddings": jax.ShapeDtypeStruct((1, text, lm.text_dim), jnp.float32, sharding=bs),
            "text_mask": jax.ShapeDtypeStruct((1, text), jnp.int32, sharding=bs),
        }
        for mode, lora_rank in (("full", 0), ("lora", rank)):
            config = StepConfig(
                lm,
                None,
                OptimConfig(max_norm=max_norm),
                cfg_dropout=cfg_dropout,
                scan_layers=True,
                remat="full",
                compute_dtype="bfloat16",
                lora_rank=lora_rank,
            )
            shapes = state_shapes(config)
            state = jax.tree.map(
                lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h),
                shapes,
                shardings(state_specs(config), mesh),
            )
            trainable = [x for path, x in jax.tree_util.tree_leaves_with_path(shapes.params) if config.trainable(path)]
            start = time.perf_counter()
            m = compile_step(config, mesh).lower(state, Batch(**batch), {}).compile().memory_analysis()
            res = {
                "compile": time.perf_counter() - start,
                "available": m is not None,
                "param_count": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params)),
                "trainable_count": sum(int(np.prod(x.shape)) for x in trainable),
                "state": {part: _nbytes(getattr(shapes, part)) for part in ("params", "opt_state", "ema")},
            }
            if m is not None:
                res.update({f.replace("_size_in_bytes", ""): int(getattr(m, f, -1)) for f in fields})
            print(
                f"{name}, {mode}: compiled in {res['compile']:.1f} s, "
                f"{ {k: round(v / GIB, 2) for k, v in res.items() if k in ('argument', 'temp', 'output', 'alias')} }"
                " GiB",
                file=sys.stderr,
                flush=True,
            )
            models.setdefault(name, {})[mode] = res
    Path(out_path).write_text(
        json.dumps(
            {
                "models": models,
                "platform": jax.devices()[0].platform,
                "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
        )
    )


def run_finetune(frames: int, text: int, rank: int) -> dict:
    """`_finetune_worker`'s results (in a subprocess, on the host CPU), with the wall time and the load."""
    load_before = load_average()
    res, wall = _in_subprocess("_finetune_worker", (frames, text, rank), {"JAX_PLATFORMS": "cpu"})
    return {**res, "wall": wall, "frames": frames, "text": text, "rank": rank, "load": (load_before, load_average())}


def _fit(peak: int, capacity: int) -> str:
    """A table cell: whether `peak` bytes fit `capacity` GiB, and by how much."""
    margin = (capacity * GIB - peak) / GIB
    return f"yes, {margin:.2f} GiB left" if margin >= 0 else f"no, {-margin:.2f} GiB over"


def _finetune_summary(res: dict) -> str:
    """The closing paragraphs: what each model's peaks are made of, and which runs fit which device."""
    text = []
    for name, modes in res["models"].items():
        full, lora = modes["full"], modes["lora"]
        if not (full["available"] and lora["available"]):
            continue
        fs, ls = full["state"], lora["state"]
        text.append(
            f"{name}, fully fine-tuned: the state alone is {sum(fs.values()) / GIB:.2f} GiB (float32 params + the "
            f"two AdamW moments + the EMA, 4 x the parameters' {fs['params'] / GIB:.2f} GiB); the temporaries add "
            f"{full['temp'] / GIB:.2f} GiB ({full['temp'] / fs['params']:.2f} x the parameters' bytes: their float32 "
            f"gradients and the update's intermediates; the LoRA step's temporaries, activations included, are "
            f"{lora['temp'] / GIB:.2f} GiB), a {_peak(full) / GIB:.2f} GiB peak. With rank-{res['rank']} adapters "
            f"({lora['trainable_count']:,} trainable parameters, {lora['trainable_count'] / lora['param_count']:.1%} "
            f"of {lora['param_count']:,}) the optimizer state falls from {fs['opt_state'] / GIB:.2f} to "
            f"{ls['opt_state'] / GIB:.2f} GiB, the EMA (of the adapters alone: a frozen weight's average is itself) "
            f"to {ls['ema'] / GIB:.2f} GiB, and no gradient of a frozen parameter is kept: the float32 parameters "
            f"({ls['params'] / GIB:.2f} GiB) are {ls['params'] / _peak(lora):.0%} of the "
            f"{_peak(lora) / GIB:.2f} GiB peak."
        )
    peaks = {
        (name, mode): _peak(c) for name, modes in res["models"].items() for mode, c in modes.items() if c["available"]
    }
    fits = []
    for cap in FINETUNE_CAPACITIES:
        fit = [
            f"{name} {'full' if mode == 'full' else 'LoRA'} ({(cap * GIB - p) / GIB:.2f} GiB left)"
            for (name, mode), p in peaks.items()
            if p <= cap * GIB
        ]
        fits.append(f"on a {cap} GiB device {', '.join(fit) or 'none'}")
    margins = [cap * GIB - p for cap in FINETUNE_CAPACITIES for p in peaks.values() if 0 <= cap * GIB - p < GIB]
    return "\n\n".join(
        [
            *text,
            f"What fits at batch 1 x {res['frames'] / FRAME_RATE:g} s (peak <= capacity): "
            + "; ".join(fits)
            + "."
            + (" Less than 1 GiB left is marginal on a real GPU (the caveat above)." if margins else ""),
        ]
    )


def report_finetune(res: dict, command: str) -> str:
    import flax

    frames, text, rank = res["frames"], res["text"], res["rank"]
    positions = frames + len(LARGE["delays"]) - 1
    caps = " | ".join(f"fits {cap} GiB" for cap in FINETUNE_CAPACITIES)
    rows = []
    for name, modes in res["models"].items():
        for mode, c in modes.items():
            label = "full" if mode == "full" else f"LoRA rank {rank}"
            s = c["state"]
            cells = (
                f"| {name} | {label} | {c['trainable_count']:,} of {c['param_count']:,} | {s['params'] / GIB:.2f} "
                f"| {s['opt_state'] / GIB:.2f} | {s['ema'] / GIB:.2f} "
            )
            if not c["available"]:
                rows.append(cells + "| memory analysis unavailable |" + " |" * (5 + len(FINETUNE_CAPACITIES)))
                continue
            peak = _peak(c)
            fits = " | ".join(_fit(peak, cap) for cap in FINETUNE_CAPACITIES)
            rows.append(
                cells + f"| {c['argument'] / GIB:.2f} | {c['temp'] / GIB:.2f} | {c['output'] / GIB:.2f} "
                f"| {c['alias'] / GIB:.2f} | **{peak / GIB:.2f}** | {fits} | {c['compile']:.0f} |"
            )
    models = "; ".join(
        f"{name} (width {m['dim']}, {m['num_heads']} heads, {m['num_layers']} layers, ffn "
        f"{m['ffn_dim']}; clipping {max_norm:g}, guidance dropout {cfg:g})"
        for name, (m, max_norm, cfg) in FINETUNE_MODELS.items()
    )
    lines = [
        FINETUNE_TITLE,
        "",
        f"Command: `{command}`",
        "",
        *machine_lines(None, res["load"], f", flax {flax.__version__}"),
        f"- Models: the LMs of {models}; both {len(LARGE['delays'])} codebooks x {LARGE['card']}, delays "
        f"{tuple(LARGE['delays'])}, text width {LARGE['text_dim']}.",
        '- Step: `compile_step(StepConfig(lm, t5=None, scan_layers=True, remat="full", compute_dtype="bfloat16", '
        f"lora_rank=R))`, the configs' fine-tuning settings (`configs/musicgen_medium.py`, `musicgen_large.py`): "
        f"full fine-tuning (R = 0: every parameter trains, AdamW moments of all) or low-rank adapters (R = {rank}, "
        "`--config.lora_rank`: only the adapters of the layers' attention and feed-forward kernels train; the "
        "optimizer is `optax.multi_transform` with `set_to_zero` for the frozen parameters, so the AdamW moments "
        "are the adapters' only; params and EMA still hold every parameter, float32). One device: "
        "`make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])`. Batch 1: codes / mask "
        f"[1, 4, {frames}] ({frames / FRAME_RATE:g} s, {positions} pattern positions), precomputed text states "
        f"[1, {text}, {LARGE['text_dim']}] float32 + text_mask (no T5). Lowered from `jax.ShapeDtypeStruct`s with "
        "the state's shardings (`state_shapes` + `shardings(state_specs(...))`) and `batch_sharding(mesh)`, "
        "nothing allocated, the compiles one after the other in one subprocess "
        f"(on {res['platform']}; max RSS {res['ru_maxrss']:.2f} GiB; {res['wall']:.0f} s in all, start-up "
        "included).",
        "- Columns, per device (GiB = 2^30 bytes): parameters trained of all; params / optimizer state / EMA = the "
        "state's bytes from its shapes (sum of prod(shape) x itemsize per part; the optimizer state is the AdamW "
        "moments, its step counters a few bytes); argument, temp, output, alias = `compiled.memory_analysis()` "
        "(the state is donated: its outputs alias the arguments); peak = argument + temp + output - alias; fits "
        + " / ".join(f"{cap}" for cap in FINETUNE_CAPACITIES)
        + " GiB: peak <= capacity.",
        "- Caveat: XLA:CPU's buffer assignments, to read as estimates for a GPU: XLA:GPU fuses and schedules "
        "differently, a GPU process also holds its CUDA context and cuBLAS / cuDNN workspaces, and JAX's GPU "
        "allocator preallocates 75% of the device's memory by default (JAX's \"GPU memory allocation\" notes: "
        "`XLA_PYTHON_CLIENT_MEM_FRACTION` sets the fraction, `XLA_PYTHON_CLIENT_PREALLOCATE=false` turns it off), "
        "so a peak close to the capacity is marginal.",
        "",
        "| model | fine-tuning | parameters trained | params GiB | optimizer state GiB | EMA GiB | argument GiB "
        f"| temp GiB | output GiB | alias GiB | peak GiB | {caps} | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(FINETUNE_CAPACITIES) + "---|",
        *rows,
        "",
        _finetune_summary(res),
        "",
    ]
    return "\n".join(lines)


def _variant(text: str) -> str:
    """A `--memory-variants` value, REMAT/DTYPE, checked against the step's options."""
    from musicgen_jax.lm.model import REMAT_POLICIES
    from musicgen_jax.train.trainer import COMPUTE_DTYPES

    remat, _, dtype = text.partition("/")
    if remat not in REMAT_POLICIES or dtype not in COMPUTE_DTYPES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected REMAT/DTYPE with REMAT one of "
            f"{', '.join(REMAT_POLICIES)} and DTYPE one of {', '.join(COMPUTE_DTYPES)}"
        )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which sections to measure (each is published on its own)",
    )
    parser.add_argument("--batch", type=int, default=2, help="step: batch size")
    parser.add_argument("--frames", type=int, default=250, help="step: frames per crop (50 per second)")
    parser.add_argument("--steps", type=int, default=8, help="step: timed steps per framework")
    parser.add_argument("--layers", type=int, default=4, help="step: decoder layers (musicgen-small has 24)")
    parser.add_argument("--text-tokens", type=int, default=128, help="step: T5 tokens per prompt (padded)")
    parser.add_argument("--scan", action="store_true", help="step: JAX layers scanned (default unrolled, the recipe)")
    parser.add_argument(
        "--skip-parts",
        action="store_true",
        help="step: do not time the parts of the step apart (they need more memory: at --layers 24 "
        "the whole step section needs more than 24 GB of RAM with them)",
    )
    parser.add_argument("--memory-frames", type=int, default=MEMORY_FRAMES, help="memory: frames per crop")
    parser.add_argument(
        "--memory-variants",
        nargs="+",
        type=_variant,
        default=list(MEMORY_VARIANTS),
        metavar="REMAT/DTYPE",
        help="memory: step variants REMAT/DTYPE (remat: none, full, dots; compute dtype: float32, "
        "bfloat16), compiled in this order on every mesh; the first also gets the crop-length "
        "sweep",
    )
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=FINETUNE_RANK,
        help="finetune: rank of the low-rank adapters compiled against full fine-tuning",
    )
    parser.add_argument("--write", action="store_true", help=f"write the measured sections of {RESULTS}")
    args = parser.parse_args(argv)
    if min(args.batch, args.frames, args.steps, args.layers, args.text_tokens, args.memory_frames, args.lora_rank) < 1:
        parser.error(
            "--batch, --frames, --steps, --layers, --text-tokens, --memory-frames and --lora-rank must be >= 1"
        )
    command = command_line("benchmarks.train", argv)
    if "step" in args.sections:
        res = run_step(
            args.batch, args.frames, args.steps, args.layers, args.text_tokens, args.scan, not args.skip_parts
        )
        publish(report_step(res, command), args.write)
    if "memory" in args.sections:
        res = run_memory(args.memory_frames, MEMORY_TEXT, list(dict.fromkeys(args.memory_variants)))
        publish(report_memory(res, command), args.write)
    if "finetune" in args.sections:
        res = run_finetune(MEMORY_FRAMES, MEMORY_TEXT, args.lora_rank)
        publish(report_finetune(res, command), args.write)


if __name__ == "__main__":
    main()
