"""Benchmark training: the musicgen_jax train step against the equivalent PyTorch step (transformers), the
per-device memory of musicgen-large's train step under FSDP, and that of fine-tuning musicgen-medium and -large
on one device, full and with low-rank adapters.

Step: musicgen-small's architecture with `--layers` decoder layers (default 4 of 24, to fit a small CPU) on the
same random weights and batch on both sides, checked to compute the same losses and gradient norms over two
steps, then timed in alternation, with the parts of the step timed apart. Memory and fine-tuning: the steps are
compiled from shapes only (nothing allocated) in a subprocess, on simulated host devices for FSDP, and XLA's
`memory_analysis()` read per device.

    .venv/bin/python -m benchmarks.train --write     # writes the training sections of benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks.train --sections finetune --write     # the fine-tuning section only
"""

from __future__ import annotations

import argparse
import contextlib
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
    GIB,
    command_line,
    cpu_counters,
    load_average,
    machine_lines,
    median_min,
    memory_analysis,
    other_load,
    parser,
    peak_bytes,
    publish,
    repeat_seconds,
    section,
    table,
    time_pair,
    usable_cores,
    with_min,
)

STEP_TITLE = "## Training step (musicgen-small architecture, random weights)"
MEMORY_TITLE = "## Training memory (musicgen-large under FSDP, simulated devices)"
FINETUNE_TITLE = "## Fine-tuning memory (musicgen-medium and -large on one device, full and LoRA)"
SECTIONS = ("step", "memory", "finetune")
FRAME_RATE = 50  # EnCodec 32 kHz frames per second

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


def make_batch(tokenizer, batch: int, frames: int, text_tokens: int, seed: int = 0) -> dict:
    """`batch` prompts (`benchmarks.text.prompt_batch`) padded to `text_tokens`, random codes."""
    from benchmarks.text import prompt_batch

    ids, text_mask = tokenizer(prompt_batch(batch), length=text_tokens, truncate=True)
    codes = np.random.default_rng(seed).integers(0, 2048, (batch, 4, frames)).astype(np.int32)
    return {
        "codes": codes,
        "mask": np.ones(codes.shape, bool),
        "text_ids": ids.astype(np.int32),
        "text_mask": text_mask.astype(np.int32),
        "prompt_tokens": int(text_mask.sum(1).max()),
    }


