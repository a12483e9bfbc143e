"""Write one run's report files together, or not at all.

Every file of a run (``report.json``, ``report.md``, ``report.html``, the plots, the data
files such as ``predictions.npz``) is first written into a staging directory *beside* ``out``
(``.<name>.staging-*``, on the same file system). When all of them are complete, the entries
of ``out`` that are not the previous report (``cells/`` of a resumable grid, the user's own
files) are moved into the staging directory, and the two directories are **exchanged in one
atomic rename** (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on
macOS): a reader, or a kill at any moment, sees the old report or the new one, never a mix.
The old directory, now at the staging path, is then removed.

A kill while entries are being moved leaves ``out`` with the complete old report and some of
its other entries in the staging directory; :func:`recover` (which the CLI runs before every
run, under its lock on ``out``) moves them back and removes what killed runs left. Where the
OS has no exchange (or the file system refuses it), the files are moved into ``out`` one by
one, ``report.json`` last, as before.

The files a run published are listed in ``out/.mitigate-report.json`` (the *manifest*), so
that the next run knows which entries are the previous report.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> paths = write_report(out, {"command": "demo"}, markdown=lambda plots: "# demo\\n")
    >>> sorted(p.name for p in out.iterdir())
    ['.mitigate-report.json', 'report.json', 'report.md']
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LOCK_FILE",
    "MANIFEST",
    "STAGING_PREFIX",
    "Plot",
    "read_manifest",
    "recover",
    "staged",
    "write_report",
]

MANIFEST = ".mitigate-report.json"
STAGING_PREFIX = ".staging-"
# A staging directory's list of the new report's files; what else is in it was carried over
# from ``out`` and goes back there if the run is killed before the exchange.
_STAGE_MARKER = ".mitigate-staging.json"
# The CLI's lock on ``out`` (see ``mitigate.cli.common``): it stays with the old directory, so
# the lock is never out of ``out`` while the run that holds it publishes.
LOCK_FILE = ".mitigate-lock"


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

    Yields an empty directory beside ``out`` (same file system). Write plain files into it.
    If the ``with`` body raises, the staging directory is removed and ``out`` is left exactly
    as it was (if ``out`` did not exist, it is not created).
    """
    out = Path(out).resolve()  # "." gets a name and a parent; a symlink, its real folder
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING_PREFIX}", dir=out.parent))
    try:
        yield stage
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # after an exchange: the old directory


def _publish(stage: Path, out: Path) -> None:
    """Make the files in ``stage`` the report in ``out`` (see the module docstring)."""
    from mitigate.atomic import write_json

    names = _report_order(p.name for p in stage.iterdir() if p.is_file())
    write_json(stage / MANIFEST, {"files": names})
    if not out.exists():
        _same_mode(stage, None)
        _move(stage, out)  # nothing to keep: one rename
        return
    if not _EXCHANGE_PLATFORM or Path.cwd().resolve().is_relative_to(out):
        # no exchange here; or the process works inside ``out``, and an exchange would leave
        # it in the old directory, which is then removed
        _swap(stage, out, names)
        return
    _same_mode(stage, out)  # the folder keeps its permissions, not mkdtemp's 0700
    previous = {*read_manifest(out), MANIFEST, LOCK_FILE}
    write_json(stage / _STAGE_MARKER, {"report": names})
    carried: list[str] = []
    try:
        for entry in sorted(out.iterdir()):
            if entry.name not in previous and not entry.name.startswith(STAGING_PREFIX):
                _move(entry, stage / entry.name)
                carried.append(entry.name)
        _exchange(stage, out)
    except OSError:  # no exchange here (or it failed): put things back, publish file by file
        for name in reversed(carried):
            _move(stage / name, out / name)
        (stage / _STAGE_MARKER).unlink()
        _swap(stage, out, names)
        return
    with contextlib.suppress(FileNotFoundError):
        (out / _STAGE_MARKER).unlink()


_EXCHANGE_PLATFORM = sys.platform.startswith("linux") or sys.platform == "darwin"


def _same_mode(stage: Path, out: Path | None) -> None:
    """Give ``stage`` the permissions of ``out`` (or of a new folder when ``out`` is None)."""
    if out is not None:
        mode = stat.S_IMODE(out.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o777 & ~umask
    os.chmod(stage, mode)


def _report_order(names: Iterable[str]) -> list[str]:
    """The report's files, sorted, ``report.json`` (the file readers look for) last."""
    ordered = sorted(n for n in names if n not in (MANIFEST, _STAGE_MARKER))
    ordered.sort(key=lambda name: name == "report.json")
    return ordered


def _move(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one atomic step, or raise ``OSError``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(os.fsencode(a), os.fsencode(b), 2)  # RENAME_SWAP
    else:
        raise OSError(errno.ENOSYS, "no atomic directory exchange on this system")
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _swap(stage: Path, out: Path, names: list[str]) -> None:
    """The fallback: move every file from ``stage`` into ``out`` (``report.json`` last, then
    the manifest), then remove the previous run's files that were not written again."""
    previous = read_manifest(out)
    for name in names:
        _move(stage / name, out / name)
    for name in previous:
        if name not in names:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    _move(stage / MANIFEST, out / MANIFEST)


def recover(out: str | Path) -> None:
    """Undo what killed runs left around ``out``: entries carried into a staging directory go
    back into ``out``; staging directories, old report directories and temporary files of
    writes cut short are removed. Call it only while no other run can be writing ``out``
    (the CLI holds its lock)."""
    out = Path(out).resolve()
    for leftover in out.parent.glob(f".{out.name}{STAGING_PREFIX}*"):
        if not leftover.is_dir():
            continue
        marker = leftover / _STAGE_MARKER
        if marker.is_file() and out.is_dir():  # killed before its exchange
            try:
                report = set(json.loads(marker.read_text(encoding="utf-8"))["report"])
            except (OSError, ValueError, KeyError, TypeError):
                report = None
            if report is not None:
                for entry in leftover.iterdir():
                    name = entry.name
                    kept = name in report or name in (MANIFEST, _STAGE_MARKER)
                    if not kept and not (out / name).exists():
                        _move(entry, out / name)
        shutil.rmtree(leftover, ignore_errors=True)
    for old_style in out.glob(f"{STAGING_PREFIX}*"):  # staging inside ``out``: older versions
        if old_style.is_dir():
            shutil.rmtree(old_style, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / _STAGE_MARKER).unlink()
    # temporary files of atomic writes (``mitigate.atomic``) cut short, here and in cells/
    for tmp in [*out.glob(".*.tmp*"), *out.glob("cells/*/.*.tmp*")]:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
