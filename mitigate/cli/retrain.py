"""``mitigate retrain``: select pool inputs, run a mitigation strategy, count what changed."""

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
    QuietOption,
    ReportFormat,
    SchemeOption,
    SeedOption,
    WeightsOption,
    check_out,
    emit_report,
    handle_errors,
    model_and_data,
)

__all__ = ["retrain_command"]

# Kept here so --help need not import torch; a test keeps them equal to the registries.
STRATEGY_CHOICES = (
    "none",
    "recalibrate",
    "finetune",
    "qat",
    "distill",
    "qat-anchor",
    "settings",
    "fallback",
    "adaround",
    "bias-correction",
    "ranges",
    "guard",
)


@handle_errors
def retrain_command(
    selector: Annotated[
        str | None, typer.Option("--selector", help="Score that ranks the pool, e.g. margin.")
    ] = None,
    budget: Annotated[
        str | None, typer.Option("--budget", help="Inputs to select: a count or a fraction.")
    ] = None,
    class_balanced: Annotated[
        bool | None,
        typer.Option(
            "--class-balanced/--no-class-balanced",
            help="Select round-robin over the FP model's predicted classes.",
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            help=f"One of {', '.join(STRATEGY_CHOICES)}, or several joined with + "
            "(settings+fallback).",
        ),
    ] = None,
    scheme: SchemeOption = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Fine-tuning epochs.")
    ] = None,
    control: Annotated[
        bool | None,
        typer.Option("--control/--no-control", help="Also train with no selected inputs."),
    ] = None,
    max_float_params: Annotated[
        float | None,
        typer.Option(
            "--max-float-params",
            help="fallback: at most this share of the parameters in float (0 = no limit).",
        ),
    ] = None,
    max_float_macs: Annotated[
        float | None,
        typer.Option(
            "--max-float-macs",
            help="fallback: at most this share of the MACs in float (0 = no limit).",
        ),
    ] = None,
    guard_catch: Annotated[
        float | None,
        typer.Option(
            "--guard-catch",
            help="guard: reroute this share of the pool's disagreements (default 0.95).",
        ),
    ] = None,
    guard_rate: Annotated[
        float | None,
        typer.Option(
            "--guard-rate", help="guard: reroute at most this share of the pool's inputs instead."
        ),
    ] = None,
    calibration: CalibrationOption = None,
    config: ConfigOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    fmt: FormatOption = ReportFormat.md,
) -> None:
    """Mitigate one scheme's disagreements and count removed, introduced and accuracy."""
    from rich.markup import escape

    from mitigate.config import load_config, override
    from mitigate.reports.retrain import headline, retrain_markdown, retrain_plots, retrain_tables
    from mitigate.runs.retrain import retrain

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(
        load_config(config),
        seed=seed,
        selection__selector=selector,
        selection__budget=budget,
        selection__class_balanced=class_balanced,
        retrain__strategy=strategy,
        retrain__scheme=scheme,
        retrain__epochs=epochs,
        retrain__control=control,
        retrain__max_float_params=max_float_params,
        retrain__max_float_macs=max_float_macs,
        retrain__guard_catch=guard_catch,
        retrain__guard_rate=guard_rate,
        calibration__preset=calibration,
        **picked,
    )
    out = check_out(out, Path("runs") / "retrain")
    with Output(quiet=quiet, as_json=as_json) as ui:
        result = retrain(cfg, checkpoint=checkpoint, progress=ui.progress, scans=ui.counter)
        report = result.report
        lines = headline(report)
        ui.print(lines[0])
        for table in retrain_tables(report):
            ui.print()
            ui.print(table)
        ui.print()
        for line in lines[1:]:
            ui.print(line)
        ui.print(f"time: {report['wall_time_s']:.1f}s")
        for warning in report["warnings"]:
            ui.print(f"[bold yellow]warning:[/] {escape(warning)}")
        emit_report(
            ui,
            out,
            report,
            markdown=retrain_markdown,
            plots=lambda: retrain_plots(report),
            data=result.write_data,
            fmt=fmt,
        )
