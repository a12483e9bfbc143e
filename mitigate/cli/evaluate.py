"""``mitigate evaluate``: how often each quantized copy disagrees with the FP model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    OutOption,
    QuietOption,
    SeedOption,
    console,
    handle_errors,
    show_progress,
    split_list,
)
from mitigate.quantization.schemes import scheme_names

__all__ = ["evaluate_command"]


@handle_errors
def evaluate_command(
    config: ConfigOption = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Checkpoint to measure (default: cached base model)."),
    ] = None,
    schemes: Annotated[
        str | None,
        typer.Option(
            "--schemes",
            help=f"Comma-separated schemes ({', '.join(scheme_names())}); "
            "options as int8:engine=qnnpack.",
        ),
    ] = None,
    shifts: Annotated[
        str | None, typer.Option("--shifts", help="Comma-separated shift families, or 'all'.")
    ] = None,
    severities: Annotated[
        str | None, typer.Option("--severities", help="Comma-separated, 1-5.")
    ] = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
) -> None:
    """Measure disagreements per shift, severity, class and worst group."""
    from mitigate.config import load_config, override
    from mitigate.evaluation import evaluate, write_evaluation
    from mitigate.reports.tables import evaluate_tables

    cfg = override(
        load_config(config),
        seed=seed,
        quantization__schemes=split_list(schemes),
        shifts__families=split_list(shifts),
        shifts__severities=split_list(severities),
    )
    out = out or Path("runs") / "evaluate"
    result = evaluate(cfg, checkpoint=model, progress=show_progress(quiet))
    for table in evaluate_tables(result.report):
        console.print(table)
        console.print()
    written = write_evaluation(result, out)
    info = result.report["model"]
    console.print(
        f"model: {info['arch']} ({info['source']}: {info['path']})  "
        f"inputs: {result.report['n']}  time: {result.report['wall_time_s']:.1f}s"
    )
    console.print("wrote " + ", ".join(str(p) for p in written))