class TorchTrainer:
    """transformers' MusicGen forward with labels, backward, clipping and AdamW on one fixed batch on `device`.
    `autocast`: a torch dtype the forward and loss run in (`torch.autocast`) over float32 weights; `fused`: AdamW's
    fused kernel (CUDA). A batch with `text_embeddings` (T5 states [B, N, 768]) instead of `text_ids` gives them to
    the model as `encoder_outputs`: the text encoder is not run."""

    def __init__(self, model, batch: dict, delays, card: int, device="cpu", autocast=None, fused: bool | None = None):
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        from musicgen_jax.train.loss import training_sequences

        self.model, self.device, self.autocast = model, torch.device(device), autocast
        model.train()
        for frozen in (model.text_encoder, model.audio_encoder):
            frozen.requires_grad_(False)
            frozen.eval()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8, fused=fused
        )
        _, targets, valid = (np.asarray(a) for a in training_sequences(batch["codes"], batch["mask"], delays, card))
        labels = torch.from_numpy(np.where(valid, targets, -100).transpose(0, 2, 1)).long()  # [B, S - 1, K]
        # transformers 5's MusicgenForConditionalGeneration reads a decoder_start_token_id its decoder config
        # lacks; its own shift (start = bos = pad = card) gives the pattern's inputs (tests/train/test_loss.py)
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels).reshape(-1, labels.shape[1])
        if "text_embeddings" in batch:
            states = torch.from_numpy(batch["text_embeddings"]).to(self.device)
            text = {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}
        else:
            text = {"input_ids": torch.from_numpy(batch["text_ids"]).long().to(self.device)}
        self.inputs = {
            **text,
            "attention_mask": torch.from_numpy(batch["text_mask"]).long().to(self.device),
            "decoder_input_ids": decoder_ids.to(self.device),
            "labels": labels.to(self.device),
        }

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.trainable)

    def step(self, exact_norm: bool = False) -> dict:
        """One training step; `exact_norm`: also the gradients' global norm accumulated in float64 (the
        parity check; `clip_grad_norm_` accumulates in float32, which loses ~1e-4 on CPU at this size)."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        cast = contextlib.nullcontext() if self.autocast is None else torch.autocast(self.device.type, self.autocast)
        with cast:
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
        """The step's parts as callables (a batch of `text_ids`): T5 forward; LM forward + backward from the T5
        states; clipping + AdamW."""
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

                total[side] += count * median_min(repeat_seconds(call, runs))[0]
    return total


def run_step(
    batch_size: int, frames: int, steps: int, layers: int, text_tokens: int, scan: bool, parts: bool = True
) -> dict:
    import torch
    import transformers

    from benchmarks.sampling import hf_config, write_checkpoint
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
        no_dropout = dict.fromkeys(("dropout", "attention_dropout", "activation_dropout"), 0.0)
        model = write_checkpoint(Path(tmp), hf_config("small", num_hidden_layers=layers, **no_dropout))
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
    print("parity: 2 steps each, cfg_dropout 0, lr 1e-4 from step 0 ...", flush=True)
    parity_config = StepConfig(lm_config, text.config, OptimConfig(warmup_steps=0), cfg_dropout=0.0, scan_layers=scan)
    torch_parity = [torch_trainer.step(exact_norm=True) for _ in range(2)]
    parity_trainer = JaxTrainer(parity_config, params, text.params, batch, mesh)
    jax_parity = [parity_trainer.step() for _ in range(2)]
    del parity_trainer

    print("compiling the timed JAX step (recipe: cfg_dropout 0.3, warm-up) ...", flush=True)
    timed_config = StepConfig(lm_config, text.config, OptimConfig(), cfg_dropout=0.3, scan_layers=scan)
    jax_trainer = JaxTrainer(timed_config, params, text.params, batch, mesh)
    print(f"compiled in {jax_trainer.compile_seconds:.1f} s; timing {steps} steps each ...", flush=True)
    counters = cpu_counters()
    timed = time_pair(jax_trainer.step, torch_trainer.step, steps)
    others = other_load(counters)
    if parts:
        print("parts of the step ...", flush=True)
        sides = (("jax", jax_trainer.parts(timed_config)), ("torch", torch_trainer.parts()))
        parts = {
            side: {part: median_min(repeat_seconds(fn, BREAKDOWN_RUNS))[0] for part, fn in trainer_parts.items()}
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
        "parts": parts,
        "compile": jax_trainer.compile_seconds,
        "flops": jax_trainer.flops(),
        "timed": timed,
        "attn": getattr(model.config.decoder, "_attn_implementation", None) or "default",
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


STEP_NOTES = """\
- musicgen_jax step: `compile_step` on a 1-device mesh, float32, T5 inside the step, classifier-free guidance \
dropout 0.3, loss, gradients, `clip_by_global_norm(1.0)`, AdamW (betas 0.9 / 0.95, weight decay 0.1, eps 1e-8; the \
recipe's warm-up schedule), EMA (decay 0.99 every 10 steps), state donated. Compile: **{compile:.1f} s**.
- PyTorch step: `zero_grad`, forward with labels (T5 frozen inside), `loss.backward()`, \
`clip_grad_norm_(trainable, 1.0)`, `torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)` \
`.step()`; no CFG dropout and no EMA (audiocraft updates its EMA outside the step).
- Timing: median (min) of {steps} timed steps each, JAX and PyTorch alternating, after one untimed first call of \
each. Throughput = batch x frames / step time; x 4 codebooks for codebook tokens; audio seconds = frames / 50."""
STEP_COLUMNS = {
    "step": "{}",
    "median s": with_min(2),
    "first call s": "{:.2f}",
    "audio frames/s": "{:.1f}",
    "codebook tokens/s": "{:.1f}",
    "audio s per s": "{:.3f}",
}
PARTS = {
    "text": "T5 encoder forward (frozen)",
    "lm": "LM loss + gradients (from the T5 states)",
    "update": "clipping + AdamW update",
    "products": "of the LM: the decoder layers' matrix products alone ({torch} in PyTorch, {jax} in JAX, whose q / k / "
    "v and cross-attention k / v are one product each of the stacked kernels; each projection's forward `x W^T` and "
    "its gradient products `g W`, `g^T x`; median of {runs} consecutive calls each, summed)",
}


def report_step(res: dict, command: str) -> str:
    """The training-step section: provenance, the parity of both steps, the step times, the parts."""
    b, f = res["batch"], res["frames"]
    rows, med = [], {}
    for name, label in (("jax", "musicgen_jax `compile_step`"), ("torch", "PyTorch (transformers + AdamW)")):
        first, times = res["timed"][name]
        med[name] = median_min(times)[0]
        rate = b * f / med[name]
        rows.append((label, median_min(times), first, rate, 4 * rate, rate / FRAME_RATE))
    parity = "; ".join(
        f"step {s + 1}: loss {j['loss']:.7f} / {t['loss']:.7f} (relative difference {_rel(j['loss'], t['loss']):.1e}), "
        f"gradient norm {j['grad_norm']:.7f} / {t['exact_norm']:.7f} ({_rel(j['grad_norm'], t['exact_norm']):.1e})"
        for s, (j, t) in enumerate(zip(res["jax_parity"], res["torch_parity"], strict=True))
    )
    flops = res["flops"]
    layout = "scanned" if res["scan"] else "unrolled"
    facts = [
        *machine_lines(res["threads"], res["load"], torch_mode="autograd on: training", others=res["others"]),
        f"- Model: transformers `MusicgenForConditionalGeneration`, musicgen-small architecture with "
        f"**{res['layers']} decoder layers** (decoder dropout 0; T5 frozen), `torch.manual_seed(0)` init, converted "
        f"with `musicgen_jax.convert.pretrained.convert` ({res['load_seconds']:.0f} s): {res['params']:,} trainable "
        f"parameters on both sides. JAX layers {layout}; PyTorch attention `{res['attn']}`.",
        f"- Batch: {b} prompts (up to {res['prompt_tokens']} tokens) padded to {res['text_tokens']} T5 tokens, random "
        f"codes [{b}, 4, {f}] = {f / FRAME_RATE:g} s crops, {f + 3} pattern positions per row.",
        STEP_NOTES.format(compile=res["compile"], steps=res["steps"]),
        "- Same computation (JAX compiled with `cfg_dropout=0` and no warm-up, so lr 1e-4 at step 0 as in PyTorch; "
        f"JAX / PyTorch, PyTorch's gradient norm summed in float64): {parity}.",
        f"- XLA's cost analysis: {flops / 1e9:.0f} GFLOP per JAX step, {flops / 1e9 / med['jax']:.1f} GFLOP/s "
        f"achieved (PyTorch, same work: {flops / 1e9 / med['torch']:.1f})."
        if flops
        else "",
        f"- Process max RSS (both models and states): {res['ru_maxrss']:.2f} GiB.",
    ]
    ratio = (
        f"Speed ratio PyTorch / JAX (median step times): **{med['torch'] / med['jax']:.2f}** (above 1: JAX faster). "
        "Target stated in the training issue: JAX at least as fast as PyTorch (documented, not asserted)."
    )
    blocks = [table(STEP_COLUMNS, rows), ratio]
    if res["parts"]:
        pj, pt, count = res["parts"]["jax"], res["parts"]["torch"], res["parts"]["product_count"]
        labels = {**PARTS, "products": PARTS["products"].format(runs=PRODUCT_RUNS, **count)}
        blocks += [
            f"Parts of the step, each timed on its own (median of {BREAKDOWN_RUNS} consecutive calls after one "
            "untimed; JAX: each part jitted separately, the update without the EMA):",
            table(
                {"part": "{}", "JAX s": "{:.3f}", "PyTorch s": "{:.3f}", "ratio PyTorch/JAX": "{:.2f}"},
                [(label, pj[key], pt[key], pt[key] / pj[key]) for key, label in labels.items()],
            ),
            f"Of the LM's {pj['lm'] - pt['lm']:+.3f} s (JAX minus PyTorch), {pj['products'] - pt['products']:+.3f} s "
            "is the decoder layers' matrix products.",
        ]
    return section(STEP_TITLE, command, [fact for fact in facts if fact], *blocks)


# --- training memory: musicgen-large under FSDP, and fine-tuning on one device, from shapes ------------------


def _nbytes(tree, sharding=None) -> int:
    """Bytes of the arrays (or `jax.ShapeDtypeStruct`s) of `tree`, per device with its `sharding` tree."""
    leaves = jax.tree.leaves(tree)
    shapes = (
        [x.shape for x in leaves]
        if sharding is None
        else [h.shard_shape(x.shape) for x, h in zip(leaves, jax.tree.leaves(sharding), strict=True)]
    )
    return sum(int(np.prod(shape)) * x.dtype.itemsize for shape, x in zip(shapes, leaves, strict=True))


def step_shapes(config, mesh, per_device: int, frames: int, text: int) -> tuple:
    """The train step's (state, batch) as `jax.ShapeDtypeStruct`s with their shardings on `mesh`, nothing allocated:
    the state of `config`, and a `Batch` of `per_device` rows per device: codes / mask [B, K, `frames`] and
    precomputed text states [B, `text`, text_dim] with their mask [B, `text`] (no T5)."""
    import jax.numpy as jnp

    from musicgen_jax.sharding import shardings
    from musicgen_jax.train.trainer import Batch, batch_sharding, state_shapes, state_specs

    lm, bs, rows = config.lm, batch_sharding(mesh, config.rules), per_device * mesh.size
    state = jax.tree.map(
        lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h),
        state_shapes(config),
        shardings(state_specs(config), mesh, config.rules),
    )
    batch = Batch(
        codes=jax.ShapeDtypeStruct((rows, lm.num_codebooks, frames), jnp.int32, sharding=bs),
        mask=jax.ShapeDtypeStruct((rows, lm.num_codebooks, frames), jnp.bool_, sharding=bs),
        text_embeddings=jax.ShapeDtypeStruct((rows, text, lm.text_dim), jnp.float32, sharding=bs),
        text_mask=jax.ShapeDtypeStruct((rows, text), jnp.int32, sharding=bs),
    )
    return state, batch


def _compile_memory(config, mesh, per_device: int, frames: int, text: int) -> dict:
    """Compile `config`'s train step on `mesh` from shapes (`step_shapes`): {"compile": seconds, "available",
    and the `memory_analysis` fields}."""
    from musicgen_jax.train.trainer import compile_step

    shapes = step_shapes(config, mesh, per_device, frames, text)
    start = time.perf_counter()
    m = memory_analysis(compile_step(config, mesh).lower(*shapes, {}).compile())
    res = {"compile": time.perf_counter() - start, "available": m is not None, **(m or {})}
    print(f"{mesh.size} devices, batch {per_device} x {frames} frames: {res}", file=sys.stderr, flush=True)
    return res


def _memory_worker(
    out_path: str, devices: list[int], frames: int, text: int, sweep: list[int], variants: list[str]
) -> None:
    """In a process started with 256 host devices: compile the large step of each variant ("remat/dtype")
    for each mesh at per-device batch 1 and 2 (the first variant also at the `sweep` lengths), write JSON."""
    import dataclasses

    from musicgen_jax.config import LMConfig
    from musicgen_jax.sharding import make_mesh, shardings
    from musicgen_jax.train.trainer import OptimConfig, StepConfig, state_shapes, state_specs

    base = StepConfig(LMConfig(**LARGE), None, OptimConfig(max_norm=3.0), cfg_dropout=0.2, scan_layers=True)
    shapes, specs = state_shapes(base), state_specs(base)  # the state does not depend on remat or compute dtype
    meshes = {n: make_mesh(data=1, fsdp=n, devices=jax.devices()[:n]) for n in devices}
    parts = ("params", "opt_state", "ema")
    out = {
        "device_count": jax.device_count(),
        "param_count": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params)),
        "global_state": {part: _nbytes(getattr(shapes, part)) for part in parts},
        "state": {
            n: {part: _nbytes(getattr(shapes, part), getattr(shardings(specs, mesh), part)) for part in parts}
            for n, mesh in meshes.items()
        },
        "variants": {},
    }
    for variant in variants:
        remat, dtype = variant.split("/")
        config = dataclasses.replace(base, remat=remat, compute_dtype=dtype)
        out["variants"][variant] = {
            "compiles": {n: {b: _compile_memory(config, meshes[n], b, frames, text) for b in (1, 2)} for n in devices},
            "sweep": {
                length: _compile_memory(config, meshes[devices[0]], 1, length, text)
                for length in (sweep if variant == variants[0] else [])
            },
        }
    Path(out_path).write_text(json.dumps(out))


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


def _int_keys(tree):
    """JSON's string keys of devices, batches and lengths back to ints."""
    if not isinstance(tree, dict):
        return tree
    return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in tree.items()}


