"""``mitigate retrain``: select pool inputs, run a mitigation strategy, count what changed.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mitigate.config import Config
from mitigate.mitigation.context import Context, State, StrategySettings
from mitigate.mitigation.guard import GuardedModel
from mitigate.quantization.api import QuantizedModel
from mitigate.quantization.schemes import Scheme
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import PredictionsResult, Report, run_header
from mitigate.runs.session import Session
from mitigate.scanning import Predictions
from mitigate.selectors.pool import Selected
from mitigate.selectors.scores import ScoreSpec

__all__ = [
    "Baseline",
    "RetrainResult",
    "ScanProgress",
    "deployment",
    "initial_state",
    "measure",
    "prepare",
    "retrain",
    "run_strategy",
    "select",
    "select_many",
    "strategy_context",
    "warnings",
]

# description -> a context around one scan that yields a per-batch callback (or None)
ScanProgress = Callable[[str], AbstractContextManager[Callable[[int], None] | None]]


@dataclass(frozen=True)
class RetrainResult(PredictionsResult):
    """The report, and the per-input labels of f0 (reference), q0, f1 and q1."""


@dataclass(frozen=True)
class Baseline:
    """What every mitigation of one seed starts from.

    Attributes:
        session: data, f0 and its calibration set.
        scheme: the scheme q0 was made with (``[retrain] scheme``).
        q0: f0 quantized with ``scheme``.
        base: predictions of f0 (reference) and q0 on the test groups, scanned once.
        scans: progress of each scan, e.g. a CLI counter.
    """

    session: Session
    scheme: Scheme
    q0: QuantizedModel
    base: Predictions
    scans: ScanProgress | None = None


def _scanning(scans: ScanProgress | None, description: str) -> AbstractContextManager[Any]:
    """``scans(description)``, or a context that yields no callback."""
    return contextlib.nullcontext() if scans is None else scans(description)


def prepare(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    scans: ScanProgress | None = None,
) -> Baseline:
    """Open the seed's session, quantize f0 with the retrain scheme and scan both on the test
    groups.

    ``scans(description)`` is entered around every scan of this seed and yields a callback
    for each batch's input count (or ``None``)."""
    from mitigate.quantization import parse_scheme, quantize

    session = Session.open(
        config, checkpoint=checkpoint, schemes=[config.retrain.scheme], progress=progress
    )
    scheme = parse_scheme(session.config.retrain.scheme)  # a preset may have rewritten it
    q0 = quantize(session.model, scheme, session.calibration)
    with _scanning(scans, "measuring f0 and q0") as count:
        base = session.scan_test(session.model, {"q0": q0}, on_batch=count)
    return Baseline(session, scheme, q0, base, scans)


def select(baseline: Baseline, score: ScoreSpec, budget: int) -> Selected:
    """The pool inputs ``score`` ranks highest, ``budget`` of them (a count)."""
    session = baseline.session
    with _scanning(baseline.scans, "scanning the pool") as count:
        return session.select(
            score,
            budget,
            q_model=baseline.q0,
            class_balanced=session.config.selection.class_balanced,
            on_batch=count,
        )


def select_many(baseline: Baseline, scores: list[ScoreSpec], budget: int) -> dict[str, Selected]:
    """:func:`select` for several selectors from one scan of the pool: name -> picks."""
    from mitigate.selectors import tops_of_pool

    session = baseline.session
    with _scanning(baseline.scans, "scanning the pool") as count:
        return tops_of_pool(
            session.model,
            session.data.splits.pool,
            session.pool_groups,
            scores,
            budget,
            seed=session.seed,
            batch_size=session.config.eval.batch_size,
            q_model=baseline.q0,
            class_balanced=session.config.selection.class_balanced,
            on_batch=count,
        )


def strategy_settings(config: Config) -> StrategySettings:
    """What the strategy steps read from the configuration."""
    r = config.retrain
    return StrategySettings(
        train=config.train,
        epochs=r.epochs,
        lr=r.lr,
        max_float_params=r.max_float_params,
        max_float_macs=r.max_float_macs,
        max_float_layers=r.max_float_layers,
        anchor_epochs=r.anchor_epochs,
        anchor_lr=r.anchor_lr,
        guard_catch=r.guard_catch,
        guard_rate=r.guard_rate,
    )


def strategy_context(
    baseline: Baseline, selected: Selected, probe: Tensor, *, progress: bool = False
) -> Context:
    """What the steps of a strategy read: f0, the training split, the selected inputs, the
    probe, the seed and the pool."""
    from mitigate.mitigation.strategies import Context

    session = baseline.session
    return Context(
        strategy_settings(session.config),
        session.model,
        session.data.splits.train,
        selected,
        probe,
        session.seed,
        progress,
        pool=session.pool_batches,
    )


