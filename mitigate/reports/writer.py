"""Write one run's report files together, or not at all.

Every file of a run (``report.json``, ``report.md``, ``report.html``, the plots, the data
files such as ``predictions.npz``) is first written into a temporary staging directory
inside ``out``; only when all of them are complete are they moved into ``out`` with
``os.replace`` (a handful of renames, ``report.json`` last), and the files of the previous
run that this run did not write again are removed. A crash or Ctrl-C while computing or
rendering leaves the previous report untouched, and nothing else in ``out`` is ever touched:
``mitigate compare`` keeps its resumable ``cells/`` there.

The files a run published are listed in ``out/.mitigate-report.json`` (the *manifest*), so
that the next run knows which stale files are its own to remove.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> paths = write_report(out, {"command": "demo"}, markdown=lambda plots: "# demo\\n")
    >>> sorted(p.name for p in out.iterdir())
    ['.mitigate-report.json', 'report.json', 'report.md']
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MANIFEST", "STAGING_PREFIX", "Plot", "read_manifest", "staged", "write_report"]

MANIFEST = ".mitigate-report.json"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Plot:
    """A figure to save as ``out/<file>`` and embed in the report under ``title``."""

    file: str  # e.g. "roc.png"; a plain file name, no directories
    title: str  # alt text and caption in report.md / report.html
    figure: Figure


def read_manifest(out: str | Path) -> list[str]:
    """The file names the last complete run published in ``out`` (empty if none)."""
    try:
        files = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f for f in files if isinstance(f, str) and "/" not in f and f != MANIFEST]


@contextlib.contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """A staging directory for one run's files; on a normal exit they replace ``out``'s.

    Yields an empty directory (on the same file system as ``out``). Write plain files into
    it. If the ``with`` body raises, the staging directory is removed and ``out`` is left
    exactly as it was (if ``out`` did not exist, it is not left behind empty).
    """
    out = Path(out)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield stage
        _swap(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only succeeds if nothing was published


def _swap(stage: Path, out: Path) -> None:
    """Move every file from ``stage`` into ``out`` (``report.json`` last, then the manifest),
    then remove the previous run's files that were not written again."""
    from mitigate.atomic import write_json

    names = sorted(p.name for p in stage.iterdir() if p.is_file())
    names.sort(key=lambda name: name == "report.json")  # the file readers look for: last
    previous = read_manifest(out)
    for name in names:
        os.replace(stage / name, out / name)
    for name in previous:
        if name not in names:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    write_json(out / MANIFEST, {"files": names})


def write_report(
    out: str | Path,
    report: dict[str, Any],
    *,
    markdown: Callable[[Sequence[Plot]], str],
    plots: Sequence[Plot] = (),
    data: Callable[[Path], object] | None = None,
    html: bool = False,
    dpi: int = 110,
) -> list[Path]:
    """Write a run's report into ``out`` all at once (see the module docstring).

    Args:
        out: the report directory (created if missing).
        report: the JSON-able report; written as ``report.json``.
        markdown: builds ``report.md`` from the plots (it should embed each one).
        plots: figures saved as PNG next to ``report.json``.
        data: writes extra files (e.g. ``predictions.npz``) into the directory it is given;
            a ``report.json`` it writes there is replaced by ``report``.
        html: also write ``report.html``, one self-contained file with the plots inlined.
        dpi: resolution of the PNG files.

    Returns:
        The published paths, ``report.json`` first.
    """
    from mitigate.atomic import write_json, write_text
    from mitigate.reports.figures import save_png
    from mitigate.reports.markdown import markdown_to_html

    with staged(out) as stage:
        if data is not None:
            data(stage)
        images = {}
        for plot in plots:
            images[plot.file] = save_png(plot.figure, stage / plot.file, dpi=dpi)
        text = markdown(plots)
        write_text(stage / "report.md", text)
        if html:
            title = f"mitigate {report.get('command', 'report')}"
            write_text(stage / "report.html", markdown_to_html(text, images, title=title))
        write_json(stage / "report.json", report)
        names = sorted(p.name for p in stage.iterdir() if p.is_file())
    order = ["report.json", "report.md", "report.html"]
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return [Path(out) / name for name in names]
