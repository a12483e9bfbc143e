"""``mitigate evaluate`` as a function: measure disagreements of every quantized copy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitigate.config import Config, config_to_dict

__all__ = ["EvaluateResult", "evaluate", "write_evaluation"]


@dataclass(frozen=True)
class EvaluateResult:
    report: dict[str, Any]
    predictions: Any  # mitigate.scanning.Predictions


def evaluate(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> EvaluateResult:
    """Base model (given, cached or trained) -> quantized copies -> scan of clean and shifted
    test inputs -> counts per group, shift, severity, class and worst group.

    ``progress`` shows Lightning's bar if the base model must be trained; ``on_batch`` is
    called with each scanned batch's input count."""
    from mitigate import __version__
    from mitigate.data.evalset import iter_batches
    from mitigate.pipeline import (
        base_model,
        calibration_inputs,
        check_schemes,
        load_data,
        measurement_groups,
        quantize_variants,
    )
    from mitigate.reports.summary import summarize
    from mitigate.scanning import scan

    started = time.perf_counter()
    data = load_data(config)
    groups = measurement_groups(config, data)
    from mitigate.quantization import parse_scheme

    for name in config.quantization.schemes:  # fail on a bad name before training anything
        parse_scheme(name)
    check_schemes(config, data, config.quantization.schemes)  # static int8 on an LSTM ...
    model, model_info = base_model(config, data, checkpoint=checkpoint, progress=progress)
    variants = quantize_variants(
        model, config.quantization.schemes, calibration_inputs(config, data)
    )
    test = data.splits.test  # type: ignore[attr-defined]
    batches = iter_batches(
        test, groups, batch_size=config.eval.batch_size, seed=config.seed, naturals=data.naturals
    )
    predictions = scan(
        model,
        variants,
        batches,
        groups=groups,
        classes=test.classes,
        seed=config.seed,
        on_batch=on_batch,
    )
    import torch

    report = {
        "command": "evaluate",
        "mitigate_version": __version__,
        "torch_version": torch.__version__,
        "seed": config.seed,
        "model": {"arch": config.model.arch, **model_info},
        "config": config_to_dict(config),
        **summarize(predictions),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return EvaluateResult(report, predictions)


def write_evaluation(result: EvaluateResult, out: str | Path) -> list[Path]:
    """Write ``report.json`` and ``predictions.npz`` into ``out``, each atomically."""
    from mitigate.reports.io import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.save(out / "predictions.npz")
    write_json(out / "report.json", result.report)
    return [out / "report.json", out / "predictions.npz"]
