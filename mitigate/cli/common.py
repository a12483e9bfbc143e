"""What every command shares: the options, the error boundary, the terminal output (tables,
progress, ``--json``), and :func:`emit_report`, which publishes a run's report files at once.

No torch import here or in any CLI module's top level: ``mitigate --help`` must stay fast.

A command follows one pattern (see ``mitigate/cli/evaluate.py``)::

    @handle_errors
    def thing_command(..., out: OutOption = None, quiet: QuietOption = False,
                      as_json: JsonOption = False, fmt: FormatOption = ReportFormat.md):
        out = check_out(out, Path("runs") / "thing")   # bad --out fails before any work
        with Output(quiet=quiet, as_json=as_json) as ui:
            result = run_thing(cfg, progress=ui.progress)  # Lightning bars when progress=True
            ui.print(table)                                # silent under --json
            emit_report(ui, out, result.report, markdown=thing_markdown,
                        plots=lambda: thing_plots(result.report),
                        data=lambda stage: write_thing(result, stage), fmt=fmt)

Exit codes: 0 done; 1 a failure inside the run (one ``error: internal failure`` line, the
traceback saved to a file it names; ``MITIGATE_DEBUG=1`` prints it instead); 2 bad input (a
:class:`~mitigate.errors.MitigateError` or a usage error: one ``error:`` line); 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console

try:  # typer >= 0.20 ships its own copy of click; its exceptions are not click's
    from typer import _click as click
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer runs on click itself
    import click  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[assignment]
    from click.core import ParameterSource  # type: ignore[assignment]

from mitigate.errors import MitigateError
from mitigate.quantization.schemes import scheme_names
from mitigate.reports.writer import LOCK_FILE

__all__ = [
    "ConfigOption",
    "FormatOption",
    "JsonOption",
    "DataOption",
    "ModelOption",
    "WeightsOption",
    "OutOption",
    "Output",
    "QuietOption",
    "ReportFormat",
    "SchemeOption",
    "QuantizedOption",
    "SchemesOption",
    "SeedOption",
    "cells_lines",
    "check_out",
    "click",
    "command_line",
    "console",
    "emit_report",
    "err_console",
    "fail",
    "handle_errors",
    "model_and_data",
    "model_line",
    "split_list",
    "with_quantized",
]

console = Console()  # resolves sys.stdout when printing, so redirects and CliRunner see it
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config; unset keys keep the embedded default."),
]
# A string, not a Path: typer would turn "" (an unset shell variable) into "." and the run
# would write into the current folder.
OutOption = Annotated[
    str | None, typer.Option("--out", "-o", help="Directory for the report files.")
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seed for splits, training and shifts.")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars (also off when not a terminal).")
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="The FP model: a checkpoint file, a zoo name (lenet5, ...), or your own "
        "pkg.module:factory returning an nn.Module (default: [model] of the config).",
    ),
]
WeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="State dict for the model (safetensors, or a torch file read with "
        "weights_only): the model is used as it is, not trained.",
    ),
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset: a name (digits, mnist, ...), npz:PATH, imagefolder:PATH, or your own "
        "pkg.module:function returning mitigate.Data (default: [data] of the config).",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as JSON (for a report: report.json) to stdout, nothing else.",
    ),
]


class ReportFormat(enum.StrEnum):
    """What ``--format`` writes besides ``report.json`` and the PNG plots."""

    md = "md"
    html = "html"


FormatOption = Annotated[
    ReportFormat,
    typer.Option(
        "--format",
        help="md: report.md with the plots beside it; html: also report.html, one "
        "self-contained file with the plots inlined.",
    ),
]


QuantizedOption = Annotated[
    str | None,
    typer.Option(
        "--quantized",
        help="A .onnx model you ship, measured as the quantized side against the FP model "
        "(run in ONNX Runtime; needs mitigate[onnx]). Alone it replaces the config's schemes; "
        "with --schemes it is measured beside them.",
    ),
]


def with_quantized(schemes: list[str] | None, quantized: str | None) -> list[str] | None:
    """The scheme list with ``--quantized FILE`` added as ``onnx:path=FILE``.

    Example:
        >>> with_quantized(None, "q.onnx"), with_quantized(["int8"], "q.onnx")
        (['onnx:path=q.onnx'], ['int8', 'onnx:path=q.onnx'])
    """
    if quantized is None:
        return schemes
    if not quantized.strip():
        raise MitigateError("--quantized is empty; give a .onnx file")
    return [*(schemes or []), f"onnx:path={quantized.strip()}"]


SchemesOption = Annotated[
    str | None,
    typer.Option(
        "--schemes",
        help=f"Comma-separated schemes ({', '.join(scheme_names())}); options as "
        "int8:engine=qnnpack.",
    ),
]


SchemeOption = Annotated[
    str | None,
    typer.Option("--scheme", help="The one quantization scheme, e.g. int8 or int8:engine=qnnpack."),
]

F = TypeVar("F", bound=Callable[..., Any])


def model_and_data(
    model: str | None, weights: str | None = None, data: str | None = None
) -> tuple[Path | None, dict[str, Any]]:
    """``--model``, ``--weights`` and ``--data`` as ``(checkpoint, config overrides)``: a
    checkpoint file is passed to the run, a zoo name or ``pkg.module:factory`` and the
    others go into the config.

    Raises:
        MitigateError: a ``--model`` that is none of these.
    """
    from mitigate.importing import is_callable_spec
    from mitigate.models.registry import model_names

    overrides: dict[str, Any] = {"model__weights": weights, "data__dataset": data}
    if model is None:
        return None, overrides
    if Path(model).is_file():
        return Path(model), overrides
    if model in model_names():
        return None, overrides | {"model__arch": model, "model__factory": ""}
    if is_callable_spec(model):
        return None, overrides | {"model__factory": model}
    if Path(model).suffix or "/" in model or os.sep in model:
        raise MitigateError(f"checkpoint file not found: {model}")
    raise MitigateError(
        f"unknown model {model!r}: give a checkpoint file, a zoo name ("
        + ", ".join(model_names())
        + ") or your own pkg.module:factory"
    )


# ---- errors -----------------------------------------------------------------------------------


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the Exit to raise."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


INTERRUPTED = threading.Event()


def note_interrupts() -> None:
    """Remember every Ctrl-C (then raise ``KeyboardInterrupt`` as Python does), so the error
    boundary can tell an interrupt from the failure a half-finished import causes after it."""

    def on_sigint(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: leave Python's handler
        signal.signal(signal.SIGINT, on_sigint)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A :class:`~mitigate.errors.MitigateWarning` as one ``warning:`` line on stderr; other
    warnings as Python shows them."""
    from rich.markup import escape

    from mitigate.errors import MitigateWarning

    if issubclass(category, MitigateWarning):
        err_console.print(
            f"[bold yellow]warning:[/] {escape(_one_line(str(message)))}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def handle_errors(command: F) -> F:
    """The error boundary of a command.

    Bad input (:class:`MitigateError`) -> one line and exit 2; Ctrl-C -> exit 130; any other
    exception is a failure inside the run: one ``error: internal failure: ...`` line naming
    the file the traceback was saved to, and exit 1 (with ``MITIGATE_DEBUG=1`` the exception
    propagates with its traceback instead). Click's own exits and usage errors pass through.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _show_warning
                    return command(*args, **kwargs)
            finally:
                release_out()
        except MitigateError as err:
            raise fail(_one_line(str(err))) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort, click.ClickException):  # usage errors, --help, exits
            raise
        except Exception as err:
            if INTERRUPTED.is_set():
                # Ctrl-C landed inside an import (torch's take seconds): a module left half
                # initialized then fails in its own way, but what happened is the interrupt.
                raise fail("interrupted", 130) from None
            if os.environ.get("MITIGATE_DEBUG"):
                raise
            saved = _save_traceback()
            where = f"; traceback saved to {saved}" if saved else ""
            message = f"internal failure: {type(err).__name__}: {_one_line(str(err))}{where}"
            raise fail(message, 1) from None

    return wrapper  # type: ignore[return-value]


def _save_traceback() -> Path | None:
    """Write the current exception's traceback to a new file in the temp directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        fd, name = tempfile.mkstemp(prefix=f"mitigate-traceback-{stamp}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{command_line()}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return Path(name)


def check_out(out: str | None, default: Path) -> Path:
    """The report directory: ``out`` (``default`` when the option was not given) if a report
    can be written there, else a one-line MitigateError — checked before the run, so a typo
    or an unset shell variable does not cost a long computation or write somewhere else."""
    if out is not None and not out.strip():
        raise MitigateError(
            "--out is empty (an unset shell variable?); give a folder, e.g. --out runs/mine"
        )
    folder = default if out is None else Path(out)
    if folder.exists() and not folder.is_dir():
        raise MitigateError(f"--out {folder} is a file, not a directory")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MitigateError(f"--out {folder}: {existing} is a file, not a directory")
    try:  # a real write: permission bits say nothing for root or on a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise MitigateError(
            f"--out {folder}: cannot write in {existing} ({err.strerror or err})"
        ) from None
    _claim(folder)
    return folder


