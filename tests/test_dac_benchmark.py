"""The DAC benchmark (`python -m benchmarks.dac`) at a tiny size: both sections measure, agree with descript's
`dac` package, and come out as well-formed RESULTS.md sections, so the real-size run (minutes) is not the first
time its code runs."""

from __future__ import annotations

import pytest

from benchmarks import dac

# descript's code uses torch's old weight_norm and torch.jit.script, both deprecated in torch 2.13
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm`", "ignore:`torch.jit.script`")


def table(text: str) -> list[dict[str, str]]:
    """The rows of a section's table, each as {column title: cell}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)) for line in lines[1:]]


def well_formed(text: str, title: str) -> list[dict[str, str]]:
    """Check a section's layout (title, command, the machine's lines, a table whose numbers are finite); its rows."""
    lines = text.splitlines()
    assert lines[0] == title and "(44.1 kHz, tiny test size, random weights)" in title
    assert lines[2] == "Command: `python -m benchmarks.dac --config tiny`"
    for fact in ("- Date: ", "- Machine: ", "- Versions: ", "- Machine load: ", "- During the run: "):
        assert any(line.startswith(fact) for line in lines), fact
    assert "descript-audio-codec 1.0.0" in text and "100.0000% of" in text
    rows = table(text)
    for row in rows:
        for value in list(row.values())[1:]:
            assert float(value.split(" (min ")[0]) >= 0, row
    return rows


@pytest.mark.slow
def test_dac_benchmark_sections_at_tiny_size(tmp_path):
    """Codec (0.2 s, 1 run) and preparation (2 clips of 0.4 s, 17-frame segments) with the tiny config: the same
    codes on both sides, and each section as `--write` would publish it (not written: `--write` refuses tiny)."""
    config, titles = dac.CONFIGS["tiny"], dac.titles("tiny")
    command = "python -m benchmarks.dac --config tiny"

    res = dac.run_codec(config, seconds=0.2, runs=1)
    assert res["codes_equal"] == 1.0 and res["codes_shape"] == (1, 2, 18) and res["audio_rel_l2"] < 1e-4
    rows = well_formed(dac.report_codec(res, command, titles["codec"]), titles["codec"])
    assert [row["direction"] for row in rows] == ["encode", "decode"]
    assert set(rows[0]) == set(dac.COLUMNS)

    res = dac.run_prepare(config, files=2, seconds=0.4, batch_size=2, segment_seconds=0.2, length_step=0.1)
    assert res["codes_equal"] == 1.0 and res["lengths"] == {17: 4} and res["codes_total"] == 4 * 2 * 17
    assert res["first"]["compiled"] in (1, None) and res["second"]["compiled"] in (0, None)
    text = dac.report_prepare(res, command, titles["prepare"])
    rows = well_formed(text, titles["prepare"])
    assert [row["audio s"] for row in rows] == ["0.8"] * 3
    assert "4 segments: 4 of 17 frames (0.197 s)" in text and "JAX encoder compilations" in text


def test_write_refuses_the_tiny_config(capsys):
    """RESULTS.md holds the real-size model only: `--write --config tiny` stops before any work."""
    with pytest.raises(SystemExit):
        dac.main(["--write", "--config", "tiny"])
    assert "--write records the real-size model only" in capsys.readouterr().err
