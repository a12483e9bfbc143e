"""``mitigate train``: train a base model with a Lightning Trainer and write its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mitigate.cli.common import (
    ConfigOption,
    JsonOption,
    OutOption,
    Output,
    QuietOption,
    SeedOption,
    check_out,
    handle_errors,
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
        str | None, typer.Option("--arch", help="Model architecture, e.g. lenet5.")
    ] = None,
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
    from mitigate.models import save_checkpoint
    from mitigate.pipeline import load_data, model_meta, test_accuracy, train_model
    from mitigate.quantization import scheme_label
    from mitigate.trainers import check_train_config

    cfg = override(
        load_config(config), seed=seed, model__arch=arch, train__method=method, train__epochs=epochs
    )
    check_train_config(cfg.train)  # before loading data or training anything
    folder = check_out(out or Path("runs") / "train")
    with Output(quiet=quiet, as_json=as_json) as ui:
        data = load_data(cfg)
        trained = train_model(cfg, data, progress=ui.progress, full=True)
        path = folder / f"{cfg.model.arch}-{cfg.train.method}-seed{cfg.seed}.pt"
        accuracy = test_accuracy(trained.model, data)
        meta = model_meta(cfg, data) | {"test_accuracy": accuracy}
        lines = [
            f"{cfg.model.arch} ({cfg.train.method}, seed {cfg.seed}): clean test accuracy "
            f"{accuracy:.2%}"
        ]
        if trained.prepared is not None:
            label = scheme_label(trained.scheme)
            int8_accuracy = test_accuracy(trained.quantized(), data)
            # The checkpoint holds the float weights taken out of the QAT model.
            meta |= {"qat_trained": True, "qat_scheme": label, "qat_test_accuracy": int8_accuracy}
            lines.append(
                f"{label} model converted from QAT: clean test accuracy {int8_accuracy:.2%}"
            )
        save_checkpoint(path, trained.model, meta)
        for line in lines:
            ui.print(line)
        ui.print(f"wrote {path}", highlight=False)
        if ui.as_json:
            ui.emit_json({"checkpoint": str(path), **meta})