def run_memory(frames: int, text: int, variants: list[str]) -> dict:
    load_before = load_average()
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(MEMORY_DEVICES)}"
    res, wall = _in_subprocess(
        "_memory_worker",
        (list(MEMORY_DEVICES), frames, text, list(SWEEP_FRAMES), variants),
        {"XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"},
    )
    return {**_int_keys(res), "wall": wall, "frames": frames, "text": text, "load": (load_before, load_average())}


def max_batch(c1: dict, c2: dict, capacity: int) -> tuple[int, float]:
    """(largest per-device batch whose extrapolated peak fits `capacity` bytes, bytes per extra example)."""
    slope = peak_bytes(c2) - peak_bytes(c1)
    fixed = peak_bytes(c1) - slope
    return (max(0, math.floor((capacity - fixed) / slope)) if slope > 0 else -1), slope


MEMORY_NOTES = """\
- Step: `compile_step(StepConfig(lm, t5=None, scan_layers=True, remat=R, compute_dtype=D, ...))` for each variant \
R/D of the table (remat `none`, `full`: only the layer inputs kept, or `dots`: the projections' outputs kept too; \
compute `float32`, or `bfloat16` over float32 master weights). Batches of precomputed text states \
[B, {text}, 768] (no T5), codes / mask [B, 4, {frames}], meshes `make_mesh(data=1, fsdp=N)`, lowered from \
`jax.ShapeDtypeStruct`s with the state's shardings: nothing allocated. Simulated devices: {devices} host CPU \
devices (`--xla_force_host_platform_device_count`, in a subprocess); all compiles took {wall:.0f} s.
- Columns, per device: argument, temp = `compiled.memory_analysis()`; peak = argument + temp + the outputs not \
aliased to arguments; per example = peak(batch 2) - peak(batch 1); the largest batch that fits is extrapolated \
linearly from batch 1 and 2 (0: not even one example fits).
- Caveat: XLA:CPU's buffer assignments; the GPU and TPU compilers fuse and schedule differently: estimates."""
MEMORY_COLUMNS = (
    {
        "step (remat / compute)": "{}",
        "devices (FSDP)": "{}",
        "argument GiB": "{:.2f}",
        "temp GiB, batch 1": "{:.2f}",
        "temp GiB, batch 2": "{:.2f}",
        "peak GiB, batch 1": "{:.2f}",
        "GiB per example": "{:.2f}",
    }
    | {f"max batch, {cap} GiB": "{}" for cap in CAPACITIES}
    | {"compile s (b1 / b2)": "{:.0f} / {:.0f}"}
)


