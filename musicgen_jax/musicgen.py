"""`MusicGen`: the user-facing text-to-music API, following audiocraft's `MusicGen`
(`models/musicgen.py`).

    model = MusicGen.get_pretrained("facebook/musicgen-small")
    model.set_generation_params(duration=8)
    wav = model.generate(["lofi hip hop with a jazzy piano"], seed=0)   # [B, C, T] float32 numpy

Seeds are explicit: the same seed gives the same audio. Melody models: `generate_with_chroma`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh
from tqdm.auto import tqdm

from musicgen_jax import fileio
from musicgen_jax.audio import convert_channels, resample
from musicgen_jax.chroma import extract_chroma
from musicgen_jax.components import Components, is_converted, is_current, load_converted, save_converted
from musicgen_jax.config import ChromaConfig
from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from musicgen_jax.lm.model import cast_params, param_specs
from musicgen_jax.sampling import Conditions, Decoder, SamplingParams, row_keys, split_rows
from musicgen_jax.sharding import place, to_host
from musicgen_jax.stems import melody_stems
from musicgen_jax.train.rundir import is_run, load_run

DEFAULT_MODEL = "facebook/musicgen-small"
MAX_DURATION = 30.0  # seconds the released models were trained on; longer generations are windowed


def enable_compilation_cache(path: str | os.PathLike | None = None) -> epath.Path | None:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so that a later process
    loads the decode loop instead of compiling it again (8-10 s for musicgen-small on a 2-core CPU).
    `path`: this directory; None: the one already chosen through JAX (`JAX_COMPILATION_CACHE_DIR`,
    `jax.config`), else `$MUSICGEN_JAX_CACHE/xla`; a URL too (JAX reads and writes it through etils.epath).
    Process-wide, and effective only before the first
    compilation. Returns the directory in use, or None when JAX's cache is switched off
    (`jax_enable_compilation_cache`). The cache is trusted code: keep it private to its user."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    if path is not None or not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.fspath(fileio.path(path or fileio.cache_dir() / "xla")))
    return fileio.path(jax.config.jax_compilation_cache_dir)


def disable_compilation_cache() -> None:
    """Compile every program in this process and keep none on disk, even where a cache directory is
    set through JAX (`JAX_COMPILATION_CACHE_DIR`). Process-wide."""
    jax.config.update("jax_enable_compilation_cache", False)


def default_dtype() -> str:
    """The LM's inference dtype where none is asked for: bfloat16 on GPUs and TPUs, float32 on CPUs (which
    have no bfloat16 arithmetic: XLA:CPU emulates it, slower than float32)."""
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _cache_entry(name: str, fmt: str) -> epath.Path:
    return fileio.cache_dir() / f"{fileio.cache_key(name)}-{fmt}"


def load_components(name: str, fmt: str = "auto") -> Components:
    """The codec, text encoder and LM of a converted directory, a `train.py` run directory (its latest
    checkpoint's EMA weights), or a PyTorch checkpoint (hub id or local directory; `fmt` auto, hf or
    audiocraft), which is converted on first use and cached under `$MUSICGEN_JAX_CACHE` (default
    `~/.cache/musicgen_jax`; a URL: converted once into the bucket, read from a local copy)."""
    where = fileio.path(name)
    with fileio.reporting(where):
        directory = where.is_dir()
    if directory and is_run(where):  # Orbax reads a run where it is
        return load_run(where)
    if directory and fileio.is_url(where):  # any other directory is read from a local copy
        name = str(fileio.mirror(where))
        where = fileio.path(name)
    if directory and is_converted(where):
        return load_converted(where)
    entry = _cache_entry(name, fmt)
    if not is_current(entry):
        save_converted(convert_checkpoint(name, fmt), entry)
    return load_converted(fileio.mirror(entry) if fileio.is_url(entry) else entry)


class MusicGen:
    """A converted MusicGen model with its generation settings."""

    def __init__(
        self,
        name: str,
        components: Components,
        max_duration: float = MAX_DURATION,
        mesh: Mesh | None = None,
        dtype: str | None = None,
    ):
        self.name = name
        self.dtype = default_dtype() if dtype is None else dtype
        self.lm_config = components.lm_config
        self.mesh = mesh
        self.lm_params = place(cast_params(components.lm_params, self.dtype), lambda: param_specs(self.lm_config), mesh)
        self.codec = components.codec if mesh is None else dataclasses.replace(components.codec, mesh=mesh)
        self.text_encoder = (
            components.text_encoder if mesh is None else dataclasses.replace(components.text_encoder, mesh=mesh)
        )
        self.max_duration = max_duration
        self.sampling = SamplingParams()
        self.duration = 15.0  # audiocraft's default after get_pretrained
        self.extend_stride = 18.0
        self._bar: tqdm | None = None
        if self.lm_config.num_codebooks != self.codec.num_codebooks:
            raise ValueError(
                f"{name}: the LM models {self.lm_config.num_codebooks} codebooks, "
                f"the codec produces {self.codec.num_codebooks}"
            )

    @staticmethod
    def get_pretrained(
        name: str = DEFAULT_MODEL, fmt: str = "auto", mesh: Mesh | None = None, dtype: str | None = None
    ) -> MusicGen:
        """The model of `name` (any source `load_components` takes). `mesh` (`musicgen_jax.sharding.make_mesh`):
        split it over these devices: the batch of prompts over its data axes end to end (text encoding, the
        decode loop, audio decoding), the LM's weights over its fsdp and tensor axes.
        `dtype` ("float32", "bfloat16", "float16"; None: `default_dtype()`): the LM's matrices stored on the
        device and multiplied in it, its norms, softmax, logits and the sampling in float32
        (`lm.model.cast_params`); the text encoder and the codec run in float32."""
        return MusicGen(name, load_components(name, fmt), mesh=mesh, dtype=dtype)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.codec.frame_rate

    @property
    def audio_channels(self) -> int:
        return self.codec.channels

    def set_generation_params(
        self,
        use_sampling: bool = True,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        duration: float = 30.0,
        cfg_coef: float = 3.0,
        extend_stride: float = 18.0,
    ) -> None:
        """audiocraft's generation settings (its defaults). `duration` beyond `max_duration` (30 s) is
        generated in windows that advance by `extend_stride` seconds."""
        if not duration > 0:
            raise ValueError(f"duration must be positive, got {duration}")
        if not 0 < extend_stride < self.max_duration:
            raise ValueError(f"extend_stride must be in (0, {self.max_duration}), got {extend_stride}")
        self.sampling = SamplingParams(use_sampling, top_k, top_p, temperature, cfg_coef)
        self.duration = float(duration)
        self.extend_stride = float(extend_stride)

    def generate(
        self,
        descriptions: Sequence[str | None],
        progress: bool = False,
        return_tokens: bool = False,
        seed: int | Sequence[int] = 0,
    ):
        """Audio `[B, C, T]` for text prompts (None or "" = unconditional), and the codes if asked."""
        tokens = self.generate_tokens(descriptions, progress=progress, seed=seed)
        return self._result(tokens, return_tokens)

    def generate_unconditional(
        self, num_samples: int, progress: bool = False, return_tokens: bool = False, seed: int | Sequence[int] = 0
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        return self.generate([None] * num_samples, progress, return_tokens, seed)

    def generate_continuation(
        self,
        prompt,
        prompt_sample_rate: int,
        descriptions: Sequence[str | None] | None = None,
        progress: bool = False,
        return_tokens: bool = False,
        seed: int | Sequence[int] = 0,
    ):
        """Continue audio `prompt [B, C, T]` (or `[C, T]`); the output starts with the prompt's own codes."""
        prompt = np.asarray(prompt, np.float32)
        if prompt.ndim == 2:
            prompt = prompt[None]
        if prompt.ndim != 3:
            raise ValueError(f"prompt must be [B, C, T] or [C, T], got shape {prompt.shape}")
        prompt = np.stack(
            [convert_channels(resample(p, prompt_sample_rate, self.sample_rate), self.audio_channels) for p in prompt]
        )
        descriptions = [None] * len(prompt) if descriptions is None else descriptions
        if isinstance(descriptions, str):
            raise ValueError(f"expected a list of descriptions, got {descriptions!r}")
        if len(descriptions) != len(prompt):
            raise ValueError(f"{len(descriptions)} descriptions for {len(prompt)} prompts")
        prompt_tokens = to_host(self.codec.encode(prompt))
        tokens = self.generate_tokens(descriptions, prompt_tokens, progress=progress, seed=seed)
        return self._result(tokens, return_tokens)

    def generate_with_chroma(
        self,
        descriptions: Sequence[str | None],
        melody_wavs,
        melody_sample_rate: int,
        progress: bool = False,
        return_tokens: bool = False,
        seed: int | Sequence[int] = 0,
        stems: bool = False,
    ):
        """Audio `[B, C, T]` for text prompts, each following a melody (melody models, audiocraft's
        `ChromaStemConditioner`).

        `melody_wavs`: `[B, C, T]`, `[C, T]`, or a list of `[C, T]` / `[T]` arrays of any lengths, one per
        description or one for all, at `melody_sample_rate`: resampled to the codec's rate and downmixed to
        mono, then reduced to the chroma the LM conditions on (`musicgen_jax.chroma`). `stems=False`: of the
        whole mix, as transformers computes it; True: of its vocals and other stems (Demucs, the `melody`
        extra: `musicgen_jax.stems`), as audiocraft does. Past `max_duration` each window follows the
        melody from its own start, looping it, as audiocraft does."""
        melodies = self._melodies(melody_wavs, melody_sample_rate, len(descriptions), stems)
        tokens = self.generate_tokens(descriptions, progress=progress, seed=seed, melodies=melodies)
        return self._result(tokens, return_tokens)

    def _melodies(self, melody_wavs, sample_rate: int, count: int, stems: bool) -> list[np.ndarray]:
        """`count` mono waveforms `[T]` at the codec's rate (`stems`: Demucs' vocals + other)."""
        if not self.lm_config.melody:
            raise ValueError(
                f"{self.name} is a text-to-music model: it takes no melody (use a melody model, "
                "e.g. facebook/musicgen-melody)"
            )
        batched = isinstance(melody_wavs, (list, tuple)) or np.ndim(melody_wavs) == 3
        wavs = list(melody_wavs) if batched else [melody_wavs]
        if len(wavs) not in (1, count):
            raise ValueError(f"{len(wavs)} melodies for {count} descriptions: give one for all or one each")
        mono = []
        for i, wav in enumerate(wavs):
            wav = np.asarray(wav, np.float32)
            if wav.ndim not in (1, 2) or wav.shape[-1] == 0:
                raise ValueError(f"melody {i} must be [C, T] or [T] with T > 0, got shape {wav.shape}")
            if not np.isfinite(wav).all():
                raise ValueError(f"melody {i} contains NaN or infinite values")
            wav = np.atleast_2d(wav)
            mono.append(
                melody_stems(wav, sample_rate, self.sample_rate)
                if stems
                else convert_channels(resample(wav, sample_rate, self.sample_rate), 1)[0]
            )
        return mono * count if len(mono) == 1 else mono

    def _chroma(self, melodies: list[np.ndarray] | None, offset: float):
        """Chroma `[B, chroma_frames, bins]` of the melodies, or None: of each whole melody or (windowed
        generation) of `max_duration` seconds of it from `offset` seconds on, looped:
        `wav[(offset * sr + arange(max_duration * sr)) % len(wav)]` (audiocraft). The batch's melodies are
        zero-padded to the longest first, as both references collate them."""
        if melodies is None:
            return None
        config = ChromaConfig(sample_rate=self.sample_rate, bins=self.lm_config.chroma_bins)
        if self.duration > self.max_duration:
            positions = int(offset * self.sample_rate) + np.arange(int(self.max_duration * self.sample_rate))
            melodies = [wav[positions % len(wav)] for wav in melodies]
        longest = max(len(wav) for wav in melodies)
        batch = np.stack([np.pad(wav, (0, longest - len(wav))) for wav in melodies])
        return jax.numpy.asarray(extract_chroma(batch, config, self.lm_config.chroma_frames))

    def generate_audio(self, tokens) -> np.ndarray:
        return to_host(self.codec.decode(tokens))

    def _result(self, tokens, return_tokens: bool):
        audio = self.generate_audio(tokens)
        return (audio, to_host(tokens)) if return_tokens else audio

    def generate_tokens(
        self,
        descriptions: Sequence[str | None],
        prompt_tokens=None,
        progress: bool = False,
        seed: int | Sequence[int] = 0,
        melodies: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Codes `[B, K, duration * frame_rate]` (windowed past `max_duration`, as audiocraft). `melodies`:
        one mono waveform `[T]` at the codec's rate per description (melody models; None: text alone).

        Row r is sampled with seed `seed + r`, or `seed[r]` when one seed per row is given: a prompt's
        result depends on its seed, never on the other prompts of its batch (melody models: as in both
        references, the zero padding of shorter prompts in the prefix makes it depend on the longest)."""
        text, mask, key = self._conditions(descriptions, seed, prompt_tokens)
        total = int(self.duration * self.frame_rate)
        if progress:
            self._bar = tqdm(total=total, unit="frame", desc="generating")
        try:
            if self.duration <= self.max_duration:
                return to_host(
                    self._window(text, mask, key, total, prompt_tokens, progress, self._chroma(melodies, 0.0))
                )
            return self._extended(text, mask, key, total, prompt_tokens, progress, melodies)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def stream_tokens(
        self,
        descriptions: Sequence[str | None],
        seed: int | Sequence[int] = 0,
        melodies: list[np.ndarray] | None = None,
    ) -> Iterator[np.ndarray]:
        """The codes `generate_tokens` returns (a duration within `max_duration`, no audio prompt), yielded
        as each frame completes, `[B, K, 1]` (`sampling.Decoder.stream`)."""
        if self.duration > self.max_duration:
            raise ValueError(
                f"streaming generates up to {self.max_duration:g} s (one window), asked for {self.duration:g} s"
            )
        text, mask, key = self._conditions(descriptions, seed, None)
        frames = int(self.duration * self.frame_rate)
        conditions = Conditions.of(self.lm_config, text, mask, self._chroma(melodies, 0.0))
        for frame in self._decoder().stream(self.lm_params, conditions, key, frames):
            yield to_host(frame)

    def _conditions(self, descriptions, seed, prompt_tokens):
        """(text states, text mask, one key per row) of a generation; ValueError for bad arguments."""
        if isinstance(descriptions, str) or not len(descriptions):
            raise ValueError(f"expected a non-empty list of descriptions, got {descriptions!r}")
        window = int(min(self.duration, self.max_duration) * self.frame_rate)
        if prompt_tokens is not None and prompt_tokens.shape[-1] > window:
            raise ValueError(
                f"the prompt ({prompt_tokens.shape[-1]} frames) is longer than the audio to generate ({window} frames)"
            )
        seeds = np.asarray(seed if np.ndim(seed) else seed + np.arange(len(descriptions)))
        if seeds.shape != (len(descriptions),):
            raise ValueError(f"{len(seeds)} seeds for {len(descriptions)} descriptions")
        text, mask = self.text_encoder(descriptions)
        return text, mask, row_keys(seeds)

    def _extended(self, text, mask, key, total, prompt_tokens, progress, melodies) -> np.ndarray:
        """audiocraft's windowed extension: windows of at most max_duration, each prompted with the
        previous window's tail, advancing by `extend_stride`."""
        stride = int(self.frame_rate * self.extend_stride)
        pieces = [] if prompt_tokens is None else [np.asarray(prompt_tokens)]
        prompt_len = 0 if prompt_tokens is None else prompt_tokens.shape[-1]
        offset = 0
        while offset + prompt_len < total:
            chunk = min(self.duration - offset / self.frame_rate, self.max_duration)
            key, sub = split_rows(key)
            tokens = to_host(
                self._window(
                    text,
                    mask,
                    sub,
                    int(chunk * self.frame_rate),
                    prompt_tokens,
                    progress,
                    self._chroma(melodies, offset / self.frame_rate),
                )
            )
            pieces.append(tokens if prompt_tokens is None else tokens[:, :, prompt_tokens.shape[-1] :])
            prompt_tokens = tokens[:, :, stride:]
            prompt_len = prompt_tokens.shape[-1]
            offset += stride
        return np.concatenate(pieces, axis=-1)

    def _window(self, text, mask, key, frames, prompt_tokens, progress, chroma):
        prompt = None if prompt_tokens is None else jax.numpy.asarray(prompt_tokens)
        conditions = Conditions.of(self.lm_config, text, mask, chroma)
        return self._decoder().generate(
            self.lm_params, conditions, key, frames, prompt, self._progress if progress else None
        )

    def _decoder(self) -> Decoder:
        """The decode loop of this model's LM with the current generation settings."""
        return Decoder(self.lm_config, self.sampling, self.mesh)

    def _progress(self, steps: int) -> None:
        """Called by `Decoder.generate` after each run of decode steps."""
        if self._bar is not None:  # a window's steps exceed its new frames by the delays: capped at the total
            self._bar.update(min(steps, self._bar.total - self._bar.n))
