"""The ``mitigate`` command line: one typer app, one module per command.

Usage errors (an unknown option, a bad value) print one ``error:`` line and exit 2, like a
:class:`~mitigate.errors.MitigateError` does (see :mod:`mitigate.cli.common`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mitigate import __version__
from mitigate.cli.calibrate import calibrate_command
from mitigate.cli.common import click, fail, note_interrupts
from mitigate.cli.compare import compare_command
from mitigate.cli.evaluate import evaluate_command
from mitigate.cli.retrain import retrain_command
from mitigate.cli.score import score_command
from mitigate.cli.sensitivity import sensitivity_command
from mitigate.cli.train import train_command

__all__ = ["MitigateGroup", "app", "main"]


class MitigateGroup(TyperGroup):
    """Typer's group, with click's usage errors as one line (not a usage block or a panel)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args=args,
                prog_name=prog_name or "mitigate",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.NoArgsIsHelpError as err:
            if not standalone_mode:
                raise
            click.echo(err.ctx.get_help())
            sys.exit(0)
        except click.ClickException as err:
            if not standalone_mode:
                raise
            ctx = getattr(err, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(err.format_message().split())
            raise SystemExit(fail(message + hint, err.exit_code).exit_code) from None
        except typer.Abort:
            if not standalone_mode:
                raise
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=MitigateGroup,
    name="mitigate",
    help="Measure and remove disagreements between a model and its quantized copies.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mitigate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Measure and remove disagreements between a model and its quantized copies."""


app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("score")(score_command)
app.command("sensitivity")(sensitivity_command)
app.command("retrain")(retrain_command)
app.command("compare")(compare_command)
app.command("calibrate")(calibrate_command)


def main() -> None:
    note_interrupts()
    app()
