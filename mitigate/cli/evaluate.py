"""``mitigate evaluate``: how often each quantized copy disagrees with the FP model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.calibrate import CalibrationOption
from mitigate.cli.common import (
    ConfigOption,
    DataOption,
    FormatOption,
    JsonOption,
    ModelOption,
    OutOption,
    Output,
    QuantizedOption,
    QuietOption,
    ReportFormat,
    SchemesOption,
    SeedOption,
    WeightsOption,
    check_out,
    emit_report,
    handle_errors,
    model_and_data,
    model_line,
    split_list,
    with_quantized,
)

__all__ = ["evaluate_command"]


@handle_errors
def evaluate_command(
    config: ConfigOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    schemes: SchemesOption = None,
    quantized: QuantizedOption = None,
    shifts: Annotated[
        str | None, typer.Option("--shifts", help="Comma-separated shift families, or 'all'.")
    ] = None,
    severities: Annotated[
        str | None, typer.Option("--severities", help="Comma-separated, 1-5.")
    ] = None,
    calibration: CalibrationOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    fmt: FormatOption = ReportFormat.md,
) -> None:
    """Measure disagreements per shift, severity, class and worst group."""
    from mitigate.config import load_config, override
    from mitigate.reports.evaluate import evaluate_markdown, evaluate_plots, evaluate_tables
    from mitigate.runs.evaluate import evaluate

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(
        load_config(config),
        seed=seed,
        quantization__schemes=with_quantized(split_list(schemes), quantized),
        shifts__families=split_list(shifts),
        shifts__severities=split_list(severities),
        calibration__preset=calibration,
        **picked,
    )
    out = check_out(out, Path("runs") / "evaluate")
    with Output(quiet=quiet, as_json=as_json) as ui:
        with ui.counter("scanning inputs") as count:
            result = evaluate(cfg, checkpoint=checkpoint, progress=ui.progress, on_batch=count)
        report = result.report
        for table in evaluate_tables(report):
            ui.print(table)
            ui.print()
        ui.print(model_line(report))
        emit_report(
            ui,
            out,
            report,
            markdown=evaluate_markdown,
            plots=lambda: evaluate_plots(report),
            data=result.write_data,
            fmt=fmt,
        )
