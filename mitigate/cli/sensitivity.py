"""``mitigate sensitivity``: which layers of the quantized model cause its disagreements."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    DataOption,
    FormatOption,
    JsonOption,
    ModelOption,
    OutOption,
    Output,
    QuietOption,
    ReportFormat,
    SeedOption,
    WeightsOption,
    check_out,
    emit_report,
    handle_errors,
    model_and_data,
    model_line,
)

# The run's default, kept here so --help need not import torch; a test keeps them equal.
PROBE_SIZE = 2000

__all__ = ["sensitivity_command"]


@handle_errors
def sensitivity_command(
    config: ConfigOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    scheme: Annotated[
        str,
        typer.Option(
            "--scheme",
            help="Static int8 scheme, options as int8:engine=qnnpack:per_channel=false.",
        ),
    ] = "int8",
    probe_size: Annotated[
        int,
        typer.Option(
            "--probe-size",
            help="Pool inputs the selector picks to count on; a few hundred are all near-ties "
            "that flip under any change, too few to tell layers apart.",
        ),
    ] = PROBE_SIZE,
    selector: Annotated[
        str,
        typer.Option(
            "--selector", help="Score that picks the probe inputs: margin, entropy, kl, ..."
        ),
    ] = "margin",
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    fmt: FormatOption = ReportFormat.md,
) -> None:
    """Rank layers by the disagreements that quantizing them causes (no labels needed)."""
    from mitigate.config import load_config, override
    from mitigate.reports.sensitivity import (
        sensitivity_markdown,
        sensitivity_plots,
        sensitivity_summary,
        sensitivity_table,
    )
    from mitigate.runs.sensitivity import sensitivity

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(load_config(config), seed=seed, **picked)
    out = check_out(out, Path("runs") / "sensitivity")
    with Output(quiet=quiet, as_json=as_json) as ui:
        result = sensitivity(
            cfg,
            checkpoint=checkpoint,
            scheme=scheme,
            probe_size=probe_size,
            selector=selector,
            progress=ui.progress,
        )
        report = result.report
        ui.print(sensitivity_table(report))
        ui.print()
        ui.print(sensitivity_summary(report))
        ui.print(model_line(report))
        emit_report(
            ui,
            out,
            report,
            markdown=sensitivity_markdown,
            plots=lambda: sensitivity_plots(report),
            data=result.write_data,
            fmt=fmt,
        )