def initial_state(baseline: Baseline) -> State:
    """(f0, q0) with q0's scheme and calibration: where every strategy starts."""
    session = baseline.session
    return State(session.model, baseline.q0, baseline.scheme, session.calibration)


def run_strategy(
    baseline: Baseline, strategy: str, selected: Selected, probe: Tensor, *, progress: bool = False
) -> list[State]:
    """Run the steps of ``strategy`` from (f0, q0); return the state after every step."""
    from mitigate.mitigation.strategies import parse_strategy

    context = strategy_context(baseline, selected, probe, progress=progress)
    state = initial_state(baseline)
    states = []
    for step in parse_strategy(strategy):
        state = step.step(context, state)
        states.append(state)
    return states


def measure(baseline: Baseline, fp_model: nn.Module, quantized: nn.Module) -> Predictions:
    """Predictions of f0 (reference), q0, f1 and q1 on the test groups; f0 and q0 come from the
    seed's base scan, and f1 is scanned only when a strategy trained a new FP model; the pair
    (f0, q0) itself is the base scan, scanned no second time. For a guarded q1,
    ``scores["rerouted"]`` marks the inputs it sent to the FP model."""
    session, base = baseline.session, baseline.base
    if fp_model is session.model and quantized is baseline.q0:  # the pair the base scan measured
        return replace(
            base,
            variants={"q0": base.variants["q0"], "f1": base.reference, "q1": base.variants["q0"]},
        )
    with _scanning(baseline.scans, "measuring f1 and q1") as count:
        if fp_model is session.model:
            new = session.scan_test(quantized, {}, on_batch=count)
            f1, q1 = base.reference, new.reference
        else:
            new = session.scan_test(fp_model, {"q1": quantized}, on_batch=count)
            f1, q1 = new.reference, new.variants["q1"]
    scores = dict(base.scores)
    if isinstance(quantized, GuardedModel):
        scores["rerouted"] = _rerouted(session, quantized)
    return replace(base, variants={"q0": base.variants["q0"], "f1": f1, "q1": q1}, scores=scores)


def _rerouted(session: Session, guarded: GuardedModel) -> np.ndarray:
    """Which test inputs (in scan order) the guard sends to the FP model, as ``float32 0/1``."""
    import torch

    with torch.no_grad():
        masks = [guarded.rerouted_mask(batch.x) for batch in session.test_batches()]
    return torch.cat(masks).numpy().astype(np.float32)


# Rounds of one-input-at-a-time timing (each round runs every model on all 64 inputs).
PER_INPUT_ROUNDS = 10


def deployment(baseline: Baseline, quantized: nn.Module, scheme: Scheme) -> Report:
    """What q1 costs: size and latency relative to q0 and FP (timed interleaved on 64 test
    inputs spread over every group, as one batch and one input at a time), the noise of those
    ratios (q0 timed twice), and the shares of parameters and MACs its scheme keeps in
    float."""
    from mitigate.mitigation.deployment import deployment_cost, float_shares

    session = baseline.session
    models = {"q0": baseline.q0, "q0 again": baseline.q0, "q1": quantized}
    cost = deployment_cost(
        session.model,
        models,
        session.timing_batch(),
        reference="q0",
        per_input_repeats=PER_INPUT_ROUNDS,
    )
    again = cost["models"].pop("q0 again")
    cost["latency_noise"] = abs(again["latency_vs_reference"] - 1.0)
    cost["per_input_noise"] = abs(again["per_input_vs_reference"] - 1.0)
    cost["float_share"] = float_shares(session.model, scheme, session.data.input_shape)
    return cost


def _clipped(budget: int | float, pool_size: int) -> list[str]:
    """A line when a count budget asks for more inputs than the pool holds (all are taken)."""
    if isinstance(budget, int) and budget > pool_size:
        return [f"budget {budget} is larger than the pool ({pool_size} inputs): all were selected"]
    return []


