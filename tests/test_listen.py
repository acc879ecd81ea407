"""The listening page (`python -m musicgen_jax.listen`), served on loopback and driven over HTTP as a
browser's form posts: the samples of a training run's steps and of a `sample.py` folder grouped by prompt,
shown blind, the posted ratings stored in SQLite, and the summary's counts, means and 95% intervals equal
to a direct computation from the stored ratings."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import statistics
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from musicgen_jax.apps import listen
from musicgen_jax.audio import write_audio

PROMPTS = ["calm piano melody", "Energetic rock song!"]


@pytest.fixture
def sample_dirs(tmp_path):
    """A run with samples at steps 10 and 20 (settings.json naming the prompts) and a sample.py folder."""
    wav = (0.1 * np.sin(np.linspace(0, 200, 3200))).astype(np.float32)[None]
    run, baseline = tmp_path / "run", tmp_path / "baseline"
    for step in (10, 20):
        folder = run / "samples" / str(step)
        for i, prompt in enumerate(PROMPTS):
            write_audio(folder / f"{i:03d}_{listen.slug(prompt)}.wav", wav, 32000, strategy="none")
        (folder / "settings.json").write_text(json.dumps({"step": step, "prompts": PROMPTS}))
    for i, prompt in enumerate(PROMPTS):
        write_audio(baseline / f"{i:03d}_{listen.slug(prompt)}.wav", wav, 32000, strategy="none")
    return run, baseline


def test_a_step_folder_counts_once_its_settings_are_written(sample_dirs):
    """A run's `samples/STEP/` folder without `settings.json` (written last) is a step still being written."""
    run, _ = sample_dirs
    assert {s.system for s in listen.find_samples([run])} == {"run step 10", "run step 20"}
    (run / "samples" / "20" / "settings.json").unlink()
    assert {s.system for s in listen.find_samples([run])} == {"run step 10"}


def fetch(url: str, data: dict | None = None) -> tuple[int, str]:
    body = None if data is None else urllib.parse.urlencode(data).encode()
    try:
        with urllib.request.urlopen(url, body, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_ratings_posted_through_the_page_land_in_sqlite_and_the_summary(sample_dirs, tmp_path):
    ratings = tmp_path / "ratings.sqlite"
    app = listen.ListeningApp(listen.find_samples(list(sample_dirs)), ratings, seed=0)
    assert sorted({s.system for s in app.samples}) == ["baseline", "run step 10", "run step 20"]
    assert len(app.groups) == 2 and all(len(g) == 3 for g in app.groups.values())
    server = listen.serve(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        given = {}
        rng = np.random.default_rng(0)
        for _ in range(4):
            for prompt in PROMPTS:
                status, page = fetch(f"{base}/?prompt={listen.slug(prompt)}")
                assert status == 200 and prompt in page
                assert not any(s.system in page for s in app.samples)  # blind: no system names
                names = sorted(set(re.findall(r'name="(s\d+)"', page)))
                assert len(names) == 3
                form = {"key": listen.slug(prompt), "rater": "tester", **{n: int(rng.integers(1, 6)) for n in names}}
                assert fetch(f"{base}/rate", form)[0] == 200  # 303 to the next page
                for name in names:
                    given.setdefault(app.samples[int(name[1:])].system, []).append(form[name])
        status, audio = 0, b""
        with urllib.request.urlopen(f"{base}/audio/0", timeout=30) as response:
            status, audio = response.status, response.read()
        assert status == 200 and audio[:4] == b"RIFF"
        bad = fetch(f"{base}/rate", {"key": listen.slug(PROMPTS[0]), "s0": 9})
        assert bad[0] == 400 and "is not 1 to 5" in bad[1]
        status, text = fetch(f"{base}/summary.csv")
    finally:
        server.shutdown()
    with sqlite3.connect(ratings) as connection:
        stored = connection.execute("SELECT system, rating, rater FROM ratings").fetchall()
    assert len(stored) == 24 and {r[2] for r in stored} == {"tester"}
    rows = {r["system"]: r for r in csv.DictReader(io.StringIO(text))}
    assert sorted(rows) == sorted(given)
    for system, values in given.items():
        mean, half = statistics.mean(values), 1.96 * statistics.stdev(values) / len(values) ** 0.5
        assert int(rows[system]["count"]) == len(values) == 8
        assert float(rows[system]["mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(rows[system]["low"]) == pytest.approx(mean - half, abs=1e-4)
        assert float(rows[system]["high"]) == pytest.approx(mean + half, abs=1e-4)


def test_cli_summary_and_errors(sample_dirs, tmp_path, capsys):
    ratings, out = tmp_path / "ratings.sqlite", tmp_path / "summary.csv"
    app = listen.ListeningApp(listen.find_samples(list(sample_dirs)), ratings, seed=1)
    key = listen.slug(PROMPTS[1])
    app.rate({"key": [key], **{f"s{i}": ["4"] for i in app.groups[key]}})
    assert (
        listen.main(["--samples", *map(str, sample_dirs), "--ratings", str(ratings), "--summary", "--csv", str(out)])
        == 0
    )
    assert out.read_text() == capsys.readouterr().out and out.read_text().count("\n") == 4
    assert listen.main(["--samples", str(tmp_path / "empty_missing")]) == 2
    assert "no samples" in capsys.readouterr().err


def test_samples_in_a_bucket(sample_dirs, gcs, tmp_path, capsys):
    """`--samples` URLs (a run and a sample.py folder in a bucket, `tests/gcs.py`): the systems, prompts and
    audio of the local copies; the summary CSV written to a URL; a missing bucket is one error line."""
    from musicgen_jax import fileio
    from musicgen_jax.fileio import upload_tree

    bucket = gcs.bucket("listening")
    urls = [f"{bucket}/{d.name}" for d in sample_dirs]
    for directory, url in zip(sample_dirs, urls, strict=True):
        upload_tree(directory, url)
    local, remote = listen.find_samples(list(sample_dirs)), listen.find_samples(urls)
    assert [(s.system, s.prompt, s.named) for s in remote] == [(s.system, s.prompt, s.named) for s in local]
    assert all(str(s.path).startswith(bucket) for s in remote)
    assert [s.path.read_bytes() for s in remote] == [s.path.read_bytes() for s in local]
    ratings, out = tmp_path / "ratings.sqlite", f"{bucket}/summary.csv"
    assert listen.main(["--samples", *urls, "--ratings", str(ratings), "--summary", "--csv", out]) == 0
    assert fileio.read_text(out) == capsys.readouterr().out
    assert listen.main(["--samples", "gs://no-such-bucket/run"]) == 2
    assert capsys.readouterr().err == "error: cannot read gs://no-such-bucket/run: not found\n"