def report_memory(res: dict, command: str) -> str:
    """The FSDP memory section: provenance, one row per step variant and mesh, the crop-length sweep."""
    import flax

    frames, lm, g = res["frames"], LARGE, res["global_state"]
    rows, per_example = [], {}
    for variant, r in res["variants"].items():
        for n, c in r["compiles"].items():
            c1, c2 = c[1], c[2]
            if not (c1["available"] and c2["available"]):
                rows.append((variant, n, "memory analysis unavailable", *[""] * (len(MEMORY_COLUMNS) - 3)))
                continue
            fits = [max_batch(c1, c2, cap * GIB) for cap in CAPACITIES]
            per_example[variant] = fits[0][1]
            cells = [c1["argument"], c1["temp"], c2["temp"], peak_bytes(c1), fits[0][1]]
            rows.append((variant, n, *(x / GIB for x in cells), *(b for b, _ in fits), (c1["compile"], c2["compile"])))
    first, n0 = next(iter(res["variants"])), min(res["state"])
    sweep = {**res["variants"][first]["sweep"], frames: res["variants"][first]["compiles"][n0][1]}
    sweep_rows = [
        (f"{length} ({length / FRAME_RATE:g} s)", c["temp"] / GIB, peak_bytes(c) / GIB)
        + (lm["num_heads"] * (length + 3) ** 2 * 4 * lm["num_layers"] / GIB,)
        for length, c in sorted(sweep.items())
        if c["available"]
    ]
    state = ", ".join(f"{n} devices {sum(s.values()) / GIB:.2f}" for n, s in res["state"].items())
    facts = [
        *machine_lines(None, res["load"], f", flax {flax.__version__}"),
        f"- Model: musicgen-large's LM (width {lm['dim']}, {lm['num_heads']} heads, {lm['num_layers']} layers, ffn "
        f"{lm['ffn_dim']}): {res['param_count']:,} parameters; state (float32 params, AdamW moments, EMA): "
        f"{g['params'] / GIB:.2f} + {g['opt_state'] / GIB:.2f} + {g['ema'] / GIB:.2f} GiB, per device: {state}.",
        MEMORY_NOTES.format(text=res["text"], frames=frames, devices=res["device_count"], wall=res["wall"]),
    ]
    sweep_intro = (
        f"Crop length, step {first}, at per-device batch 1 on {n0} devices (temporaries against the bytes of one "
        f"float32 attention matrix [heads, S, S] per layer, S = frames + 3, x {lm['num_layers']} layers):"
    )
    summary = (
        f"Per example at {frames} frames on {max(res['state'])} devices: "
        + ", ".join(f"{v} {b / GIB:.2f} GiB" for v, b in per_example.items())
        + ". The state shrinks as 1/N under FSDP; the activations do not."
    )
    sweep_table = table(
        {"frames": "{}", "temp GiB": "{:.2f}", "peak GiB": "{:.2f}", "attention matrices x layers GiB": "{:.2f}"},
        sweep_rows,
    )
    return section(MEMORY_TITLE, command, facts, table(MEMORY_COLUMNS, rows), sweep_intro, sweep_table, summary)