def warnings(accounting: Report, cost: Report) -> list[str]:
    """The lines a user must not miss: q1 disagrees with f0 more than q0 did, or gives back what
    quantization bought (slower than FP, or more than half its size)."""
    lines = []
    t = accounting["totals"]["all"]
    if t["after"] > t["before"]:
        lines.append(
            f"q1 disagrees with the original FP model on more inputs than q0 did ({t['after']} "
            f"vs {t['before']}): this mitigation made things worse"
        )
    q1, q0 = cost["models"]["q1"], cost["models"]["q0"]
    noise = cost["latency_noise"]
    if q1["latency_vs_fp"] > 1.0 + noise:
        line = f"q1 is slower than the FP model ({q1['latency_vs_fp']:.2f}x its latency"
        if q0["latency_vs_fp"] > 1.0 + noise:  # then the mitigation is not what costs the time
            line += (
                f"; q0 itself is {q0['latency_vs_fp']:.2f}x: int8 does not speed this model "
                "up on this CPU"
            )
        lines.append(line + f"; noise ±{noise:.2f})")
    if q1["size_vs_fp"] > 0.5:
        lines.append(f"q1 is more than half the FP model's size ({q1['size_vs_fp']:.2f}x)")
    return lines


@accepts_objects
def retrain(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    scans: ScanProgress | None = None,
) -> RetrainResult:
    """One mitigation run with the configured selector, budget, strategy and scheme.

    ``progress`` shows Lightning's bars while training; ``scans`` (see :func:`prepare`)
    reports every scan.

    Raises:
        MitigateError: an unknown strategy, selector or scheme, or a bad budget (checked
            before any work).
    """
    from mitigate.mitigation.accounting import account
    from mitigate.mitigation.strategies import parse_strategy
    from mitigate.quantization import scheme_label
    from mitigate.selectors import check_selector, resolve_budget

    started = time.perf_counter()
    steps = parse_strategy(config.retrain.strategy)  # every name checked before any work
    score = check_selector(config.selection.selector)
    resolve_budget(config.selection.budget, 0)  # a bad budget fails before any work
    baseline = prepare(config, checkpoint=checkpoint, progress=progress, scans=scans)
    session = baseline.session
    config = session.config
    budget = resolve_budget(config.selection.budget, session.pool_size)
    probe_size = config.retrain.probe_size if any(s.uses_probe for s in steps) else 0
    picked = select(baseline, score, max(budget, probe_size))
    selected, probe = picked.head(budget), picked.x[:probe_size]  # pick order: prefixes
    states = run_strategy(baseline, config.retrain.strategy, selected, probe, progress=progress)
    predictions = measure(baseline, states[-1].fp_model, states[-1].quantized)
    result = account(predictions)
    step_rows = []
    if len(states) > 1:
        for step, state in zip(steps, states, strict=True):
            totals = account(measure(baseline, state.fp_model, state.quantized))["totals"]
            step_rows.append(
                {"step": step.name, "scheme": scheme_label(state.scheme), "totals": totals}
            )
    cost = deployment(baseline, states[-1].quantized, states[-1].scheme)
    control = None
    if config.retrain.control and any(step.trains for step in steps):
        control_states = run_strategy(
            baseline, config.retrain.strategy, selected.without_inputs(), probe, progress=progress
        )
        control = account(
            measure(baseline, control_states[-1].fp_model, control_states[-1].quantized)
        )["totals"]

    report = {
        **run_header("retrain", session.config, session.model_info),
        "strategy": config.retrain.strategy,
        "steps": [s.name for s in steps],
        "used_labels": states[-1].used_labels,
        "scheme_before": scheme_label(baseline.scheme),
        "scheme_after": scheme_label(states[-1].scheme),
        "selection": _selection_summary(baseline, selected) | {"probe": len(probe)},
        "notes": {step.name: state.notes for step, state in zip(steps, states, strict=True)},
        **result,
        "per_step": step_rows,
        "control": control,
        "deployment": cost,
        "warnings": warnings(result, cost) + _clipped(config.selection.budget, session.pool_size),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return RetrainResult(report, predictions)


def _selection_summary(baseline: Baseline, selected: Selected) -> Report:
    """How many inputs were picked, from which groups, and how many of them q0 gets wrong
    relative to f0 (the selector's precision on this pool)."""
    import torch

    from mitigate.scanning import eval_mode

    session = baseline.session
    counts: dict[str, int] = {}
    for group, _ in selected.meta:
        counts[group] = counts.get(group, 0) + 1
    with torch.no_grad(), eval_mode(session.model):
        fp = session.model(selected.x).argmax(1) if len(selected) else torch.zeros(0)
        q = baseline.q0(selected.x).argmax(1) if len(selected) else torch.zeros(0)
    config = session.config
    classes = session.data.classes
    return {
        "selector": config.selection.selector,
        "budget": config.selection.budget,
        "n": len(selected),
        "class_balanced": config.selection.class_balanced,
        "disagreements_among_selected": int((fp != q).sum()),
        "by_group": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "by_fp_class": {classes[c]: int((fp == c).sum()) for c in fp.unique().tolist()},
    }
