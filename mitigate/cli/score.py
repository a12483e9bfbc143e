"""``mitigate score``: which score finds each quantized copy's disagreements best."""

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

__all__ = ["score_command"]

# The registries live beside torch, which --help must not import; the choices are checked
# against the registries when the command runs, and a test keeps these help lists equal to them.
SCORE_CHOICES = (
    "margin",
    "least-confidence",
    "entropy",
    "gini",
    "top1-diff",
    "kl",
    "quantized-margin",
    "random",
    "oracle",
)
PROTOCOL_CHOICES = ("standard", "paper")
SPLIT_CHOICES = ("pool", "test")


@handle_errors
def score_command(
    config: ConfigOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    schemes: SchemesOption = None,
    quantized: QuantizedOption = None,
    scores: Annotated[
        str | None,
        typer.Option(
            "--scores", help=f"Comma-separated scores (default: all): {', '.join(SCORE_CHOICES)}."
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="pool: the unlabelled pool (clean + shifts not held out); "
            "test: every measured group.",
        ),
    ] = "pool",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="standard: every input ranked; paper: the study's balanced "
            "logistic-regression protocol.",
        ),
    ] = "standard",
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="Inputs selected: a count (100) or a fraction (0.01)."),
    ] = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    fmt: FormatOption = ReportFormat.md,
) -> None:
    """Rank the disagreement scores by how well they find each copy's disagreements."""
    from mitigate.config import load_config, override
    from mitigate.reports.score import score_markdown, score_plots, score_table, winner_lines
    from mitigate.runs.score import score

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(
        load_config(config),
        seed=seed,
        quantization__schemes=with_quantized(split_list(schemes), quantized),
        selection__budget=budget,
        **picked,
    )
    out = check_out(out, Path("runs") / "score")
    with Output(quiet=quiet, as_json=as_json) as ui:
        with ui.counter("scanning inputs") as count:
            result = score(
                cfg,
                checkpoint=checkpoint,
                split=split,
                protocol=protocol,
                scores=split_list(scores),
                progress=ui.progress,
                on_batch=count,
            )
        report = result.report
        ui.print(score_table(report))
        ui.print()
        for line in winner_lines(report):
            ui.print(line, highlight=False)
        ui.print(model_line(report))
        emit_report(
            ui,
            out,
            report,
            markdown=score_markdown,
            plots=lambda: score_plots(report, result.predictions),
            data=result.write_data,
            fmt=fmt,
        )
