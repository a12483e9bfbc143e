from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mitigate.reports import evaluate, figures, writer
from mitigate.reports.markdown import markdown_to_html, md_plots
from mitigate.reports.writer import MANIFEST, Plot, read_manifest, staged, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _md(title: str):
    return lambda drawn: f"# {title}\n\n{md_plots(drawn)}\n"


def _plots(evaluate_report):
    return [Plot("lines.png", "rates per severity", evaluate.severity_lines(evaluate_report))]


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_write_report_publishes_every_file_and_a_manifest(tmp_path, evaluate_report):
    out = tmp_path / "run"
    paths = write_report(
        out,
        {"command": "demo", "x": 1},
        markdown=_md("demo"),
        plots=_plots(evaluate_report),
        data=lambda stage: (stage / "predictions.npz").write_bytes(b"data"),
        html=True,
    )
    names = [p.name for p in paths]
    assert names == ["report.json", "report.md", "report.html", "lines.png", "predictions.npz"]
    assert sorted(read_manifest(out)) == sorted(names)
    assert json.loads((out / "report.json").read_text()) == {"command": "demo", "x": 1}
    assert (out / "lines.png").read_bytes().startswith(PNG)
    assert "![rates per severity](lines.png)" in (out / "report.md").read_text()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MANIFEST]


def test_a_rerun_removes_its_own_stale_files_and_nothing_else(tmp_path, evaluate_report):
    out = tmp_path / "run"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "seed0.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    write_report(out, {"v": 1}, markdown=_md("one"), plots=_plots(evaluate_report), html=True)
    write_report(out, {"v": 2}, markdown=_md("two"))
    assert not (out / "report.html").exists() and not (out / "lines.png").exists()
    assert (out / "cells" / "seed0.json").read_text() == "{}"
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text()) == {"v": 2}


def test_a_crash_while_writing_keeps_the_previous_report(tmp_path, evaluate_report, monkeypatch):
    out = tmp_path / "run"
    write_report(out, {"v": 1}, markdown=_md("one"), plots=_plots(evaluate_report), html=True)
    before = _snapshot(out)
    real_save = figures.save_png

    def save_then_crash(fig, path, **kwargs):
        real_save(fig, path, **kwargs)  # the first file of the new run is written ...
        raise RuntimeError("disk on fire")  # ... then the run dies

    monkeypatch.setattr(figures, "save_png", save_then_crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(out, {"v": 2}, markdown=_md("two"), plots=_plots(evaluate_report))
    assert _snapshot(out) == before  # every file byte for byte, the manifest too
    assert [p.name for p in out.iterdir() if p.is_dir()] == []  # no staging left behind


def test_a_crash_on_the_first_run_leaves_no_directory(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt), staged(out) as stage:
        (stage / "report.json").write_text("{}")
        raise KeyboardInterrupt
    assert not out.exists()


def test_report_json_is_published_last(tmp_path, monkeypatch):
    order = []
    real_replace = writer.os.replace
    monkeypatch.setattr(
        writer.os, "replace", lambda src, dst: (order.append(str(dst)), real_replace(src, dst))
    )
    write_report(tmp_path, {"v": 1}, markdown=_md("x"), data=lambda s: (s / "a.npz").write_text(""))
    published = [Path(d).name for d in order if Path(d).parent == tmp_path]
    assert published == ["a.npz", "report.md", "report.json", MANIFEST]


def test_html_is_self_contained():
    page = markdown_to_html(
        "# Title\n\n| a | b |\n|:--|--:|\n| x | 1 |\n\n![plot](p.png)\n\n<script>x</script>\n",
        {"p.png": PNG + b"rest"},
        title="mitigate demo",
    )
    assert "<title>mitigate demo</title>" in page and "<table>" in page
    (src,) = re.findall(r'src="([^"]+)"', page)
    assert src.startswith("data:image/png;base64,")
    assert "<script>" not in page  # raw HTML in the Markdown is escaped
