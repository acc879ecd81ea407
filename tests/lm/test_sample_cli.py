"""End to end: `sample.py`, `convert_torch_weights.py` and the `MusicGen` API on a tiny transformers
MusicGen checkpoint (tests/lm/conftest.py), against transformers' `generate` for greedy tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.cli import convert as convert_torch_weights
from musicgen_jax.cli import sample
from musicgen_jax.components import MODEL_FILE, MODEL_VERSION, load_converted, save_converted
from musicgen_jax.convert.pretrained import convert as convert_checkpoint
from musicgen_jax.musicgen import MusicGen, disable_compilation_cache, enable_compilation_cache
from musicgen_jax.sharding import make_mesh
from tests.codec.conftest import tiny_hf_model
from tests.lm.test_generate import hf_generate_codes

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


PROMPTS = ["calm piano melody", "Energetic rock song with electric guitars and drums!"]  # 4 and 12 tokens


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_greedy_codes_equal_transformers_through_sample_py(request, hf_tokenizer, channels, tmp_path):
    """Two prompts of different lengths in one padded batch, 75 frames (past the first 64-position KV-cache
    block), each equal to transformers' greedy `generate` for that prompt alone; stereo writes 2 channels."""
    model, directory = request.getfixturevalue("hf_musicgen" if channels == 1 else "hf_musicgen_stereo")
    codes_file, out = tmp_path / "codes.npy", tmp_path / "songs"
    assert (
        sample.main(
            [
                "--model",
                str(directory),
                "--prompt",
                PROMPTS[0],
                "--prompt",
                PROMPTS[1],
                "--duration",
                "1.5",
                "--top-k",
                "1",
                "--cfg-coef",
                "3",
                "--save-codes",
                str(codes_file),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    codes = np.load(codes_file)
    assert codes.shape == (2, 4 * channels, 75)
    for row, prompt in enumerate(PROMPTS):
        batch = hf_tokenizer([prompt])
        expected = hf_generate_codes(model, np.array(batch["input_ids"]), np.array(batch["attention_mask"]), 75)
        assert len(np.unique(expected)) > 30  # not a degenerate sequence
        np.testing.assert_array_equal(codes[row], expected[0], err_msg=prompt)
    assert (codes[0] != codes[1]).mean() > 0.5  # the text decides the tokens
    wav, sr = soundfile.read(sorted(out.iterdir())[0], always_2d=True)
    assert sr == 32000 and wav.shape == (75 * 640, channels)


def test_converted_directory_and_batching(hf_musicgen, tmp_path, model_cache):
    _, directory = hf_musicgen
    converted = tmp_path / "converted"
    assert convert_torch_weights.main([str(directory), str(converted)]) == 0
    assert {p.name for p in converted.iterdir()} == {"musicgen_jax.json", "codec", "text", "lm"}
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("calm piano\n\nlofi hip hop beat\nepic brass\n")
    args = ["--model", str(converted), "--prompts-file", str(prompts), "--duration", "0.4", "--top-k", "20"]
    assert (
        sample.main(
            args
            + [
                "--out",
                str(tmp_path / "a"),
                "--save-codes",
                str(tmp_path / "a.npy"),
                "--format",
                "flac",
                "--strategy",
                "none",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "000_calm_piano.flac",
        "001_lofi_hip_hop_beat.flac",
        "002_epic_brass.flac",
    ]
    assert (
        sample.main(args + ["--out", str(tmp_path / "b"), "--save-codes", str(tmp_path / "b.npy"), "--batch-size", "2"])
        == 0
    )
    # prompt i uses seed + i whatever the batching: sampled codes are identical
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert not model_cache.exists()  # a converted directory is used in place


def test_checkpoints_on_a_bucket_are_read_from_a_local_copy(hf_musicgen, converted, gcs, tmp_path, model_cache):
    """A transformers checkpoint in a bucket (`tests/gcs.py`'s emulator) and its conversion written there by
    `convert_torch_weights.py` sample the local converted directory's greedy codes; each is copied once into
    the cache (`fileio.mirror`), then reused."""
    from musicgen_jax import fileio
    from musicgen_jax.fileio import upload_tree

    bucket = gcs.bucket("checkpoints")
    upload_tree(hf_musicgen[1], f"{bucket}/hf")
    assert convert_torch_weights.main([str(hf_musicgen[1]), f"{bucket}/converted"]) == 0
    assert fileio.read_json(f"{bucket}/converted/{MODEL_FILE}")["version"] == MODEL_VERSION
    args = ["--prompt", "calm piano", "--duration", "0.2", "--top-k", "1"]
    codes = []
    for i, model in enumerate((str(converted), f"{bucket}/hf", f"{bucket}/converted")):
        out = tmp_path / f"{i}.npy"
        assert sample.main(["--model", model, *args, "--out", str(tmp_path / str(i)), "--save-codes", str(out)]) == 0
        codes.append(np.load(out))
    np.testing.assert_array_equal(codes[1], codes[0])
    np.testing.assert_array_equal(codes[2], codes[0])
    # a source in a bucket wherever a hub id is: here a codec (the MusicGen checkpoint's), through `resolve`
    from musicgen_jax.convert.codec_loader import load_codec

    remote, local = load_codec(f"{bucket}/hf"), load_codec(str(hf_musicgen[1]))
    for a, b in zip(jax.tree.leaves(remote.params), jax.tree.leaves(local.params), strict=True):
        np.testing.assert_array_equal(a, b)
    copy = fileio.mirror(f"{bucket}/converted")
    assert sorted(p.name for p in copy.iterdir()) == sorted([".listing.json", *(p.name for p in converted.iterdir())])
    stamps = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    assert fileio.mirror(f"{bucket}/converted") == copy
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == stamps  # nothing fetched again


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--model", "{bucket}/nothing"], "cannot read {bucket}/nothing: not found"),
        (["--prompts-file", "{bucket}/none.txt"], "--prompts-file: cannot read {bucket}/none.txt: not found"),
        (["--out", "gs://no-such-bucket/o"], "cannot write gs://no-such-bucket/o/000_x.wav: not found"),
    ],
)
def test_a_bad_url_is_one_error_line_naming_it(converted, gcs, capsys, extra, named):
    bucket = gcs.bucket("sample-errors")
    args = ["--model", str(converted), "--prompt", "x", "--duration", "0.1"] + [a.format(bucket=bucket) for a in extra]
    assert sample.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {named.format(bucket=bucket)}"]


def _set_version(directory, version: int) -> None:
    meta_file = directory / MODEL_FILE
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "version": version}))


