"""What every command shares: the error boundary, the console, and the common options.

No torch import here or in any CLI module's top level: ``mitigate --help`` must stay fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from mitigate.errors import MitigateError

__all__ = [
    "ConfigOption",
    "ModelOption",
    "OutOption",
    "QuietOption",
    "SeedOption",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "split_list",
]

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config; unset keys keep the embedded default."),
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Directory for the report files.")
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seed for splits, training and shifts.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="FP checkpoint to use (default: the cached base model)."),
]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Bad input (MitigateError) -> one line and exit 2; Ctrl-C -> exit 130; other errors are
    failures inside the run and propagate (exit 1 with a traceback worth reporting)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MitigateError as err:
            raise fail(str(err)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def split_list(value: str | None) -> tuple[str, ...] | None:
    """``"a,b, c"`` -> ``("a", "b", "c")``; ``None`` stays ``None`` (option not given)."""
    if value is None:
        return None
    return tuple(item.strip() for item in value.split(",") if item.strip())


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()
