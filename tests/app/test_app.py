"""The web demo (`musicgen_jax.app`) served on loopback with the tiny random transformers MusicGen and
MusicGen-Melody (tests/lm/conftest.py): through `gradio_client` (greedy codes equal transformers'
`generate`, three concurrent requests, bad values as messages) and in headless Chromium (Debian's
`chromium` and `chromium-driver`, driven by selenium): a prompt typed, generated, played."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

gradio_client = pytest.importorskip("gradio_client", reason="the app extra: pip install -e '.[app]'")

from musicgen_jax import MusicGen  # noqa: E402
from musicgen_jax.apps.demo import MAX_VARIATIONS, Request, Studio, launch, spectrogram_image, waveform_image  # noqa: E402
from tests.lm.test_generate import hf_generate_codes  # noqa: E402

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
CHROMIUM, CHROMEDRIVER, FFMPEG = shutil.which("chromium"), shutil.which("chromedriver"), shutil.which("ffmpeg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(converted, converted_melody, tmp_path_factory):
    """(studio, url) of the demo serving the tiny text model (first: the API's) and the tiny melody model."""
    studio = Studio([str(converted), str(converted_melody)], tmp_path_factory.mktemp("app"))
    port = _free_port()
    demo = launch(studio, port=port, block=False)
    yield studio, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return gradio_client.Client(app[1], verbose=False)


def test_api_greedy_codes_equal_transformers(client, hf_musicgen, hf_tokenizer):
    """`/generate` with top_k=1 and guidance 3: the codes it saves are transformers' greedy `generate`
    codes for that prompt, the WAV it returns first holds their audio (640 samples a frame), the
    settings name the command that reproduces it."""
    prompt = "calm piano melody"
    wav_path, codes_path, settings = client.predict(prompt, 1.5, 0, 1, 0.0, 1.0, 3.0, api_name="/generate")
    batch = hf_tokenizer([prompt])
    expected = hf_generate_codes(hf_musicgen[0], np.array(batch["input_ids"]), np.array(batch["attention_mask"]), 75)
    np.testing.assert_array_equal(np.load(codes_path), expected)
    wav, sr = soundfile.read(wav_path, always_2d=True)
    assert sr == 32000 and wav.shape == (75 * 640, 1) and np.abs(wav).max() > 0.01
    settings = json.loads(settings)
    assert settings["top_k"] == 1 and settings["codes_shape"] == [1, 4, 75]
    assert (
        settings["command"].startswith("python sample.py --model ")
        and "--prompt 'calm piano melody'" in settings["command"]
    )


def test_three_concurrent_requests(client, converted):
    """Submitted together, queued by the app, each comes back with its own duration, and with the codes
    `MusicGen.generate` samples with the request's seed and settings (those of `sample.py --seed`)."""
    durations, seeds = (0.5, 1.0, 2.0), (4, 5, 6)
    jobs = [
        client.submit("request", d, seed, 50, 0.0, 1.0, 3.0, api_name="/generate")
        for d, seed in zip(durations, seeds, strict=True)
    ]
    model = MusicGen.get_pretrained(str(converted))
    for job, duration, seed in zip(jobs, durations, seeds, strict=True):
        wav_path, codes_path, _ = job.result(timeout=300)
        assert soundfile.info(wav_path).frames == round(duration * 50) * 640
        model.set_generation_params(duration=duration, top_k=50, cfg_coef=3.0)
        np.testing.assert_array_equal(np.load(codes_path), model.generate_tokens(["request"], seed=seed))


@pytest.mark.parametrize(
    "args, message",
    [
        ((2.0, 0, 250, 2.0, 1.0, 3.0), "top_p 2.0"),
        ((1000.0, 0, 250, 0.0, 1.0, 3.0), "Value 1000.0 is greater than maximum value 300.0"),  # the slider's check
        ((1.0, 0, 250, 0.0, 0.0, 3.0), "temperature 0.0"),
        ((1.0, 0, -3, 0.0, 1.0, 3.0), "top_k -3"),
    ],
)
def test_bad_values_come_back_as_messages(client, args, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=None) as error:
        client.predict("piano", *args, api_name="/generate")
    assert message in str(error.value)


def test_request_errors(app, tmp_path):
    """What the page reports for a melody to a text model, an unreadable upload, an unknown model."""
    studio, _ = app
    text_model, melody_model = studio.sources
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    with pytest.raises(ValueError, match="text-to-music model, it takes no melody"):
        studio.generate(Request(text_model, "piano", 1.0, melody=str(broken)))
    from musicgen_jax.audio import AudioError

    with pytest.raises(AudioError, match="cannot read audio file .*broken.wav"):
        studio.generate(Request(melody_model, "piano", 1.0, melody=str(broken)))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        studio.generate(Request("nope", "piano", 1.0))
    with pytest.raises(ValueError, match=f"variations must be between 1 and {MAX_VARIATIONS}"):
        studio.generate(Request(text_model, "piano", 1.0, variations=9))


def test_images():
    """The waveform picture marks each column's sample range; the spectrogram puts a tone in its mel row."""
    t = np.arange(32000) / 32000
    wav = np.where(t < 0.5, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    image = waveform_image(wav, width=100, height=101)
    drawn = (image != 250).any(-1)
    assert drawn[25:76, 10].all() and not drawn[:20, 10].any() and not drawn[81:, 10].any()  # +-0.5 around 0
    assert drawn[50, 90] and drawn[:, 90].sum() <= 3  # silence: the zero line only
    spectrogram = spectrogram_image(wav, 32000, width=100, height=128).astype(int).sum(-1)
    import librosa

    row = 127 - int(np.argmin(np.abs(librosa.mel_frequencies(128, fmax=16000) - 440)))
    assert abs(int(np.argmax(spectrogram[:, 20])) - row) <= 2
    assert spectrogram[:, 80].max() < spectrogram[row, 20]  # the silent half is dark


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and FFMPEG) and not os.environ.get("MUSICGEN_JAX_REQUIRE_BROWSER"),
    reason="no chromium / chromedriver / ffmpeg (apt-get install chromium chromium-driver ffmpeg; .ci/run does)",
)
def test_page_in_headless_chromium(app):
    """Type a prompt, set 1.5 s, generate (played while generating: gradio streams it, encoded by ffmpeg):
    the streaming player holds about 1.5 s, then an <audio> element appears whose WAV (fetched by the
    page) holds 1.5 s at 32 kHz and that the browser loads as playable media of that duration; the
    screenshot is saved in test-artifacts/."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert CHROMIUM and CHROMEDRIVER and FFMPEG, (
        "MUSICGEN_JAX_REQUIRE_BROWSER is set, but chromium / chromedriver / ffmpeg are not on PATH"
    )
    _, url = app
    browser = _browser()
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        prompt.send_keys("calm piano melody")
        duration = browser.find_element(By.CSS_SELECTOR, "#duration input[type=number]")
        duration.clear()
        duration.send_keys("1.5\t")
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        audio = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result-0 audio[src]")))
        media_duration = browser.execute_async_script(
            "const [audio, done] = arguments;"
            "if (audio.readyState >= 1) done(audio.duration);"
            "else { audio.addEventListener('loadedmetadata', () => done(audio.duration)); audio.load(); }",
            audio,
        )
        wav_base64 = browser.execute_async_script(
            "const [src, done] = arguments; fetch(src).then(r => r.arrayBuffer()).then(b => {"
            "let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s)); });",
            audio.get_attribute("src"),
        )
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#spectrogram img")))
        live = "const d = document.querySelector('#live audio')?.duration; return Number.isFinite(d) ? d : 0"
        try:  # the streaming player's playlist grows segment by segment (slowly on a loaded machine)
            WebDriverWait(browser, 90).until(lambda b: b.execute_script(live) > 1.4)
        except TimeoutException:
            pass
        live_duration = browser.execute_script(live)
    finally:  # the page as it ended, also when a wait failed
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "app.png"))
        (ARTIFACTS / "app.html").write_text(browser.page_source)
        browser.quit()
    assert abs(media_duration - 1.5) < 0.01
    assert 1.4 < live_duration < 1.7, live_duration  # what was streamed, as AAC frames (1024 samples each)
    path = ARTIFACTS / "app.wav"
    path.write_bytes(base64.b64decode(wav_base64))
    info = soundfile.info(path)
    assert (info.format, info.samplerate, info.frames) == ("WAV", 32000, 75 * 640)


def test_help():
    result = subprocess.run(
        [sys.executable, "-m", "musicgen_jax.app", "--help"], capture_output=True, text=True, check=True
    )
    assert "/generate" in result.stdout and "--model" in result.stdout


def test_streamed_audio(app):
    """`Studio.stream`: 1.5 s arrive as 50 + 25 frames of audio, each decoded in context, close to the whole
    decode that the Result's WAV holds (same request through `generate`: the same codes)."""
    studio, _ = app
    request = Request(studio.sources[0], "calm piano melody", 1.5, seed=3, top_k=50, variations=2)
    *chunks, result = list(studio.stream(request))
    assert [c.shape for c in chunks] == [(1, 50 * 640), (1, 25 * 640)]
    whole = studio.generate(request)
    np.testing.assert_array_equal(np.load(result.codes), np.load(whole.codes))
    model = studio.model(request.model)
    decoded = model.generate_audio(np.load(result.codes))[0]
    streamed = np.concatenate(chunks, axis=-1)
    peak, hop = np.abs(decoded).max(), 50 * 640
    # the first hop, decoded without the frames after it, departs near its end only (measured: 2.4e-4 of a
    # 0.088 peak up to 62.5 ms before its end, 0.018 at it); the second, decoded with all 75 frames, is exact
    np.testing.assert_allclose(streamed[:, : hop - 2000], decoded[:, : hop - 2000], atol=0.01 * peak)
    np.testing.assert_allclose(streamed[:, hop:], decoded[:, hop:], atol=1e-6)
    assert np.linalg.norm(streamed - decoded) < 0.1 * np.linalg.norm(decoded)


