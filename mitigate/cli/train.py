"""``mitigate train``: train a base model with a Lightning Trainer and write its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    DataOption,
    JsonOption,
    OutOption,
    Output,
    QuietOption,
    SeedOption,
    check_out,
    handle_errors,
    model_and_data,
)

__all__ = ["METHOD_CHOICES", "train_command"]

# The registry (mitigate.trainers.METHODS) lives beside torch, which --help must not import;
# the name is checked against the registry when the command runs, and a test keeps this help
# list equal to it.
METHOD_CHOICES = ("standard", "mixup", "adversarial", "qat", "distill")


@handle_errors
def train_command(
    config: ConfigOption = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", "--model", help="Zoo architecture (lenet5, ...) or pkg.module:factory."
        ),
    ] = None,
    data: DataOption = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help=f"Training method: {', '.join(METHOD_CHOICES)}. qat also reports the "
            "converted int8 model; distill matches the standard-trained model without labels.",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train a base model on the configured data and save it (clean test accuracy printed)."""
    from mitigate.config import load_config, override
    from mitigate.runs.train import train

    _, picked = model_and_data(arch, None, data)
    cfg = override(
        load_config(config), seed=seed, train__method=method, train__epochs=epochs, **picked
    )
    folder = check_out(out, Path("runs") / "train")
    with Output(quiet=quiet, as_json=as_json) as ui:
        result = train(cfg, folder, progress=ui.progress)
        report = result.report
        ui.print(
            f"{cfg.model.name} ({cfg.train.method}, seed {cfg.seed}): clean test accuracy "
            f"{report['test_accuracy']:.2%}"
        )
        if report.get("qat_trained"):
            ui.print(
                f"{report['qat_scheme']} model converted from QAT: clean test accuracy "
                f"{report['qat_test_accuracy']:.2%}"
            )
        ui.print(f"wrote {result.checkpoint}", highlight=False)
        if ui.as_json:
            ui.emit_json(report)
