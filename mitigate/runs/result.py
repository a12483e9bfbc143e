"""What every run returns: a JSON-able report, and the data files it can write beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitigate.config import Config, config_to_dict
from mitigate.runs.base_model import ModelInfo
from mitigate.scanning import Predictions

__all__ = ["PredictionsResult", "Report", "RunResult", "run_header"]

Report = dict[str, Any]  # JSON-able: what report.json holds


@dataclass(frozen=True)
class RunResult:
    """A run's outcome.

    Attributes:
        report: the JSON-able report (``report.json``); every figure a command prints or
            renders comes from it.
    """

    report: Report

    def write_data(self, folder: Path) -> list[Path]:
        """Write the run's data files (e.g. ``predictions.npz``) into ``folder``; return them.
        A run without data files writes nothing."""
        return []


@dataclass(frozen=True)
class PredictionsResult(RunResult):
    """A run's report and the per-input predictions every count in it comes from.

    Attributes:
        predictions: the scan (:class:`~mitigate.scanning.Predictions`), written as
            ``predictions.npz`` so every number can be recounted.
    """

    predictions: Predictions

    def write_data(self, folder: Path) -> list[Path]:
        """``predictions.npz``."""
        self.predictions.save(folder / "predictions.npz")
        return [folder / "predictions.npz"]


def run_header(command: str, config: Config, model_info: ModelInfo | None = None) -> Report:
    """The first keys of every report: the command, versions, seed, the model (where it came
    from; a grid over seeds has no one model) and the config."""
    import torch

    from mitigate import __version__
    from mitigate.machine import describe_machine

    header: Report = {
        "command": command,
        "mitigate_version": __version__,
        "torch_version": torch.__version__,
        "machine": describe_machine(),  # int8 counts depend on the CPU: say which one
        "seed": config.seed,
    }
    if model_info is not None:
        header["model"] = {"arch": config.model.arch, **model_info}
    return header | {"config": config_to_dict(config)}