def test_converted_directory_of_another_version(hf_musicgen, tmp_path, model_cache):
    """Version 1 stored LM kernels [in, out]: refused by name, never loaded transposed; a stale cache
    entry is converted again; a corrupt or missing file is one error naming it."""
    _, directory = hf_musicgen
    converted = tmp_path / "converted"
    save_converted(convert_checkpoint(directory), converted)
    _set_version(converted, 1)
    with pytest.raises(CheckpointError, match="format version 1, this one reads 2"):
        load_converted(converted)
    MusicGen.get_pretrained(str(directory))
    (entry,) = model_cache.iterdir()
    _set_version(entry, 1)
    MusicGen.get_pretrained(str(directory))
    assert json.loads((entry / MODEL_FILE).read_text())["version"] == MODEL_VERSION == 2
    # a torn or missing file of a converted directory: one CheckpointError naming it
    _set_version(converted, MODEL_VERSION)
    (converted / "lm" / "config.json").write_text('{"format": ')
    with pytest.raises(CheckpointError, match=f"^{converted / 'lm' / 'config.json'} is not valid JSON"):
        load_converted(converted)
    (converted / "lm" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=f"^cannot read {converted / 'lm' / 'config.json'}: not found$"):
        load_converted(converted)


def test_api_converts_once_and_generates(hf_musicgen, model_cache):
    _, directory = hf_musicgen
    model = MusicGen.get_pretrained(str(directory))
    assert len(list(model_cache.iterdir())) == 1  # converted once, then cached
    MusicGen.get_pretrained(str(directory))
    assert len(list(model_cache.iterdir())) == 1
    model.set_generation_params(top_k=1, duration=0.6)
    audio, tokens = model.generate(["calm piano"], return_tokens=True)
    assert tokens.shape == (1, 4, 30) and audio.shape == (1, 1, 30 * 640)
    unconditional = model.generate_unconditional(2)
    assert unconditional.shape == (2, 1, 30 * 640)


