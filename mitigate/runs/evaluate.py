"""``mitigate evaluate``: how often each quantized copy disagrees with the FP model, per
group, shift, severity, class and worst group."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mitigate.config import Config
from mitigate.quantization.api import QuantizedModel
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import PredictionsResult, Report, run_header
from mitigate.runs.session import Session

__all__ = ["EvaluateResult", "evaluate"]


@dataclass(frozen=True)
class EvaluateResult(PredictionsResult):
    """The report and the per-input predictions every count in it comes from (f0 reference,
    every scheme's labels)."""


@accepts_objects
def evaluate(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> EvaluateResult:
    """Base model (given, cached or trained) -> quantized copies -> scan of clean and shifted
    test inputs -> counts per group, shift, severity, class and worst group.

    Args:
        config: the run's configuration; ``quantization.schemes`` are the copies measured.
        checkpoint: FP model to measure instead of the cached (or freshly trained) base model.
        progress: show Lightning's bar if the base model must be trained.
        on_batch: called with each scanned batch's input count (a progress bar).
    """
    from mitigate.counting import summarize

    started = time.perf_counter()
    session = Session.open(
        config, checkpoint=checkpoint, schemes=config.quantization.schemes, progress=progress
    )
    variants = session.quantize(session.config.quantization.schemes)
    predictions = session.scan_test(session.model, variants, scores=("margin",), on_batch=on_batch)
    report = {
        **run_header("evaluate", session.config, session.model_info),
        **summarize(predictions),
        "deployment": _cost(session, variants),
        **_runtimes(variants),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return EvaluateResult(report, predictions)


def _runtimes(variants: dict[str, QuantizedModel]) -> Report:
    """ONNX Runtime's version and session options, and whether the export agrees with torch,
    for the copies it runs (nothing when none does)."""
    from mitigate.quantization.ort.runtime import ort_sessions

    sessions = ort_sessions(variants)
    return {"onnxruntime": sessions} if sessions else {}


def _cost(session: Session, variants: dict[str, QuantizedModel]) -> Report:
    """What each copy costs against the FP model: serialized size, and latency timed
    interleaved on inputs spread over every group."""
    from mitigate.mitigation.deployment import deployment_cost

    return deployment_cost(session.model, variants, session.timing_batch())
