"""``mitigate retrain`` as a function: select pool inputs, mitigate, measure honestly.

Flow: base model f0 (given, cached or trained) -> q0 = quantize(f0) -> score the unlabelled
pool (clean + the shifts not held out) with the selector -> take the budget -> run the strategy
steps -> measure f0, q0, f1, q1 on the test split (clean, every shift, held-out shifts marked)
-> accounting against f0 and within the new pair. A training strategy is also run once with no
selected inputs (the control), so the report can tell the selected inputs' effect from the
effect of fine-tuning itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mitigate.config import Config, config_to_dict

# description -> a context around one scan that yields a per-batch callback (or None)
ScanProgress = Callable[[str], AbstractContextManager[Callable[[int], None] | None]]

__all__ = [
    "RetrainResult",
    "Seeded",
    "deployment",
    "measure",
    "prepare_seed",
    "retrain",
    "run_strategy",
    "write_retrain",
]


@dataclass(frozen=True)
class RetrainResult:
    report: dict[str, Any]
    predictions: Any  # mitigate.scanning.Predictions of f0 (reference), q0, f1, q1


@dataclass(frozen=True)
class Seeded:
    """Everything a seed's runs share: data, f0, its calibration and quantized copy q0."""

    config: Config
    data: Any
    original: nn.Module
    model_info: dict[str, Any]
    scheme: Any
    calibration: Any
    q0: nn.Module
    base: Any  # Predictions of f0 (reference) and q0 on the test groups
    scans: ScanProgress | None = None  # progress of each scan, e.g. a CLI counter


def _scanning(scans: ScanProgress | None, description: str) -> Any:
    """``scans(description)``, or a context that yields no callback."""
    return contextlib.nullcontext() if scans is None else scans(description)


def prepare_seed(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    scans: ScanProgress | None = None,
) -> Seeded:
    """Load data, get f0 (checkpoint, cache or training) and quantize it with the retrain scheme.

    ``scans(description)`` is entered around every scan of this seed and yields a callback
    for each batch's input count (or ``None``)."""
    from mitigate.mitigation.strategies import parse_strategy
    from mitigate.pipeline import base_model, calibration_inputs, check_schemes, load_data
    from mitigate.quantization import parse_scheme, quantize
    from mitigate.selectors import SCORES

    parse_strategy(config.retrain.strategy)  # fail on bad names before any work
    if config.selection.selector not in SCORES:
        from mitigate.errors import unknown_choice

        raise unknown_choice("selector", config.selection.selector, list(SCORES))
    scheme = parse_scheme(config.retrain.scheme)
    data = load_data(config)
    check_schemes(config, data, [config.retrain.scheme])
    original, info = base_model(config, data, checkpoint=checkpoint, progress=progress)
    calibration = calibration_inputs(config, data)
    q0 = quantize(original, scheme, calibration)
    base = measure_base(config, data, original, q0, scans=scans)
    return Seeded(config, data, original, info, scheme, calibration, q0, base, scans)


def select_inputs(seeded: Seeded, selector: str, budget: int | float) -> Any:
    """The pool inputs ``selector`` ranks highest (``Selected``)."""
    from mitigate.mitigation.probe import selected_pool_inputs
    from mitigate.mitigation.strategies import Selected

    with _scanning(seeded.scans, "scanning the pool") as count:
        x, y, meta = selected_pool_inputs(
            seeded.config,
            seeded.data,
            seeded.original,
            selector=selector,
            budget=budget,
            q_model=seeded.q0,
            class_balanced=seeded.config.selection.class_balanced,
            on_batch=count,
        )
    return Selected(x, y, meta)


def select_with_probe(seeded: Seeded, steps: list[Any]) -> tuple[Any, Any]:
    """The budget's selected inputs and, when a step needs it, the larger unlabelled probe;
    one pool scan serves both (selection is in pick order, so the budget is a prefix)."""
    from mitigate.pipeline import pool_groups
    from mitigate.selectors import resolve_budget

    config = seeded.config
    pool_size = len(seeded.data.splits.pool) * len(pool_groups(config, seeded.data))
    budget = resolve_budget(config.selection.budget, pool_size)
    probe_size = config.retrain.probe_size if any(s.uses_probe for s in steps) else 0
    picked = select_inputs(seeded, config.selection.selector, max(budget, probe_size))
    return picked.head(budget), picked.x[:probe_size]


def run_strategy(
    seeded: Seeded, strategy: str, selected: Any, probe: Any, *, progress: bool = False
) -> list[Any]:
    """Run the steps of ``strategy`` from (f0, q0); return the state after every step."""
    from mitigate.mitigation.strategies import Context, State, parse_strategy

    context = Context(
        seeded.config,
        seeded.original,
        seeded.data.splits.train,
        selected,
        probe,
        seeded.config.seed,
        progress,
    )
    state = State(seeded.original, seeded.q0, seeded.scheme, seeded.calibration)
    states = []
    for step in parse_strategy(strategy):
        state = step.step(context, state)
        states.append(state)
    return states


def measure_base(
    config: Config,
    data: Any,
    original: nn.Module,
    q0: nn.Module,
    *,
    scans: ScanProgress | None = None,
) -> Any:
    """Scan f0 and q0 over the test groups once per seed; every run of that seed reuses it."""
    from mitigate.data.evalset import iter_batches
    from mitigate.pipeline import measurement_groups
    from mitigate.scanning import scan

    groups = measurement_groups(config, data)
    batches = iter_batches(
        data.splits.test,
        groups,
        batch_size=config.eval.batch_size,
        seed=config.seed,
        naturals=data.naturals,
    )
    with _scanning(scans, "measuring f0 and q0") as count:
        return scan(
            original,
            {"q0": q0},
            batches,
            groups=groups,
            scores=(),
            classes=data.classes,
            on_batch=count,
        )


