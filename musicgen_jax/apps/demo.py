"""The web demo: text-to-music, melody and continuation in the browser, and the same through an HTTP API.

    pip install -e '.[app]'
    python -m musicgen_jax.app --model facebook/musicgen-small --model facebook/musicgen-melody
    python -m musicgen_jax.app --model converted/small --host 0.0.0.0 --port 7860 --share

One process serves every `--model` (the page offers a choice), each loaded on first use and kept compiled,
so that a request after the first costs only its generation (`Studio`). The HTTP API (`/generate`, through
gradio's client) is described at `build`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from musicgen_jax import fileio
from musicgen_jax.audio import AudioError, read_audio, to_pcm16, write_audio
from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.extras import MissingExtraError
from musicgen_jax.fileio import save_json, save_npy, slug
from musicgen_jax.lm.model import INFERENCE_DTYPES
from musicgen_jax.musicgen import DEFAULT_MODEL, MusicGen, default_dtype, enable_compilation_cache
from musicgen_jax.sampling import SamplingParams

MAX_DURATION = 300.0  # seconds a request may ask for (past the models' 30 s: windowed extension)
MAX_VARIATIONS = 4  # variations of one prompt per request (one audio player each)
STREAM_HOP, STREAM_WINDOW = 50, 100  # frames: streamed audio comes every hop, decoded with the window's context
STREAMING = shutil.which("ffmpeg") is not None  # gradio encodes streamed audio with it
IMAGE_WIDTH, WAVEFORM_HEIGHT, MEL_HEIGHT = 800, 160, 256
# colour stops of the spectrogram, from silence to loudest (dark blue, purple, orange, pale yellow)
MEL_COLOURS = np.array([[8, 8, 40], [90, 20, 120], [200, 60, 80], [250, 160, 40], [252, 250, 190]], np.float32)


@dataclass(frozen=True)
class Request:
    """One generation: `variations` samples of `prompt`, variation i with seed `seed + i` (as `sample.py`'s
    repeated `--prompt`). `melody` / `continuation`: paths of uploaded audio, or None."""

    model: str
    prompt: str
    duration: float = 10.0
    seed: int = 0
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    cfg_coef: float = 3.0
    variations: int = 1
    melody: str | None = None
    continuation: str | None = None

    def check(self) -> None:
        """ValueError naming the first setting out of range."""
        if not 0 < self.duration <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] seconds, got {self.duration:g}")
        if not 1 <= self.variations <= MAX_VARIATIONS:
            raise ValueError(f"variations must be between 1 and {MAX_VARIATIONS}, got {self.variations}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.cfg_coef < 0:
            raise ValueError(f"cfg_coef (guidance) must be >= 0, got {self.cfg_coef:g}")
        SamplingParams(True, self.top_k, self.top_p, self.temperature, self.cfg_coef)
        if self.melody and self.continuation:
            raise ValueError("give a melody or audio to continue, not both")

    def command(self) -> str:
        """The `sample.py` command line that generates the same audio (with the same uploads)."""
        args = ["python", "sample.py", "--model", self.model]
        args += list(itertools.chain.from_iterable(("--prompt", self.prompt) for _ in range(self.variations)))
        args += [
            "--duration",
            f"{self.duration:g}",
            "--seed",
            str(self.seed),
            "--top-k",
            str(self.top_k),
            "--top-p",
            f"{self.top_p:g}",
            "--temperature",
            f"{self.temperature:g}",
            "--cfg-coef",
            f"{self.cfg_coef:g}",
        ]
        if self.melody:
            args += ["--melody", self.melody]
        if self.continuation:
            args += ["--continuation", self.continuation]
        return shlex.join(args)


@dataclass(frozen=True)
class Result:
    """The files of one request, in `out/NNNN_<slug>/`: `wavs` (one per variation), `codes` (`codes.npy`,
    int16 `[N, K, T]`), `settings` (`settings.json`, with the `sample.py` command that reproduces it)."""

    wavs: list[Path]
    codes: Path
    settings: Path
    waveform: np.ndarray  # [WAVEFORM_HEIGHT, IMAGE_WIDTH, 3] uint8, of the first variation's WAV
    spectrogram: np.ndarray  # [MEL_HEIGHT, IMAGE_WIDTH, 3] uint8, of the first variation


class Studio:
    """The models of the demo (loaded on first use, then kept) and the generation behind the page and the API.

    `sources`: any source `sample.py --model` takes (hub id, PyTorch checkpoint directory, converted
    directory, `train.py` run directory), converted on first use; a loaded model stays loaded and compiled
    (JAX's compilation cache on) for the requests after. `out`: where every result lands (`Result`), a
    directory or a URL (a bucket: each result written to a local temporary directory, `local`, that the page
    serves from, then uploaded)."""

    def __init__(self, sources: list[str], out: str | os.PathLike, dtype: str | None = None):
        if not sources:
            raise ValueError("no models: give --model SOURCE at least once")
        self.sources = list(dict.fromkeys(sources))
        self.out = fileio.make_dirs(out)
        self.local = Path(tempfile.mkdtemp(prefix="musicgen_jax_app_") if fileio.is_url(self.out) else self.out)
        self.dtype = dtype  # of the LMs (`MusicGen.get_pretrained`); None: its default for the backend
        self._models: dict[str, MusicGen] = {}
        self._load_lock = threading.Lock()
        self._count = itertools.count()

    def model(self, source: str) -> MusicGen:
        if source not in self.sources:
            raise ValueError(f"unknown model {source!r}; this demo serves {', '.join(self.sources)}")
        with self._load_lock:
            if source not in self._models:
                self._models[source] = MusicGen.get_pretrained(source, dtype=self.dtype)
            return self._models[source]

    def generate(self, request: Request, progress: bool = True) -> Result:
        """Generate `request` into a new folder of `out`. ValueError / AudioError / CheckpointError name bad input."""
        return self._generate(request, *self._prepare(request), progress=progress)

    def _generate(self, request: Request, model: MusicGen, prompts, seeds, melody, start, progress: bool) -> Result:
        if melody is not None:
            audio, codes = model.generate_with_chroma(
                prompts, [melody] * len(prompts), model.sample_rate, progress=progress, return_tokens=True, seed=seeds
            )
        elif start is not None:
            audio, codes = model.generate_continuation(
                np.repeat(start[None], len(prompts), 0),
                model.sample_rate,
                prompts,
                progress=progress,
                return_tokens=True,
                seed=seeds,
            )
        else:
            audio, codes = model.generate(prompts, progress=progress, return_tokens=True, seed=seeds)
        return self._save(request, model, audio, codes)

    def stream(self, request: Request) -> Iterator[np.ndarray | Result]:
        """As `generate`, and before its Result the first variation's audio `[C, n]` while it is generated:
        every `STREAM_HOP` frames the newest frames decoded with those before them up to `STREAM_WINDOW`
        (the codec's context), the new frames' samples yielded (then the rest at the end); the Result's
        audio is the whole decode. Requests past `max_duration` or continuing audio are generated whole
        (only their Result is yielded)."""
        prepared = model, prompts, seeds, melody, start = self._prepare(request)
        if start is not None or request.duration > model.max_duration:
            yield self._generate(request, *prepared, progress=True)
            return
        frames, sent = [], 0
        bar = tqdm(total=int(request.duration * model.frame_rate), unit="frame", desc="generating")
        with bar:
            for frame in model.stream_tokens(prompts, seeds, None if melody is None else [melody] * len(prompts)):
                frames.append(frame)
                bar.update(1)
                if len(frames) - sent >= STREAM_HOP:
                    yield self._newest(model, frames, len(frames) - sent)
                    sent = len(frames)
        if len(frames) > sent:
            yield self._newest(model, frames, len(frames) - sent)
        codes = np.concatenate(frames, axis=-1)
        yield self._save(request, model, model.generate_audio(codes), codes)

    @staticmethod
    def _newest(model: MusicGen, frames: list[np.ndarray], count: int) -> np.ndarray:
        """The first row's audio `[C, count * hop]` of the newest `count` of `frames` (`[B, K, 1]` each),
        decoded with the frames before them up to `STREAM_WINDOW`."""
        window = np.concatenate(frames[-STREAM_WINDOW:], axis=-1)[:1]
        return model.generate_audio(window)[0, :, -count * model.sample_rate // model.frame_rate :]

    def _prepare(self, request: Request):
        """(model, prompts, seeds, melody [T] or None, audio to continue [C, T] or None) of a checked request."""
        request.check()
        if not request.prompt.strip() and not (request.melody or request.continuation):
            raise ValueError("the prompt is empty: describe the music (or give a melody or audio to continue)")
        model = self.model(request.model)
        if request.melody and not model.lm_config.melody:
            raise ValueError(f"{request.model} is a text-to-music model, it takes no melody (choose a melody model)")
        model.set_generation_params(
            use_sampling=True,
            top_k=request.top_k,
            top_p=request.top_p,
            temperature=request.temperature,
            duration=request.duration,
            cfg_coef=request.cfg_coef,
        )
        prompts, seeds = [request.prompt] * request.variations, [request.seed + i for i in range(request.variations)]
        melody = read_audio(request.melody, model.sample_rate)[0] if request.melody else None
        start = (
            read_audio(request.continuation, model.sample_rate, model.audio_channels)[0]
            if request.continuation
            else None
        )
        return model, prompts, seeds, melody, start

    def _save(self, request: Request, model: MusicGen, audio: np.ndarray, codes: np.ndarray) -> Result:
        """Write the request's WAVs, codes and settings into a new folder of `local`, then of `out`."""
        name = f"{next(self._count):04d}_{slug(request.prompt or 'untitled')}"
        folder = self.local / name
        wavs = [
            write_audio(
                folder / f"{i:03d}_{slug(request.prompt or 'untitled')}.wav",
                wav,
                model.sample_rate,
                strategy="loudness",
            )
            for i, wav in enumerate(audio)
        ]
        save_npy(folder / "codes.npy", np.asarray(codes).astype(np.int16))
        settings = {
            **asdict(request),
            "sample_rate": model.sample_rate,
            "codes_shape": list(np.shape(codes)),
            "command": request.command(),
        }
        save_json(folder / "settings.json", settings)
        if self.out != self.local:
            fileio.upload_tree(folder, self.out / name)
        mono = read_audio(wavs[0])[0].mean(axis=0)  # as written: normalized
        return Result(
            wavs,
            folder / "codes.npy",
            folder / "settings.json",
            waveform_image(mono),
            spectrogram_image(mono, model.sample_rate),
        )


def waveform_image(wav: np.ndarray, width: int = IMAGE_WIDTH, height: int = WAVEFORM_HEIGHT) -> np.ndarray:
    """`wav [T]` -> RGB `[height, width, 3]` uint8: the minimum and maximum of each column's samples."""
    columns = np.array_split(np.clip(wav, -1.0, 1.0), width)
    lows = np.array([c.min() if c.size else 0.0 for c in columns])
    highs = np.array([c.max() if c.size else 0.0 for c in columns])
    amplitude = np.linspace(1.0, -1.0, height)[:, None]  # of each row, +1 at the top
    inside = (amplitude >= lows[None] - 1.0 / height) & (amplitude <= highs[None] + 1.0 / height)
    image = np.full((height, width, 3), 250, np.uint8)
    image[inside] = (30, 90, 200)
    return image


def spectrogram_image(
    wav: np.ndarray, sample_rate: int, width: int = IMAGE_WIDTH, height: int = MEL_HEIGHT
) -> np.ndarray:
    """`wav [T]` -> RGB `[height, width, 3]` uint8: the 128-band mel spectrogram in dB (80 dB range), low
    frequencies at the bottom."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(wav, np.float32), sr=sample_rate, n_fft=2048, hop_length=512, n_mels=128
    )
    db = librosa.power_to_db(mel + 1e-12, ref=max(float(mel.max()), 1e-12), top_db=80.0)  # [128, frames], <= 0
    level = (db + 80.0) / 80.0
    rows = np.linspace(0, 127, height).round().astype(int)
    cols = np.linspace(0, level.shape[1] - 1, width).round().astype(int)
    level = level[rows][:, cols][::-1]
    stops = np.linspace(0.0, 1.0, len(MEL_COLOURS))
    image = np.stack([np.interp(level, stops, MEL_COLOURS[:, c]) for c in range(3)], axis=-1)
    return image.round().astype(np.uint8)


def _gradio():
    try:
        import gradio
    except ImportError as e:
        raise MissingExtraError("the web demo needs gradio: pip install -e '.[app]'") from e
    return gradio


def build(studio: Studio):
    """The gradio Blocks of the demo over `studio`: the page, and the API endpoint `/generate`, which takes
    (prompt, duration, seed, top_k, top_p, temperature, cfg_coef) and returns (audio file, codes file,
    settings) for the first model:

        from gradio_client import Client
        client = Client("http://127.0.0.1:7860/")
        wav_path, codes_path, settings = client.predict("lofi hip hop beat", 8, 0, 250, 0.0, 1.0, 3.0,
                                                        api_name="/generate")
    """
    gr = _gradio()

    def results(request: Request, stream: bool) -> Iterator[np.ndarray | Result]:
        try:
            yield from studio.stream(request) if stream and STREAMING else [studio.generate(request)]
        except (ValueError, AudioError, CheckpointError, MissingExtraError) as e:
            raise gr.Error(str(e)) from e

    def page(
        model,
        prompt,
        melody,
        continuation,
        duration,
        variations,
        top_k,
        top_p,
        temperature,
        cfg_coef,
        seed,
        stream,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (gradio injects it)
    ):
        request = Request(
            model,
            prompt or "",
            float(duration),
            int(seed),
            int(top_k),
            float(top_p),
            float(temperature),
            float(cfg_coef),
            int(variations),
            melody or None,
            continuation or None,
        )
        for item in results(request, bool(stream)):
            if not isinstance(item, Result):  # the first variation's newest audio [C, n]
                chunk = studio.model(request.model).sample_rate, to_pcm16(np.clip(item, -1.0, 1.0)).T  # [n, C]
                yield chunk, *[gr.skip()] * (MAX_VARIATIONS + 4)
                continue
            players = [
                gr.Audio(value=str(item.wavs[i]) if i < len(item.wavs) else None, visible=i < len(item.wavs))
                for i in range(MAX_VARIATIONS)
            ]
            files = [str(p) for p in (*item.wavs, item.codes, item.settings)]
            yield gr.skip(), *players, item.waveform, item.spectrogram, files, item.settings.read_text()

    def api(prompt, duration, seed, top_k, top_p, temperature, cfg_coef, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        request = Request(
            studio.sources[0],
            prompt or "",
            float(duration),
            int(seed),
            int(top_k),
            float(top_p),
            float(temperature),
            float(cfg_coef),
        )
        result = next(results(request, stream=False))
        return str(result.wavs[0]), str(result.codes), result.settings.read_text()

    with gr.Blocks(title="MusicGen (JAX)") as demo:
        gr.Markdown(
            "# MusicGen in JAX\nText-to-music (and melody-conditioned music with a melody model). "
            f"Up to {MAX_DURATION:g} s: past 30 s the music is extended in windows."
        )
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(studio.sources, value=studio.sources[0], label="Model", elem_id="model")
                prompt = gr.Textbox(
                    label="Describe the music",
                    lines=2,
                    elem_id="prompt",
                    placeholder="lofi hip hop beat with a mellow jazzy piano, 90 bpm",
                )
                melody = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    elem_id="melody",
                    label="Melody to follow (melody models only, optional)",
                )
                continuation = gr.Audio(
                    sources=["upload"], type="filepath", elem_id="continuation", label="Audio to continue (optional)"
                )
                duration = gr.Slider(0.5, MAX_DURATION, value=10, step=0.5, label="Duration (s)", elem_id="duration")
                variations = gr.Slider(1, MAX_VARIATIONS, value=1, step=1, label="Variations", elem_id="variations")
                with gr.Row():
                    top_k = gr.Number(250, label="Top-k", precision=0, elem_id="top_k")
                    top_p = gr.Number(0.0, label="Top-p (over top-k when > 0)", elem_id="top_p")
                    temperature = gr.Number(1.0, label="Temperature", elem_id="temperature")
                    cfg_coef = gr.Number(3.0, label="Guidance (cfg)", elem_id="cfg_coef")
                    seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                stream = gr.Checkbox(
                    STREAMING,
                    interactive=STREAMING,
                    elem_id="stream",
                    label="Play while generating (up to 30 s, not with audio to continue)"
                    + ("" if STREAMING else ": needs ffmpeg, not found"),
                )
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                live = gr.Audio(
                    label="While generating", streaming=True, autoplay=True, interactive=False, elem_id="live"
                )
                player = gr.WaveformOptions(show_recording_waveform=False)  # the browser's own <audio> player
                players = [
                    gr.Audio(
                        type="filepath",
                        label=f"Variation {i + 1}",
                        interactive=False,
                        visible=i == 0,
                        waveform_options=player,
                        elem_id=f"result-{i}",
                    )
                    for i in range(MAX_VARIATIONS)
                ]
                waveform = gr.Image(label="Waveform", interactive=False, elem_id="waveform")
                spectrogram = gr.Image(label="Spectrogram (mel, dB)", interactive=False, elem_id="spectrogram")
                files = gr.File(
                    label="Downloads: WAV, codes (.npy), settings (JSON)", file_count="multiple", elem_id="files"
                )
                settings = gr.Code(label="Settings (reproduce with sample.py)", language="json", elem_id="settings")
        generate.click(
            page,
            [
                model,
                prompt,
                melody,
                continuation,
                duration,
                variations,
                top_k,
                top_p,
                temperature,
                cfg_coef,
                seed,
                stream,
            ],
            [live, *players, waveform, spectrogram, files, settings],
            api_name="generate_page",
        )
        api_button = gr.Button(visible=False)
        api_button.click(
            api,
            [prompt, duration, seed, top_k, top_p, temperature, cfg_coef],
            [players[0], files, settings],
            api_name="generate",
        )
    return demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m musicgen_jax.app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help=f"a model to offer: any source sample.py takes (repeatable; default {DEFAULT_MODEL})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--out", help="where the results go, a directory or URL (default a new temporary directory)")
    p.add_argument(
        "--dtype",
        choices=("auto", *INFERENCE_DTYPES),
        default="auto",
        help="the LMs' weights and matrix products (auto: bfloat16 on GPU / TPU, float32 on CPU)",
    )
    p.add_argument("--queue-size", type=int, default=32, help="requests waiting at most (default 32)")
    return p


def launch(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    queue_size: int = 32,
    block: bool = True,
):
    """Serve the demo (requests queued, one generation at a time); `block=False` returns the running Blocks."""
    demo = build(studio).queue(default_concurrency_limit=1, max_size=queue_size)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(studio.local)],
        show_error=True,
        prevent_thread_lock=not block,
    )
    return demo


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _gradio()
        dtype = default_dtype() if args.dtype == "auto" else args.dtype
        studio = Studio(args.model or [DEFAULT_MODEL], args.out or tempfile.mkdtemp(prefix="musicgen_jax_app_"), dtype)
        enable_compilation_cache()
        print(f"results go to {studio.out}; LMs in {dtype} on {jax.default_backend()}", flush=True)
        launch(studio, args.host, args.port, args.share, args.queue_size)
    except (ValueError, MissingExtraError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
