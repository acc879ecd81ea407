"""A blind listening page: rate the samples of several models (or training steps) for the same prompts.

    python -m musicgen_jax.listen --samples runs/small runs/medium out/baseline --ratings ratings.sqlite
    python -m musicgen_jax.listen --samples runs/small out/baseline --ratings ratings.sqlite --summary [--csv FILE]

Each page plays one prompt's samples without their systems' names, in a random order, so that the ratings
compare the systems and not what the listener expects of them; the ratings add up to a summary per system.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import html
import io
import math
import random
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from etils import epath

from musicgen_jax.fileio import atomic_file, path, read_json, reporting, slug

RATINGS = range(1, 6)
Z95 = 1.959964  # the normal distribution's two-sided 95% quantile
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY, sample TEXT NOT NULL, system TEXT NOT NULL, "
    "prompt TEXT NOT NULL, rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5), rater TEXT, "
    "created REAL NOT NULL)"
)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One audio file: its system (model or training step), prompt text (`named`: from settings, else read
    back from the file name's slug) and grouping key."""

    path: epath.Path
    system: str
    prompt: str
    named: bool = True

    @property
    def key(self) -> str:
        return slug(self.prompt)


def _numbered(directory: epath.Path) -> list[epath.Path]:
    return sorted(p for p in directory.glob("[0-9][0-9][0-9]_*.wav") if p.is_file())


def _complete_step(folder: epath.Path) -> bool:
    """A run's `samples/STEP/` folder whose `settings.json`, written last, is there."""
    return folder.is_dir() and folder.name.isdigit() and (folder / "settings.json").is_file()


def find_samples(directories: list[str | epath.Path]) -> list[Sample]:
    """The samples of `directories` (`--samples`: local paths or URLs, e.g. a run in a bucket); ValueError for
    a directory with none or one that cannot be read. A `train.py` run's `samples/STEP/` folders (or such a
    `samples` folder itself) are one system per step, the prompts read from their `settings.json`; any other
    directory of `NNN_<slug>.wav` files (what `sample.py` writes) is one system, its prompts known by their
    slugs. Samples are grouped by prompt (`fileio.slug`, `Sample.key`)."""
    samples = []
    for directory in map(path, directories):
        with reporting(directory):
            found = _samples_of(directory)
        if not found:
            raise ValueError(f"{directory}: no samples (NNN_<slug>.wav files, or a run's samples/STEP/ folders)")
        samples += found
    return samples


def _samples_of(directory: epath.Path) -> list[Sample]:
    root = directory / "samples" if (directory / "samples").is_dir() else directory
    steps = sorted((p for p in root.iterdir() if _complete_step(p)), key=lambda p: int(p.name)) if root.is_dir() else []
    found = []
    for folder in steps or [root]:
        prompts = []
        if (folder / "settings.json").is_file():
            prompts = read_json(folder / "settings.json").get("prompts", [])
        system = f"{directory.name} step {folder.name}" if steps else directory.name
        for file in _numbered(folder):
            index, _, rest = file.stem.partition("_")
            named = int(index) < len(prompts)
            found.append(Sample(file, system, prompts[int(index)] if named else rest.replace("_", " "), named))
    return found


def summary(connection: sqlite3.Connection) -> list[dict]:
    """Per system (sorted by name): {"system", "count", "mean", "low", "high"} of its ratings; the interval
    is the 95% one (mean +- 1.96 standard errors, the normal approximation), None below two ratings. The page's
    `/summary` (and `--summary`); `/summary.csv` gives the same as CSV (`summary_csv`)."""
    rows = connection.execute("SELECT system, rating FROM ratings ORDER BY system").fetchall()
    by_system: dict[str, list[int]] = {}
    for system, rating in rows:
        by_system.setdefault(system, []).append(rating)
    out = []
    for system, ratings in by_system.items():
        n, mean = len(ratings), sum(ratings) / len(ratings)
        half = None if n < 2 else Z95 * math.sqrt(sum((r - mean) ** 2 for r in ratings) / (n - 1) / n)
        out.append(
            {
                "system": system,
                "count": n,
                "mean": mean,
                "low": None if half is None else mean - half,
                "high": None if half is None else mean + half,
            }
        )
    return out