def measure(seeded: Seeded, fp_model: nn.Module, quantized: nn.Module) -> Any:
    """Predictions of f0 (reference), q0, f1 and q1 on the test groups; f0 and q0 come from the
    seed's base scan, and f1 is scanned only when a strategy trained a new FP model."""
    from dataclasses import replace

    from mitigate.data.evalset import iter_batches
    from mitigate.scanning import scan

    config, data, base = seeded.config, seeded.data, seeded.base
    batches = iter_batches(
        data.splits.test,
        base.groups,
        batch_size=config.eval.batch_size,
        seed=config.seed,
        naturals=data.naturals,
    )
    with _scanning(seeded.scans, "measuring f1 and q1") as count:
        if fp_model is seeded.original:
            new = scan(quantized, {}, batches, groups=base.groups, scores=(), on_batch=count)
            f1, q1 = base.reference, new.reference
        else:
            variants = {"q1": quantized}
            new = scan(fp_model, variants, batches, groups=base.groups, scores=(), on_batch=count)
            f1, q1 = new.reference, new.variants["q1"]
    return replace(base, variants={"q0": base.variants["q0"], "f1": f1, "q1": q1})


def retrain(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    scans: ScanProgress | None = None,
) -> RetrainResult:
    """One mitigation run with the configured selector, budget, strategy and scheme.

    ``progress`` shows Lightning's bars while training; ``scans`` (see :func:`prepare_seed`)
    reports every scan."""
    import torch

    from mitigate import __version__
    from mitigate.mitigation.accounting import account
    from mitigate.mitigation.strategies import parse_strategy
    from mitigate.quantization import scheme_label

    started = time.perf_counter()
    seeded = prepare_seed(config, checkpoint=checkpoint, progress=progress, scans=scans)
    steps = parse_strategy(config.retrain.strategy)
    selected, probe = select_with_probe(seeded, steps)
    states = run_strategy(seeded, config.retrain.strategy, selected, probe, progress=progress)
    predictions = measure(seeded, states[-1].fp_model, states[-1].quantized)
    result = account(predictions)
    step_rows = []
    if len(states) > 1:
        for step, state in zip(steps, states, strict=True):
            totals = account(measure(seeded, state.fp_model, state.quantized))["totals"]
            step_rows.append(
                {"step": step.name, "scheme": scheme_label(state.scheme), "totals": totals}
            )
    control = None
    if config.retrain.control and any(step.trains for step in steps):
        control_states = run_strategy(
            seeded, config.retrain.strategy, selected.without_inputs(), probe, progress=progress
        )
        control = account(
            measure(seeded, control_states[-1].fp_model, control_states[-1].quantized)
        )["totals"]

    report = {
        "command": "retrain",
        "mitigate_version": __version__,
        "torch_version": torch.__version__,
        "seed": config.seed,
        "model": {"arch": config.model.arch, **seeded.model_info},
        "strategy": config.retrain.strategy,
        "steps": [s.name for s in steps],
        "used_labels": states[-1].used_labels,
        "scheme_before": scheme_label(seeded.scheme),
        "scheme_after": scheme_label(states[-1].scheme),
        "selection": _selection_summary(seeded, selected) | {"probe": len(probe)},
        "notes": {step.name: state.notes for step, state in zip(steps, states, strict=True)},
        **result,
        "per_step": step_rows,
        "control": control,
        "deployment": deployment(seeded, states[-1].quantized),
        "config": config_to_dict(config),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return RetrainResult(report, predictions)


def _selection_summary(seeded: Seeded, selected: Any) -> dict[str, Any]:
    """How many inputs were picked, from which groups, and how many of them q0 gets wrong
    relative to f0 (the selector's precision on this pool)."""
    import torch

    counts: dict[str, int] = {}
    for group, _ in selected.meta:
        counts[group] = counts.get(group, 0) + 1
    with torch.no_grad():
        fp = seeded.original(selected.x).argmax(1) if len(selected) else torch.zeros(0)
        q = seeded.q0(selected.x).argmax(1) if len(selected) else torch.zeros(0)
    config = seeded.config
    return {
        "selector": config.selection.selector,
        "budget": config.selection.budget,
        "n": len(selected),
        "class_balanced": config.selection.class_balanced,
        "disagreements_among_selected": int((fp != q).sum()),
        "by_group": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "by_fp_class": {seeded.data.classes[c]: int((fp == c).sum()) for c in fp.unique().tolist()},
    }


def deployment(seeded: Seeded, quantized: nn.Module) -> dict[str, Any]:
    """Size and latency of ``quantized`` (q1) relative to q0 and FP, timed on 64 test inputs."""
    from mitigate.mitigation.deployment import deployment_cost

    example = seeded.data.splits.test.batch(slice(0, 64))
    return deployment_cost(
        seeded.original, {"q0": seeded.q0, "q1": quantized}, example, reference="q0"
    )


def write_retrain(result: RetrainResult, out: str | Path) -> list[Path]:
    """``report.json`` and ``predictions.npz`` (f0 reference; q0, f1, q1), each atomically."""
    from mitigate.reports.io import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.save(out / "predictions.npz")
    write_json(out / "report.json", result.report)
    return [out / "report.json", out / "predictions.npz"]