def _finetune_worker(out_path: str, frames: int, text: int, rank: int) -> None:
    """In a subprocess: compile the fine-tuning step of each of `FINETUNE_MODELS`, full (`lora_rank=0`) and with
    rank-`rank` adapters, on a 1-device mesh from shapes, batch 1; write JSON {"models": {model: {mode: ...}}}."""
    from musicgen_jax.config import LMConfig
    from musicgen_jax.sharding import make_mesh
    from musicgen_jax.train.trainer import OptimConfig, StepConfig, state_shapes

    mesh = make_mesh(data=1, fsdp=1, devices=jax.devices()[:1])
    models = {}
    for name, (model, max_norm, cfg_dropout) in FINETUNE_MODELS.items():
        for mode, lora_rank in (("full", 0), ("lora", rank)):
            config = StepConfig(
                LMConfig(**model),
                None,
                OptimConfig(max_norm=max_norm),
                cfg_dropout=cfg_dropout,
                scan_layers=True,
                remat="full",
                compute_dtype="bfloat16",
                lora_rank=lora_rank,
            )
            shapes = state_shapes(config)
            paths = jax.tree_util.tree_leaves_with_path(shapes.params)
            models.setdefault(name, {})[mode] = {
                **_compile_memory(config, mesh, 1, frames, text),
                "param_count": sum(int(np.prod(x.shape)) for _, x in paths),
                "trainable_count": sum(int(np.prod(x.shape)) for path, x in paths if config.trainable(path)),
                "state": {part: _nbytes(getattr(shapes, part)) for part in ("params", "opt_state", "ema")},
            }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    Path(out_path).write_text(json.dumps({"models": models, "platform": jax.devices()[0].platform, "ru_maxrss": rss}))


