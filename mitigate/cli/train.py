"""``mitigate train``: train a base model with a Lightning Trainer and write its checkpoint."""

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

__all__ = ["train_command"]


@handle_errors
def train_command(
    config: ConfigOption = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Model architecture, e.g. lenet5.")
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Training method, e.g. standard.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    out: OutOption = None,
    seed: SeedOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train a base model on the configured data and save it (test accuracy printed)."""
    from mitigate.config import load_config, override
    from mitigate.models import save_checkpoint
    from mitigate.pipeline import load_data, model_meta, test_accuracy, train_model

    cfg = override(
        load_config(config), seed=seed, model__arch=arch, train__method=method, train__epochs=epochs
    )
    data = load_data(cfg)
    model = train_model(cfg, data, progress=show_progress(quiet))
    path = (
        out or Path("runs") / "train"
    ) / f"{cfg.model.arch}-{cfg.train.method}-seed{cfg.seed}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    accuracy = test_accuracy(model, data)
    save_checkpoint(path, model, model_meta(cfg, data) | {"test_accuracy": accuracy})
    console.print(
        f"{cfg.model.arch} ({cfg.train.method}, seed {cfg.seed}): "
        f"clean test accuracy {accuracy:.2%}"
    )
    console.print(f"wrote {path}")
