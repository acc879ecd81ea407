"""Samples during training: every `generate_every` steps, audio of the EMA weights for the config's
`sample_prompts`, written to `WORKDIR/samples/STEP/NNN_<slug>.wav` (loudness-normalized, as audiocraft
writes its training samples) with `settings.json` (the prompts, seed, duration, sampling settings and the
LM's dtype, `config.sample_dtype`: auto is bfloat16 on GPUs / TPUs, float32 on CPUs).
A step's folder counts once its `settings.json`, written last, is there (object stores have no renames;
a repeated step, after a resume, replaces the folder)."""

from __future__ import annotations

import dataclasses

import jax
from etils import epath
from jax.sharding import Mesh

from musicgen_jax.audio import write_audio
from musicgen_jax.codec.model import Codec
from musicgen_jax.components import Components
from musicgen_jax.config import LMConfig
from musicgen_jax.fileio import path, remove_tree, save_json, slug
from musicgen_jax.lm.model import INFERENCE_DTYPES, merge_lora, unstack_layers
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.text.encoder import T5TextEncoder
from musicgen_jax.train.rundir import dataset_codec

SAMPLES = "samples"


@dataclasses.dataclass(frozen=True)
class EMAModel:
    """`__call__(step, ema)`: a `MusicGen` of the EMA weights `ema` (`rundir.ema_weights`, any layout) with the
    dataset's codec and the run's text encoder, on the run's `mesh` (`MusicGen(mesh=...)`: text encoding,
    decoding and the codec split over it), built from the weights where they lie, so that no host holds a
    whole copy. What the samples and the objective metrics during training generate with."""

    workdir: epath.Path
    codec: Codec
    lm_config: LMConfig
    text_encoder: T5TextEncoder
    scan_layers: bool
    mesh: Mesh
    lora: bool = False
    dtype: str | None = None

    @staticmethod
    def of_run(workdir, info: dict, lm_config, text_encoder, scan_layers, mesh, lora=False, dtype="auto"):
        """The builder of a run on the dataset of `info` (its dataset.json); `dtype`: "auto" or a name."""
        if dtype != "auto" and dtype not in INFERENCE_DTYPES:
            raise ValueError(f"config.sample_dtype must be auto or one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
        codec = dataset_codec(info, "generating")
        auto = None if dtype == "auto" else dtype
        return EMAModel(path(workdir), codec, lm_config, text_encoder, scan_layers, mesh, lora, auto)

    def __call__(self, step: int, ema) -> MusicGen:
        params = merge_lora(ema) if self.lora else ema
        if self.scan_layers:
            params = unstack_layers(params)
        name = f"{self.workdir} (step {step}, EMA weights)"
        components = Components(self.codec, self.text_encoder, self.lm_config, params, name)
        return MusicGen(name, components, mesh=self.mesh, dtype=self.dtype)


class Samples:
    """`__call__(step, ema)` writes the samples of the EMA weights `ema` at `step` (`EMAModel`); process 0
    writes the files."""

    def __init__(self, model: EMAModel, prompts, seconds: float, seed: int):
        prompts = [str(p) for p in prompts]
        if not prompts or not all(p.strip() for p in prompts):
            raise ValueError(f"config.sample_prompts must be non-empty texts, got {prompts!r}")
        if not seconds > 0:
            raise ValueError(f"config.sample_seconds must be positive, got {seconds!r}")
        self.model, self.root = model, model.workdir / SAMPLES
        self.prompts, self.seconds, self.seed = prompts, float(seconds), int(seed)

    def __call__(self, step: int, ema) -> epath.Path | None:
        """The step's folder (None on processes other than 0, which take part in generating)."""
        model = self.model(step, ema)
        model.set_generation_params(duration=self.seconds)
        audio = model.generate(self.prompts, seed=self.seed)
        if jax.process_index() != 0:
            return None
        final = self.root / str(step)
        remove_tree(final)  # what a run killed while writing this step left
        for i, (prompt, wav) in enumerate(zip(self.prompts, audio, strict=True)):
            write_audio(final / f"{i:03d}_{slug(prompt)}.wav", wav, model.sample_rate, strategy="loudness")
        save_json(  # last: a step folder without it is incomplete (the listening page skips it)
            final / "settings.json",
            {
                "step": step,
                "weights": "ema",
                "prompts": self.prompts,
                "seconds": self.seconds,
                "seed": self.seed,
                "dtype": model.dtype,
                "sampling": dataclasses.asdict(model.sampling),
                "sample_rate": model.sample_rate,
                "normalization": "loudness",
            },
        )
        return final