def run_finetune(frames: int, text: int, rank: int) -> dict:
    """`_finetune_worker`'s results (in a subprocess, on the host CPU), with the wall time and the load."""
    load_before = load_average()
    res, wall = _in_subprocess("_finetune_worker", (frames, text, rank), {"JAX_PLATFORMS": "cpu"})
    return {**res, "wall": wall, "frames": frames, "text": text, "rank": rank, "load": (load_before, load_average())}


def _fit(peak: int, capacity: int) -> str:
    """A table cell: whether `peak` bytes fit `capacity` GiB, and by how much."""
    margin = (capacity * GIB - peak) / GIB
    return f"yes, {margin:.2f} GiB left" if margin >= 0 else f"no, {-margin:.2f} GiB over"


FINETUNE_NOTES = """\
- Step: `compile_step(StepConfig(lm, t5=None, scan_layers=True, remat="full", compute_dtype="bfloat16", \
lora_rank=R))`, the configs' fine-tuning settings: full fine-tuning (R = 0) or low-rank adapters (R = {rank}: only \
the adapters of the attention and feed-forward kernels train and have AdamW moments and an EMA). One device, batch \
1: codes / mask [1, 4, {frames}], precomputed text states [1, {text}, 768] (no T5); lowered from \
`jax.ShapeDtypeStruct`s, nothing allocated, in one subprocess (on {platform}; max RSS {rss:.2f} GiB; {wall:.0f} s).
- Columns, per device (GiB = 2^30 bytes): params / optimizer state / EMA = the state's bytes from its shapes; \
argument, temp, output, alias = `compiled.memory_analysis()`; peak = argument + temp + output - alias; fits: \
peak <= capacity.
- Caveat: XLA:CPU's buffer assignments, estimates for a GPU, where the CUDA context, cuBLAS workspaces and JAX's \
preallocation (75% of the memory by default) also count: a peak close to the capacity is marginal."""
FINETUNE_COLUMNS = (
    {"model": "{}", "fine-tuning": "{}", "parameters trained": "{:,} of {:,}"}
    | dict.fromkeys(["params GiB", "optimizer state GiB", "EMA GiB", "argument GiB"], "{:.2f}")
    | dict.fromkeys(["temp GiB", "output GiB", "alias GiB"], "{:.2f}")
    | {"peak GiB": "**{:.2f}**"}
    | {f"fits {cap} GiB": "{}" for cap in FINETUNE_CAPACITIES}
    | {"compile s": "{:.0f}"}
)


