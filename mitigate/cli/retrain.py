"""``mitigate retrain``: select pool inputs, run a mitigation strategy, count what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    ModelOption,
    OutOption,
    QuietOption,
    SeedOption,
    console,
    handle_errors,
    show_progress,
)

__all__ = ["retrain_command"]

# Kept here so --help need not import torch; a test keeps them equal to the registries.
STRATEGY_CHOICES = ("none", "recalibrate", "finetune", "qat", "distill", "settings", "fallback")


@handle_errors
def retrain_command(
    selector: Annotated[
        str | None, typer.Option("--selector", help="Score that ranks the pool, e.g. margin.")
    ] = None,
    budget: Annotated[
        str | None, typer.Option("--budget", help="Inputs to select: a count or a fraction.")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            help=f"One of {', '.join(STRATEGY_CHOICES)}, or several joined with + "
            "(settings+fallback).",
        ),
    ] = None,
    scheme: Annotated[
        str | None, typer.Option("--scheme", help="The quantization scheme to fix, e.g. int8.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Fine-tuning epochs.")
    ] = None,
    control: Annotated[
        bool | None,
        typer.Option("--control/--no-control", help="Also train with no selected inputs."),
    ] = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
) -> None:
    """Mitigate one scheme's disagreements and count removed, introduced and accuracy."""
    from mitigate.config import load_config, override
    from mitigate.mitigation.retrain import retrain, write_retrain
    from mitigate.reports.io import write_text
    from mitigate.reports.retrain_tables import headline, retrain_markdown, retrain_tables

    cfg = override(
        load_config(config),
        seed=seed,
        selection__selector=selector,
        selection__budget=budget,
        retrain__strategy=strategy,
        retrain__scheme=scheme,
        retrain__epochs=epochs,
        retrain__control=control,
    )
    out = out or Path("runs") / "retrain"
    result = retrain(cfg, checkpoint=model, progress=show_progress(quiet))
    lines = headline(result.report)
    console.print(lines[0])
    for table in retrain_tables(result.report):
        console.print()
        console.print(table)
    console.print()
    for line in lines[1:]:
        console.print(line)
    written = write_retrain(result, out)
    write_text(out / "report.md", retrain_markdown(result.report))
    console.print(f"time: {result.report['wall_time_s']:.1f}s")
    console.print("wrote " + ", ".join(str(p) for p in [*written, out / "report.md"]))
