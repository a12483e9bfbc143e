from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
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


def test_without_an_atomic_exchange_report_json_is_published_last(tmp_path, monkeypatch):
    order = []
    real_replace = writer.os.replace

    def no_exchange(a, b):
        raise OSError(errno.ENOSYS, "no exchange")

    monkeypatch.setattr(writer, "_exchange", no_exchange)
    monkeypatch.setattr(
        writer.os, "replace", lambda src, dst: (order.append(str(dst)), real_replace(src, dst))
    )
    (tmp_path / "cells").mkdir()
    write_report(tmp_path, {"v": 1}, markdown=_md("x"), data=lambda s: (s / "a.npz").write_text(""))
    published = [Path(d).name for d in order if Path(d).parent == tmp_path]
    # cells/ was carried into the staging folder and back before the file-by-file fallback
    assert published == ["cells", "a.npz", "report.md", "report.json", MANIFEST]
    assert (tmp_path / "cells").is_dir() and not list(tmp_path.parent.glob(".*staging*"))


def test_a_second_report_is_switched_in_by_one_exchange(tmp_path, monkeypatch):
    if sys.platform not in ("linux", "darwin"):
        pytest.skip("atomic directory exchange: Linux and macOS")
    out = tmp_path / "run"
    write_report(out, {"v": 1}, markdown=_md("one"), data=lambda s: (s / "a.npz").write_text(""))
    (out / "cells").mkdir()
    (out / "notes.txt").write_text("mine")
    exchanges = []
    real = writer._exchange
    monkeypatch.setattr(writer, "_exchange", lambda a, b: (exchanges.append(b), real(a, b)))
    write_report(out, {"v": 2}, markdown=_md("two"))
    assert exchanges == [out]
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST,
        "cells",
        "notes.txt",
        "report.json",
        "report.md",
    ]  # a.npz was the old report's: gone with it
    assert json.loads((out / "report.json").read_text()) == {"v": 2}
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]  # the old directory removed


# Runs in a child process that SIGKILLs itself at the k-th file operation of publishing.
_KILL_AT = """
import os, signal, sys
from pathlib import Path
from mitigate.reports import writer

k, out = int(sys.argv[1]), Path(sys.argv[2])
calls = [0]
for owner, name in ((writer, "_move"), (writer, "_exchange"), (writer.shutil, "rmtree")):
    real = getattr(owner, name)
    def killing(*args, real=real, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(owner, name, killing)
writer.write_report(out, {"run": "new"}, markdown=lambda plots: "new\\n",
                    data=lambda s: (s / "new.npz").write_text("new"))
print("finished", calls[0])
"""


def test_a_kill_at_any_step_of_publishing_leaves_one_whole_report(tmp_path):
    import subprocess

    out, k = tmp_path / "run", 0
    while True:
        k += 1
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        write_report(
            out,
            {"run": "old"},
            markdown=lambda plots: "old\n",
            data=lambda s: (s / "old.npz").write_text("old"),
        )
        (out / "cells").mkdir()
        (out / "cells" / "seed0.json").write_text("{}")
        (out / "notes.txt").write_text("mine")
        child = subprocess.run(
            [sys.executable, "-c", _KILL_AT, str(k), str(out)], capture_output=True, text=True
        )
        which = json.loads((out / "report.json").read_text())["run"]
        assert (out / "report.md").read_text() == f"{which}\n"
        assert sorted(read_manifest(out)) == sorted([f"{which}.npz", "report.md", "report.json"])
        assert (out / f"{which}.npz").is_file() and not (
            out / f"{'old' if which == 'new' else 'new'}.npz"
        ).exists()
        writer.recover(out)  # what the next run does first, under its lock
        assert (out / "cells" / "seed0.json").read_text() == "{}"
        assert (out / "notes.txt").read_text() == "mine"
        assert [p.name for p in tmp_path.iterdir()] == ["run"]
        if child.returncode == 0:  # k passed the last operation: the run finished
            assert which == "new" and child.stdout.startswith("finished")
            break
        assert child.returncode == -9, child.stderr
    assert k >= 5  # two carried entries, the exchange, removing the old report, finished


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


def test_a_report_into_the_current_folder_or_through_a_symlink(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (real / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    write_report(link, {"v": 1}, markdown=_md("one"))
    assert link.is_symlink() and json.loads((real / "report.json").read_text()) == {"v": 1}
    monkeypatch.chdir(real)
    write_report(".", {"v": 2}, markdown=_md("two"))
    assert Path.cwd() == real.resolve() and json.loads(Path("report.json").read_text()) == {"v": 2}
    assert (real / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_the_report_folder_keeps_its_permissions(tmp_path):
    out = tmp_path / "run"
    write_report(out, {"v": 1}, markdown=_md("one"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700
    os.chmod(out, 0o750)
    write_report(out, {"v": 2}, markdown=_md("two"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