# ---- one run per --out ------------------------------------------------------------------

# (folder, open lock file, the folders this claim created, deepest first)
_claimed: list[tuple[Path, Any, list[Path]]] = []


def _claim(folder: Path) -> None:
    """Hold ``folder`` for this command (an exclusive ``flock`` on ``folder/.mitigate-lock``,
    released when the command ends, or by the OS if the process dies), then remove what killed
    runs left there. A second run on the same folder gets a one-line error naming the process
    that holds it. Where ``fcntl`` does not exist (Windows), runs are not locked."""
    try:
        import fcntl
    except ImportError:
        return
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise MitigateError(
            f"--out {folder} is in use by another mitigate run (pid {holder}); wait for it to "
            "finish or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _claimed.append((folder, handle, created))
    from mitigate.reports.writer import recover

    recover(folder)  # what killed runs left; nobody else holds the folder now


def release_out() -> None:
    """Let go of every folder this command claimed; a folder the command created and left
    with nothing but the lock is removed, so a refused or failed run leaves nothing behind."""
    while _claimed:
        folder, handle, created = _claimed.pop()
        handle.close()
        with contextlib.suppress(OSError):  # never mask the command's own outcome
            if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                (folder / LOCK_FILE).unlink()
                for made in created:  # deepest first; stops at the first one not empty
                    made.rmdir()


def cells_lines(report: dict[str, Any]) -> list[str]:
    """The closing lines of a grid (``compare``, ``calibrate``): cells run and reused, and
    every unreadable cell file that was set aside and recomputed."""
    cells = report["cells"]
    lines = [
        f"{cells['total']} cells ({cells['reused']} reused from {report['cells_dir']}); "
        f"time: {report['wall_time_s']:.1f}s"
    ]
    lines += [
        f"note: cell file {path.removesuffix('.corrupt')} was unreadable: set aside as {path} "
        "and computed again"
        for path in cells.get("set_aside", [])
    ]
    return lines


def split_list(value: str | None) -> tuple[str, ...] | None:
    """``"a,b, c"`` -> ``("a", "b", "c")``; ``None`` stays ``None`` (option not given)."""
    if value is None:
        return None
    return tuple(item.strip() for item in value.split(",") if item.strip())


def model_line(report: dict[str, Any]) -> str:
    """The closing line: which model, where from, how many inputs (when counted), wall time."""
    info = report["model"]
    inputs = f"inputs: {report['n']}  " if "n" in report else ""
    return (
        f"model: {info['arch']} ({info['source']}: {info['path']})  "
        f"{inputs}time: {report['wall_time_s']:.1f}s"
    )


def command_line() -> str:
    """The command that was run, rebuilt from the options given on the command line: long
    option names, in the command's own order, defaults left out (click keeps no raw argv),
    e.g. ``mitigate evaluate --schemes int8 --out runs/e``. Outside a command: ``sys.argv``."""
    ctx = get_current_context(silent=True)
    if ctx is None or ctx.parent is None:
        return shlex.join(["mitigate", *sys.argv[1:]])
    parts = ["mitigate", ctx.info_name or ""]
    for param in ctx.command.params:
        if param.name is None or getattr(param, "param_type_name", "") != "option":
            continue
        if ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params.get(param.name)
        long = max(param.opts, key=len)
        if param.is_flag:
            if param.secondary_opts and not value:
                parts.append(max(param.secondary_opts, key=len))
            elif value:
                parts.append(long)
            continue
        parts += [long, str(value.value if isinstance(value, enum.Enum) else value)]
    return shlex.join(parts)


# ---- terminal output --------------------------------------------------------------------------


class Output:
    """A command's terminal: human output to stdout, progress to stderr, or, with ``--json``,
    nothing on stdout but the report JSON.

    Use as a context manager around the whole command: under ``--json`` it sends anything
    else printed to stdout (a library's stray print, Lightning's bar) to stderr.
    """

    def __init__(self, *, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet, self.as_json = quiet, as_json
        self._stdout: TextIO = sys.stdout
        self._redirect: contextlib.AbstractContextManager[Any] | None = None

    def __enter__(self) -> Output:
        self._stdout = sys.stdout
        if self.as_json:
            self._redirect = contextlib.redirect_stdout(sys.stderr)
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(*exc)
            self._redirect = None

    @property
    def progress(self) -> bool:
        """Whether to show Lightning's progress bar (it writes to stdout, which ``--json``
        sends to stderr)."""
        tty = sys.stderr.isatty() and (self.as_json or self._stdout.isatty())
        return not self.quiet and tty

    @property
    def bars(self) -> bool:
        """Whether to show rich progress bars and spinners (on stderr)."""
        return not self.quiet and sys.stderr.isatty()

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Human output (tables, lines); nothing under ``--json``."""
        if not self.as_json:
            console.print(*objects, **kwargs)

    def emit_json(self, obj: Any) -> None:
        """Write ``obj`` to the real stdout exactly as :func:`~mitigate.atomic.write_json`
        writes it to a file."""
        self._stdout.write(json.dumps(obj, indent=2, allow_nan=True) + "\n")
        self._stdout.flush()

    @contextlib.contextmanager
    def counter(self, description: str) -> Iterator[Callable[[int], None]]:
        """A bar without a total that appears at the first ``count(n)``: steps before it (a
        base model training under Lightning's own bar) keep the terminal to themselves."""
        with contextlib.ExitStack() as stack:
            advance: Callable[..., None] | None = None

            def count(n: int) -> None:
                nonlocal advance
                if advance is None:
                    advance = stack.enter_context(self.bar(description, None))
                advance(n)

            yield count

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """A transient rich progress bar on stderr; yields ``advance(n=1, description=None)``.
        Off (a no-op ``advance``) with ``--quiet`` or when stderr is not a terminal."""
        if not self.bars:
            yield lambda n=1, description=None: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, transient=True) as progress:
            task = progress.add_task(description, total=total)

            def advance(n: int = 1, description: str | None = None) -> None:
                progress.update(task, advance=n, description=description or None)

            yield advance

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner with ``message`` on stderr while the block runs (off like :meth:`bar`)."""
        if not self.bars:
            yield
            return
        with err_console.status(message):
            yield


# ---- publishing the report --------------------------------------------------------------------


def _provenance(report: dict[str, Any]) -> dict[str, Any]:
    """The run's report with what a reader needs to reproduce it: the command line, versions
    and the seed (a library report that lacks one gets it here)."""
    import platform

    from mitigate import __version__

    report = dict(report)
    report.setdefault("mitigate_version", __version__)
    torch = sys.modules.get("torch")  # imported by the run; never imported just for this
    if torch is not None:
        report.setdefault("torch_version", torch.__version__)
    if "seed" not in report and isinstance(report.get("config"), dict):
        report["seed"] = report["config"].get("seed")
    report["provenance"] = {
        "command": command_line(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    return report


def emit_report(
    ui: Output,
    out: Path,
    report: dict[str, Any],
    *,
    markdown: Callable[[dict[str, Any], Sequence[Any]], str],
    plots: Callable[[], Sequence[Any]] | None = None,
    data: Callable[[Path], object] | None = None,
    fmt: ReportFormat | str = ReportFormat.md,
) -> dict[str, Any]:
    """Publish a run's report in ``out`` at once and tell the user (or print ``--json``).

    Writes ``report.json`` (the report plus ``provenance``: the command line, Python and
    platform), ``report.md`` (``markdown(report, plots)``), the PNG plots, and with
    ``fmt="html"`` a self-contained ``report.html``, all staged and swapped into ``out``
    together (:func:`mitigate.reports.writer.write_report`): a crash leaves the previous
    report intact; other entries of ``out`` (e.g. ``cells/``) are never touched.

    Args:
        ui: the command's :class:`Output`.
        out: the report directory.
        report: the JSON-able report of the run.
        markdown: ``(report, plots) -> str``, embedding each plot (``md_plots``).
        plots: builds the :class:`~mitigate.reports.writer.Plot` list (under a spinner).
        data: writes data files (e.g. ``predictions.npz``) into the staging directory.
        fmt: ``md`` or ``html``.

    Returns:
        The report as written to ``report.json``.
    """
    from mitigate.reports.writer import write_report

    report = _provenance(report)
    with ui.status("writing the report"):
        figures = list(plots()) if plots is not None else []
        written = write_report(
            out,
            report,
            markdown=lambda drawn: markdown(report, drawn),
            plots=figures,
            data=data,
            html=ReportFormat(fmt) is ReportFormat.html,
        )
    if ui.as_json:
        ui.emit_json(report)
    else:
        ui.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    return report
