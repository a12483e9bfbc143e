"""``mitigate sensitivity``: which layers of the quantized model cause its disagreements."""

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
)
from mitigate.mitigation.sensitivity_report import PROBE_SIZE

__all__ = ["sensitivity_command"]


@handle_errors
def sensitivity_command(
    config: ConfigOption = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Checkpoint to analyse (default: cached base model)."),
    ] = None,
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
) -> None:
    """Rank layers by the disagreements that quantizing them causes (no labels needed)."""
    from mitigate.config import load_config, override
    from mitigate.mitigation.sensitivity_report import sensitivity_report, write_sensitivity
    from mitigate.reports.sensitivity_tables import sensitivity_summary, sensitivity_table

    cfg = override(load_config(config), seed=seed)
    out = out or Path("runs") / "sensitivity"
    report = sensitivity_report(
        cfg,
        checkpoint=model,
        scheme=scheme,
        probe_size=probe_size,
        selector=selector,
        progress=show_progress(quiet),
    )
    console.print(sensitivity_table(report))
    console.print()
    console.print(sensitivity_summary(report))
    written = write_sensitivity(report, out)
    info = report["model"]
    console.print(
        f"model: {info['arch']} ({info['source']}: {info['path']})  "
        f"time: {report['wall_time_s']:.1f}s"
    )
    console.print("wrote " + ", ".join(str(p) for p in written))
