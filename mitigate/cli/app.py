"""The ``mitigate`` command line: one typer app, one module per command."""

from __future__ import annotations

from typing import Annotated

import typer

from mitigate import __version__
from mitigate.cli.compare import compare_command
from mitigate.cli.evaluate import evaluate_command
from mitigate.cli.retrain import retrain_command
from mitigate.cli.score import score_command
from mitigate.cli.sensitivity import sensitivity_command
from mitigate.cli.train import train_command

__all__ = ["app", "main"]

app = typer.Typer(
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


def main() -> None:
    app()