def test_melody_and_continuation_requests(app, tmp_path):
    """The page's melody and continuation uploads reach `generate_with_chroma` / `generate_continuation` (the
    same codes as those calls on the same audio and seeds), and the settings name them."""
    studio, _ = app
    text_model, melody_model = studio.sources
    rng = np.random.default_rng(0)
    upload = tmp_path / "upload.wav"
    soundfile.write(upload, 0.3 * rng.standard_normal((24000, 2)).astype(np.float32), 48000)  # stereo, 48 kHz
    from musicgen_jax.audio import read_audio

    request = Request(melody_model, "80s synth pop", 0.8, seed=5, top_k=50, variations=2, melody=str(upload))
    result = studio.generate(request)
    model = studio.model(melody_model)
    melody = read_audio(upload, 32000)[0]
    _, codes = model.generate_with_chroma(["80s synth pop"] * 2, [melody] * 2, 32000, return_tokens=True, seed=[5, 6])
    np.testing.assert_array_equal(np.load(result.codes), codes)
    assert "--melody" in json.loads(result.settings.read_text())["command"]

    request = Request(text_model, "calm piano", 1.0, seed=2, top_k=50, continuation=str(upload))
    result = studio.generate(request)
    model = studio.model(text_model)
    start = read_audio(upload, 32000, 1)[0]
    _, codes = model.generate_continuation(start[None], 32000, ["calm piano"], return_tokens=True, seed=[2])
    np.testing.assert_array_equal(np.load(result.codes), codes)
    assert np.load(result.codes).shape == (1, 4, 50)
    assert len(list(studio.stream(request))) == 1  # continuations are not streamed: the Result alone


def test_results_kept_in_a_bucket(converted, gcs):
    """`--out gs://...`: each result is written to the local directory the page serves and uploaded whole
    to the bucket (`tests/gcs.py`); a missing bucket is named before any model loads."""
    from musicgen_jax import fileio

    out = f"{gcs.bucket('app-results')}/demo"
    studio = Studio([str(converted)], out)
    result = studio.generate(Request(studio.sources[0], "calm piano", 0.4, seed=1, top_k=50, variations=2))
    folder = result.settings.parent
    assert folder.parent == studio.local and not str(studio.local).startswith("gs:")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["000_calm_piano.wav", "001_calm_piano.wav", "codes.npy", "settings.json"]
    for name in files:
        assert fileio.read_bytes(f"{out}/{folder.name}/{name}") == (folder / name).read_bytes()
    with pytest.raises(ValueError, match="the bucket gs://no-such-bucket does not exist"):
        Studio([str(converted)], "gs://no-such-bucket/demo")
