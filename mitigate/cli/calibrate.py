"""``mitigate calibrate``: how calibration data and method change worst-group disagreement.

Also defines ``--calibration`` for ``evaluate`` and ``retrain`` (:data:`CalibrationOption`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mitigate.calibration.settings import ENGINES, GRANULARITIES, OBSERVERS, SAMPLINGS, SOURCES
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
    cells_lines,
    check_out,
    emit_report,
    handle_errors,
    model_and_data,
    split_list,
)

if TYPE_CHECKING:
    from mitigate.runs.calibrate import Planned

__all__ = ["CalibrationOption", "calibrate_command"]

CalibrationOption = Annotated[
    str | None,
    typer.Option(
        "--calibration",
        help="Calibration preset: 'best' (what `mitigate calibrate` recommended for this "
        "config), a best.json path, or a name such as clean-256-minmax-qnnpack.",
    ),
]


@handle_errors
def calibrate_command(
    sources: Annotated[
        str | None, typer.Option("--sources", help=f"Comma-separated: {', '.join(SOURCES)}.")
    ] = None,
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="Comma-separated calibration sizes (clipped to the split)."),
    ] = None,
    samplings: Annotated[
        str | None,
        typer.Option("--samplings", help=f"Comma-separated: {', '.join(SAMPLINGS)}."),
    ] = None,
    augmentations: Annotated[
        str | None,
        typer.Option(
            "--augmentations", help="Comma-separated shifted copies per input, e.g. 0,1,3."
        ),
    ] = None,
    observers: Annotated[
        str | None,
        typer.Option("--observers", help=f"Comma-separated: {', '.join(OBSERVERS)}."),
    ] = None,
    granularities: Annotated[
        str | None,
        typer.Option("--granularities", help=f"Comma-separated: {', '.join(GRANULARITIES)}."),
    ] = None,
    engines: Annotated[
        str | None, typer.Option("--engines", help=f"Comma-separated: {', '.join(ENGINES)}.")
    ] = None,
    extra: Annotated[
        str | None,
        typer.Option("--extra", help="Comma-separated extra settings (preset names); '' = none."),
    ] = None,
    families: Annotated[
        str | None,
        typer.Option("--families", help="Shift families for calibration (never held-out ones)."),
    ] = None,
    grid: Annotated[
        str | None, typer.Option("--grid", help="oat (one factor at a time) or full.")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Number of seeds.")] = None,
    scheme: Annotated[
        str | None, typer.Option("--scheme", help="Static int8 scheme, e.g. int8 or int8:...")
    ] = None,
    combine: Annotated[
        bool | None,
        typer.Option("--combine/--no-combine", help="Also run every factor's best level together."),
    ] = None,
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
    """Sweep calibration data and method; table by worst-group disagreement; save the best.

    Finished cells live in ``<out>/cells/`` and a rerun resumes them; the recommended setting
    is saved as ``<out>/best.json`` and for ``evaluate``/``retrain --calibration best``.
    """
    from mitigate.config import load_config, override
    from mitigate.reports.calibrate import (
        calibrate_markdown,
        calibrate_plots,
        calibrate_table,
        varied,
    )
    from mitigate.runs.calibrate import calibrate, plan_settings
    from mitigate.runs.calibration import best_file, save_best
    from mitigate.runs.data import load_data

    checkpoint, picked = model_and_data(model, weights, data)
    cfg = override(
        load_config(config),
        seed=seed,
        calibration__sources=split_list(sources),
        calibration__sizes=split_list(sizes),
        calibration__samplings=split_list(samplings),
        calibration__augmentations=split_list(augmentations),
        calibration__observers=split_list(observers),
        calibration__granularities=split_list(granularities),
        calibration__engines=split_list(engines),
        calibration__extra=split_list(extra),
        calibration__families=split_list(families),
        calibration__grid=grid,
        calibration__seeds=seeds,
        calibration__scheme=scheme,
        calibration__combine=combine,
        **picked,
    )
    out = check_out(out, Path("runs") / "calibrate")
    c = cfg.calibration
    rows = len(plan_settings(cfg, load_data(cfg))) + int(c.grid == "oat" and c.combine)
    with Output(quiet=quiet, as_json=as_json) as ui:
        with ui.bar("calibrate", rows * c.seeds) as advance:

            def on_cell(done: int, total: int, planned: Planned, seed: int, cached: bool) -> None:
                row = {"factor": planned.factor, "level": planned.level}
                label = f"{varied(row | {'setting': planned.setting.name})} seed {seed}"
                advance(description=label + (" (cached)" if cached else ""))

            result = calibrate(
                cfg, out, checkpoint=checkpoint, on_cell=on_cell, progress=ui.progress
            )
        report = result.report
        ui.print(calibrate_table(report))
        for row in report["rows"]:
            for note in row["notes"]:
                ui.print(f"note ({varied(row)}): {note}", highlight=False)
        if result.best is not None:
            ui.print(report["recommendation"]["line"], highlight=False)
            save_best(cfg, result.best)
            ui.print(f"saved as 'best' for --calibration: {best_file(cfg)}", highlight=False)
        for line in cells_lines(report):
            ui.print(line, highlight=False)
        emit_report(
            ui,
            out,
            report,
            markdown=calibrate_markdown,
            plots=lambda: calibrate_plots(report),
            data=result.write_data,
            fmt=fmt,
        )
