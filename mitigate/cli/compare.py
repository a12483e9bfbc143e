"""``mitigate compare``: strategies, selectors and budgets side by side over seeds."""

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
    SchemeOption,
    SeedOption,
    WeightsOption,
    cells_lines,
    check_out,
    emit_report,
    handle_errors,
    model_and_data,
    split_list,
)

__all__ = ["compare_command"]


@handle_errors
def compare_command(
    selectors: Annotated[
        str | None, typer.Option("--selectors", help="Comma-separated, e.g. margin,random,oracle.")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies", help="Comma-separated; combine steps with +, e.g. settings+fallback."
        ),
    ] = None,
    budgets: Annotated[
        str | None, typer.Option("--budgets", help="Comma-separated counts or fractions.")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Number of seeds.")] = None,
    scheme: SchemeOption = None,
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
    """Every strategy x selector x budget over seeds; finished cells are kept, a rerun resumes.

    Finished cells live in ``<out>/cells/``; the report files beside them are replaced only
    when a run completes.
    """
    from mitigate.config import load_config, override
    from mitigate.reports.compare import (
        best_lines,
        compare_markdown,
        compare_plots,
        compare_tables,
    )
    from mitigate.runs.compare import compare, plan_cells

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(
        load_config(config),
        seed=seed,
        compare__selectors=split_list(selectors),
        compare__strategies=split_list(strategies),
        compare__budgets=split_list(budgets),
        compare__seeds=seeds,
        retrain__scheme=scheme,
        **picked,
    )
    out = check_out(out, Path("runs") / "compare")
    total = len(plan_cells(cfg))
    with Output(quiet=quiet, as_json=as_json) as ui:
        with ui.bar("compare", total) as advance:

            def on_cell(cell, cached: bool) -> None:
                label = f"{cell.strategy} {cell.selector} {cell.budget or ''} seed {cell.seed}"
                advance(description=label + (" (cached)" if cached else ""))

            result = compare(cfg, out, checkpoint=checkpoint, on_cell=on_cell, progress=ui.progress)
        report = result.report
        for table in compare_tables(report):
            ui.print(table)
            ui.print()
        for line in best_lines(report):
            ui.print(line, highlight=False)
        for line in cells_lines(report):
            ui.print(line, highlight=False)
        emit_report(
            ui,
            out,
            report,
            markdown=compare_markdown,
            plots=lambda: compare_plots(report),
            fmt=fmt,
        )