def test_greedy_continuation_equals_transformers(hf_musicgen, converted, hf_tokenizer):
    """`generate_continuation` of two 0.4 s audio prompts (20 frames, prefilled in one call) with two texts of
    different lengths in one batch, to 75 frames: each row equal to transformers' greedy `generate` with that
    audio prompt (`input_values`) and text alone; the output starts with the prompt's own codes."""
    reference, _ = hf_musicgen
    model = MusicGen.get_pretrained(str(converted))
    model.set_generation_params(top_k=1, duration=1.5)
    audio = np.random.default_rng(0).normal(0.0, 0.1, (2, 1, 20 * 640)).astype(np.float32)
    _, codes = model.generate_continuation(audio, 32000, PROMPTS, return_tokens=True)
    assert codes.shape == (2, 4, 75)
    np.testing.assert_array_equal(codes[:, :, :20], np.asarray(model.codec.encode(audio)))
    for row, prompt in enumerate(PROMPTS):
        batch = hf_tokenizer([prompt])
        expected = hf_generate_codes(
            reference,
            np.array(batch["input_ids"]),
            np.array(batch["attention_mask"]),
            75,
            input_values=audio[row : row + 1],
        )
        np.testing.assert_array_equal(codes[row], expected[0], err_msg=prompt)


def test_streamed_tokens_equal_transformers_and_generation(hf_musicgen, converted, hf_tokenizer):
    """`MusicGen.stream_tokens`: greedy, frame by frame, transformers' greedy `generate` codes for each of two
    prompts of one padded batch; sampled with a seed per row, `generate_tokens`' codes; one window at most."""
    model = MusicGen.get_pretrained(str(converted))
    model.set_generation_params(top_k=1, duration=0.6)
    frames = list(model.stream_tokens(PROMPTS))
    assert len(frames) == 30 and frames[0].shape == (2, 4, 1)
    for row, prompt in enumerate(PROMPTS):
        batch = hf_tokenizer([prompt])
        ids, mask = np.array(batch["input_ids"]), np.array(batch["attention_mask"])
        expected = hf_generate_codes(hf_musicgen[0], ids, mask, 30)
        np.testing.assert_array_equal(np.concatenate(frames, axis=-1)[row], expected[0], err_msg=prompt)
    model.set_generation_params(top_k=50, duration=0.6)
    np.testing.assert_array_equal(
        np.concatenate(list(model.stream_tokens(PROMPTS, seed=[3, 9])), axis=-1),
        model.generate_tokens(PROMPTS, seed=[3, 9]),
    )
    model.set_generation_params(duration=31)
    with pytest.raises(ValueError, match="streaming generates up to 30 s"):
        next(model.stream_tokens(PROMPTS))


def test_windowed_extension_prompts_each_window_with_the_previous_tail(converted):
    """Past max_duration, the windows of audiocraft's `MusicGen.generate`: here 25-frame windows advancing by 15
    frames over 65 (no length divides another). The first window is a plain generation; each later window, starting at
    15, 30, 45, holds a greedy continuation of the previous window's last 10 frames, the last one cut to
    what remains."""
    model = MusicGen.get_pretrained(str(converted))
    model.max_duration = 0.5
    model.set_generation_params(top_k=1, duration=1.3, extend_stride=0.3)
    long = model.generate_tokens(["calm piano"])
    assert long.shape == (1, 4, 65)
    model.max_duration = 30.0
    window, stride, total = 25, 15, 65
    model.set_generation_params(top_k=1, duration=window / 50)
    np.testing.assert_array_equal(long[:, :, :window], model.generate_tokens(["calm piano"]))
    for start in range(stride, total - (window - stride), stride):
        end = min(start + window, total)
        model.set_generation_params(top_k=1, duration=(end - start) / 50)
        expected = model.generate_tokens(["calm piano"], long[:, :, start : start + window - stride])
        np.testing.assert_array_equal(long[:, :, start:end], expected, err_msg=f"window at frame {start}")