def report_finetune(res: dict, command: str) -> str:
    """The fine-tuning section: provenance, one row per model and mode, what fits where."""
    import flax

    rows, fits = [], {cap: [] for cap in FINETUNE_CAPACITIES}
    for name, modes in res["models"].items():
        for mode, c in modes.items():
            label = "full" if mode == "full" else f"LoRA rank {res['rank']}"
            lead = (name, label, (c["trainable_count"], c["param_count"]), *(x / GIB for x in c["state"].values()))
            if not c["available"]:
                rows.append((*lead, "memory analysis unavailable", *[""] * (len(FINETUNE_COLUMNS) - len(lead) - 1)))
                continue
            peak = peak_bytes(c)
            memory = [c[k] / GIB for k in ("argument", "temp", "output", "alias")]
            rows.append((*lead, *memory, peak / GIB, *(_fit(peak, cap) for cap in FINETUNE_CAPACITIES), c["compile"]))
            for cap in FINETUNE_CAPACITIES:
                if peak <= cap * GIB:
                    fits[cap].append(f"{name} {label.split()[0]}")
    models = "; ".join(
        f"{name} (width {m['dim']}, {m['num_heads']} heads, {m['num_layers']} layers, ffn {m['ffn_dim']}; clipping "
        f"{max_norm:g}, guidance dropout {cfg:g})"
        for name, (m, max_norm, cfg) in FINETUNE_MODELS.items()
    )
    facts = [
        *machine_lines(None, res["load"], f", flax {flax.__version__}"),
        f"- Models: the LMs of {models}.",
        FINETUNE_NOTES.format(
            rank=res["rank"],
            frames=res["frames"],
            text=res["text"],
            platform=res["platform"],
            rss=res["ru_maxrss"],
            wall=res["wall"],
        ),
    ]
    summary = f"What fits at batch 1 x {res['frames'] / FRAME_RATE:g} s (peak <= capacity): " + "; ".join(
        f"on a {cap} GiB device {', '.join(names) or 'none'}" for cap, names in fits.items()
    )
    return section(FINETUNE_TITLE, command, facts, table(FINETUNE_COLUMNS, rows), summary + ".")