def summary_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["system", "count", "mean", "low", "high"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class ListeningApp:
    """The page's state: the samples grouped by prompt and the ratings database (one connection per call):
    the SQLite file `ratings`, table `ratings`."""

    def __init__(self, samples: list[Sample], ratings: Path, seed: int | None = None):
        self.samples = samples
        self.groups: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            self.groups.setdefault(sample.key, []).append(i)
        self.ratings = ratings
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        with self.database() as connection:
            connection.execute(SCHEMA)

    @contextlib.contextmanager
    def database(self):
        """A connection to the ratings file, committed and closed after the block (one per request)."""
        connection = sqlite3.connect(self.ratings, timeout=30)
        try:
            with connection:
                yield connection
        finally:
            connection.close()

    def page(self, key: str | None) -> str:
        """The rating form of one prompt (`key`, or a random one): its samples from every system that has it,
        in a random order under the letters A, B, ..., without their systems' names, each rated 1 to 5."""
        with self.lock:
            key = key if key in self.groups else self.random.choice(sorted(self.groups))
            order = self.random.sample(self.groups[key], len(self.groups[key]))
        group = [self.samples[i] for i in order]
        prompt = html.escape(next((s.prompt for s in group if s.named), group[0].prompt))
        rows = []
        for letter, index in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", order):
            choices = " ".join(
                f'<label><input type="radio" name="s{index}" value="{r}" required> {r}</label>' for r in RATINGS
            )
            rows.append(
                f'<tr><td>{letter}</td><td><audio controls preload="none" src="/audio/{index}"></audio></td>'
                f"<td>{choices}</td></tr>"
            )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>musicgen-jax listening test</title></head>"
            f"<body><h1>How good is each sample for this prompt?</h1><p><b>{prompt}</b></p>"
            f"<p>1 = bad, 5 = excellent. The samples are shown in a random order, without their models.</p>"
            f'<form method="post" action="/rate"><input type="hidden" name="key" value="{html.escape(key)}">'
            f'<p>Your name (optional): <input name="rater"></p><table>{"".join(rows)}</table>'
            f'<p><button type="submit">Submit and go to the next prompt</button></p></form>'
            f'<p><a href="/summary">Summary</a> · <a href="/summary.csv">CSV</a></p></body></html>'
        )

    def rate(self, form: dict[str, list[str]]) -> int:
        """Store the ratings of a submitted form (fields s<index> = 1..5); ValueError for a bad field.
        Returns how many were stored."""
        key = form.get("key", [""])[0]
        rater = form.get("rater", [""])[0][:200] or None
        rows = []
        for name, values in form.items():
            if not name.startswith("s"):
                continue
            index, value = name[1:], values[0]
            if not index.isdigit() or int(index) not in self.groups.get(key, []):
                raise ValueError(f"no sample {name} for this prompt")
            if not value.isdigit() or int(value) not in RATINGS:
                raise ValueError(f"rating {value!r} is not 1 to 5")
            sample = self.samples[int(index)]
            rows.append((str(sample.path), sample.system, sample.prompt, int(value), rater, time.time()))
        if not rows:
            raise ValueError("no ratings in the form")
        with self.database() as connection:
            connection.executemany(
                "INSERT INTO ratings (sample, system, prompt, rating, rater, created) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def summary_page(self) -> str:
        with self.database() as connection:
            rows = summary(connection)

        def cell(value):
            return "" if value is None else f"{value:.2f}"

        body = "".join(
            f"<tr><td>{html.escape(r['system'])}</td><td>{r['count']}</td><td>{cell(r['mean'])}</td>"
            f"<td>{cell(r['low'])} to {cell(r['high'])}</td></tr>"
            for r in rows
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>Summary</title></head><body>"
            f"<h1>Ratings per system</h1><table><tr><th>system</th><th>count</th><th>mean</th>"
            f"<th>95% interval</th></tr>{body}</table><p><a href='/'>Rate more</a></p></body></html>"
        )


def make_handler(app: ListeningApp):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            if url.path == "/":
                return self._send(200, app.page(parse_qs(url.query).get("prompt", [None])[0]).encode())
            if url.path.startswith("/audio/") and url.path[7:].isdigit() and int(url.path[7:]) < len(app.samples):
                return self._send(200, app.samples[int(url.path[7:])].path.read_bytes(), "audio/wav")
            if url.path == "/summary":
                return self._send(200, app.summary_page().encode())
            if url.path == "/summary.csv":
                with app.database() as connection:
                    return self._send(200, summary_csv(summary(connection)).encode(), "text/csv; charset=utf-8")
            return self._send(404, b"not found", "text/plain")

        def do_POST(self):  # noqa: N802
            if urlparse(self.path).path != "/rate":
                return self._send(404, b"not found", "text/plain")
            length = int(self.headers.get("Content-Length", 0))
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            try:
                app.rate(form)
            except ValueError as e:
                return self._send(400, f"<p>Not saved: {html.escape(str(e))}</p><p><a href='/'>Back</a></p>".encode())
            self.send_response(303)
            self.send_header("Location", "/")
            self.end_headers()

        def log_message(self, format, *args):  # noqa: A002 - quiet, as a test server
            pass

    return Handler


def serve(app: ListeningApp, host: str, port: int) -> ThreadingHTTPServer:
    """A started (background thread) HTTP server for `app`; `server.server_address` has the bound port."""
    server = ThreadingHTTPServer((host, port), make_handler(app))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m musicgen_jax.listen",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--samples", nargs="+", required=True, help="directories of samples (local paths or URLs, e.g. gs://)"
    )
    parser.add_argument("--ratings", type=Path, default=Path("ratings.sqlite"), help="the SQLite file of ratings")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, help="of the prompts' and samples' random order (default: random)")
    parser.add_argument("--summary", action="store_true", help="print the summary table and exit")
    parser.add_argument("--csv", help="with --summary: write it as CSV to this file (or URL)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        app = ListeningApp(find_samples(args.samples), args.ratings, args.seed)
        if args.summary:
            with app.database() as connection:
                text = summary_csv(summary(connection))
            if args.csv:
                with atomic_file(args.csv) as tmp:
                    tmp.write_text(text)
            print(text, end="")
            return 0
    except (OSError, ValueError, sqlite3.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server = serve(app, args.host, args.port)
    print(f"{len(app.samples)} samples, {len(app.groups)} prompts: http://{args.host}:{server.server_address[1]}/")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