def test_mesh_argument(hf_musicgen):
    """`get_pretrained(mesh=...)` places the LM by the logical rules and gives the same tokens (a
    one-device mesh here; 8 devices and two processes: tests/lm/test_sharding.py)."""
    _, directory = hf_musicgen
    plain, meshed = MusicGen.get_pretrained(str(directory)), MusicGen.get_pretrained(str(directory), mesh=make_mesh())
    kernel = meshed.lm_params["params"]["layers_0"]["fc1"]["kernel"]
    assert kernel.sharding.mesh.axis_names == ("data", "fsdp", "tensor")
    for model in (plain, meshed):
        model.set_generation_params(top_k=5, duration=0.4)
    np.testing.assert_array_equal(
        plain.generate_tokens(["calm piano", "rock"], seed=3), meshed.generate_tokens(["calm piano", "rock"], seed=3)
    )


def test_bad_inputs(hf_musicgen, tmp_path, capsys):
    _, directory = hf_musicgen
    assert sample.main(["--model", str(directory), "--prompt", "x", "--duration", "-1"]) == 2
    assert "--duration must be positive" in capsys.readouterr().err
    assert sample.main(["--model", str(directory)]) == 2
    assert "no prompts" in capsys.readouterr().err
    for mesh, message in (
        ("model=2", "'model' is not one of data, fsdp, tensor"),
        ("data=x", "must be an integer"),
        ("data=1,tensor=2", "needs 2 devices, there are 1"),
    ):
        assert sample.main(["--model", str(directory), "--prompt", "x", "--mesh", mesh]) == 2
        assert message in capsys.readouterr().err, mesh
    codec_only = tmp_path / "encodec"
    tiny_hf_model().save_pretrained(codec_only)
    assert sample.main(["--model", str(codec_only), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "state_dict.bin and compression_state_dict.bin" in err and "point --model at local files" in err
    model = MusicGen.get_pretrained(str(directory))
    with pytest.raises(ValueError, match="non-empty list of descriptions"):
        model.generate([])
    with pytest.raises(ValueError, match="duration must be positive"):
        model.set_generation_params(duration=0)


def _sample_process(directory, tmp_path, name: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """sample.py in a fresh process (the persistent cache is process-wide state), logging JAX's persistent
    cache hits and misses; every program is eligible for the cache (the tiny model compiles under 1 s)."""
    env = {
        **os.environ,
        "JAX_EXPLAIN_CACHE_MISSES": "1",
        "JAX_LOG_COMPILES": "1",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **env,
    }
    result = subprocess.run(
        [
            sys.executable,
            sample.__file__,
            "--model",
            str(directory),
            "--prompt",
            "calm piano",
            "--duration",
            "0.4",
            "--top-k",
            "20",
            "--out",
            str(tmp_path / f"{name}.wav"),
            "--save-codes",
            str(tmp_path / f"{name}.npy"),
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


DECODE_LOOP = "jit__run_steps"  # the module name JAX logs for `sampling._run_steps`


def test_compilation_cache_serves_the_decode_loop(hf_musicgen, gcs, tmp_path, monkeypatch):
    """A second sample.py process (progress bar on, as always in sample.py) loads every program from the
    persistent cache, the decode loop included: JAX logs a hit for it and no persistent-cache miss at all.
    The directory named by --compilation-cache wins over JAX_COMPILATION_CACHE_DIR. Both live in a bucket
    (`tests/gcs.py`), as a pod's hosts share them: the compiled programs (JAX writes them through
    etils.epath) and `$MUSICGEN_JAX_CACHE`, into which the first process converts the PyTorch checkpoint;
    later loads read the bucket's conversion instead of converting again."""
    from musicgen_jax import fileio, musicgen

    bucket = gcs.bucket("shared-cache")
    cache, xla, ignored = f"{bucket}/musicgen", f"{bucket}/xla", tmp_path / "jax_env_dir"
    flags = ("--compilation-cache", xla)
    first = _sample_process(
        hf_musicgen[1], tmp_path, "a", *flags, MUSICGEN_JAX_CACHE=cache, JAX_COMPILATION_CACHE_DIR=str(ignored)
    )
    assert f"compiled programs cached in {xla}" in first.stdout
    assert f"PERSISTENT COMPILATION CACHE MISS for '{DECODE_LOOP}'" in first.stderr
    assert "Not writing persistent cache entry" not in first.stderr  # e.g. "because it uses host callbacks"
    assert not ignored.exists() and any(DECODE_LOOP in p.name for p in fileio.path(xla).iterdir())
    second = _sample_process(hf_musicgen[1], tmp_path, "b", *flags, MUSICGEN_JAX_CACHE=cache)
    assert f"Persistent compilation cache hit for '{DECODE_LOOP}'" in second.stderr
    assert "PERSISTENT COMPILATION CACHE MISS" not in second.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    monkeypatch.setenv("MUSICGEN_JAX_CACHE", cache)
    entry = musicgen._cache_entry(str(hf_musicgen[1]), "auto")
    assert os.fspath(entry).startswith(cache) and fileio.read_json(entry / MODEL_FILE)["version"] == MODEL_VERSION
    expected = musicgen.convert_checkpoint(str(hf_musicgen[1]))
    monkeypatch.setattr(musicgen, "convert_checkpoint", None)  # converting again would fail
    monkeypatch.setenv("HOME", str(tmp_path))  # the local copy goes to ~/.cache/musicgen_jax/urls
    loaded = musicgen.load_components(str(hf_musicgen[1]))
    for a, b in zip(jax.tree.leaves(loaded.lm_params), jax.tree.leaves(expected.lm_params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / ".cache" / "musicgen_jax" / "urls").is_dir()


def test_no_compilation_cache_keeps_nothing(converted, tmp_path, model_cache):
    """--no-compilation-cache compiles from scratch and writes no cache entry, even where
    JAX_COMPILATION_CACHE_DIR names a directory."""
    env_dir = tmp_path / "jax_env_dir"
    result = _sample_process(converted, tmp_path, "a", "--no-compilation-cache", JAX_COMPILATION_CACHE_DIR=str(env_dir))
    assert "cached in" not in result.stdout and "Persistent compilation cache hit" not in result.stderr
    assert not env_dir.exists() and not (model_cache / "xla").exists()


@pytest.fixture
def jax_cache_config():
    """JAX's cache settings restored after the test (enable_compilation_cache changes them process-wide)."""
    saved = jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir
    jax.config.update("jax_enable_compilation_cache", True)
    yield
    jax.config.update("jax_enable_compilation_cache", saved[0])
    jax.config.update("jax_compilation_cache_dir", saved[1])


def test_compilation_cache_directory_precedence(jax_cache_config, tmp_path, model_cache):
    """As the README states: an explicit directory, else the one set through JAX, else
    $MUSICGEN_JAX_CACHE/xla; None once disabled."""
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compilation_cache() == model_cache / "xla"
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "set_through_jax"))
    assert enable_compilation_cache() == tmp_path / "set_through_jax"
    assert enable_compilation_cache(tmp_path / "explicit") == tmp_path / "explicit"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "explicit")
    disable_compilation_cache()
    assert enable_compilation_cache(tmp_path / "explicit") is None


def test_help():
    for script in ("sample.py", "convert_torch_weights.py"):
        result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage" in result.stdout