def _variant(text: str) -> str:
    """A `--memory-variants` value, REMAT/DTYPE, checked against the step's options."""
    from musicgen_jax.lm.model import REMAT_POLICIES
    from musicgen_jax.train.trainer import COMPUTE_DTYPES

    remat, _, dtype = text.partition("/")
    if remat not in REMAT_POLICIES or dtype not in COMPUTE_DTYPES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected REMAT/DTYPE, REMAT of {', '.join(REMAT_POLICIES)}, DTYPE of "
            + ", ".join(COMPUTE_DTYPES)
        )
    return text


def main(argv: list[str] | None = None) -> None:
    p = parser("benchmarks.train", __doc__)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="the sections to measure")
    p.add_argument("--batch", type=int, default=2, help="step: batch size")
    p.add_argument("--frames", type=int, default=250, help="step: frames per crop (50 per second)")
    p.add_argument("--steps", type=int, default=8, help="step: timed steps per framework")
    p.add_argument("--layers", type=int, default=4, help="step: decoder layers (musicgen-small has 24)")
    p.add_argument("--text-tokens", type=int, default=128, help="step: T5 tokens per prompt (padded)")
    p.add_argument("--scan", action="store_true", help="step: JAX layers scanned (default unrolled, the recipe)")
    p.add_argument(
        "--skip-parts",
        action="store_true",
        help="step: do not time the parts of the step apart (at --layers 24 they need more than 24 GB of RAM)",
    )
    p.add_argument("--memory-frames", type=int, default=MEMORY_FRAMES, help="memory: frames per crop")
    p.add_argument(
        "--memory-variants",
        nargs="+",
        type=_variant,
        default=list(MEMORY_VARIANTS),
        metavar="REMAT/DTYPE",
        help="memory: step variants (remat none, full, dots; dtype float32, bfloat16), in this order on every "
        "mesh; the first also gets the crop-length sweep",
    )
    p.add_argument("--lora-rank", type=int, default=FINETUNE_RANK, help="finetune: rank of the adapters")
    args = p.parse_args(argv)
    if min(args.batch, args.frames, args.steps, args.layers, args.text_tokens, args.memory_frames, args.lora_rank) < 1:
        p.error("--batch, --frames, --steps, --layers, --text-tokens, --memory-frames and --lora-rank must be >= 1")
    command = command_line("benchmarks.train", argv)
    if "step" in args.sections:
        step = (args.batch, args.frames, args.steps, args.layers, args.text_tokens, args.scan, not args.skip_parts)
        publish(report_step(run_step(*step), command), args.write)
    if "memory" in args.sections:
        res = run_memory(args.memory_frames, MEMORY_TEXT, list(dict.fromkeys(args.memory_variants)))
        publish(report_memory(res, command), args.write)
    if "finetune" in args.sections:
        publish(report_finetune(run_finetune(MEMORY_FRAMES, MEMORY_TEXT, args.lora_rank), command), args.write)


if __name__ == "__main__":
    main()
