"""``mitigate score``: how well does each score find each copy's disagreements?

One scan of the FP model and every quantized copy over the unlabelled pool (or the test
inputs) keeps every score per input; the report then ranks the scores by how well they
detect the inputs on which a copy disagrees with the FP model, overall, per shift family
(all severities) and per measured group. The report is a pure function of the scan
(:func:`score_report`), so every number in ``report.json`` can be recomputed from
``predictions.npz``.

Undefined metrics (a group without disagreements has no AUROC) are ``None`` in the report,
so that ``report.json`` stays strict JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitigate.config import Config
from mitigate.counting import family_of
from mitigate.data.evalset import iter_batches
from mitigate.errors import MitigateError, unknown_choice
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import PredictionsResult, Report, run_header
from mitigate.runs.session import Session
from mitigate.scanning import Predictions, scan, score_key

__all__ = ["BASELINE", "SPLITS", "UPPER_BOUND", "ScoreResult", "score", "score_report"]

SPLITS: tuple[str, ...] = ("pool", "test")
"""``pool``: the unlabelled pool a selector chooses from (clean + the shifts not held out);
``test``: the measurement groups of ``mitigate evaluate`` (held-out and natural shifts too)."""

UPPER_BOUND = "oracle"  # knows the true disagreements: never the winner, shown as the ceiling
BASELINE = "random"  # what any score must beat


@dataclass(frozen=True)
class ScoreResult(PredictionsResult):
    """The report and the scan it was computed from (every score kept per input)."""


@accepts_objects
def score(
    config: Config,
    *,
    checkpoint: str | Path | None = None,
    split: str = "pool",
    protocol: str = "standard",
    scores: Sequence[str] | None = None,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Base model (given, cached or trained) -> quantized copies -> one scan keeping every
    score -> detector metrics of every score for every scheme.

    Args:
        config: the run's config; ``selection.budget`` is the budget of the ``standard``
            protocol, ``quantization.schemes`` the copies whose disagreements are detected.
        checkpoint: model to score instead of the cached (or freshly trained) base model.
        split: one of :data:`SPLITS`.
        protocol: one of :data:`mitigate.selectors.PROTOCOLS`.
        scores: registry names (default: all of them, in registry order).
        progress: show training progress if the base model must be trained.
        on_batch: called with each scanned batch's input count (a progress bar).

    Raises:
        MitigateError: an unknown split, protocol, score or scheme, an invalid budget, or no
            scheme to score (checked before any model is trained).
    """
    from mitigate.selectors import PROTOCOLS

    names = _check_scores(scores)
    _check_choice("split", split, SPLITS)
    _check_choice("protocol", protocol, PROTOCOLS)
    budget = _check_budget(config.selection.budget) if protocol == "standard" else None
    if not config.quantization.schemes:
        raise MitigateError("mitigate score needs at least one quantization scheme (--schemes)")

    started = time.perf_counter()
    session = Session.open(
        config, checkpoint=checkpoint, schemes=config.quantization.schemes, progress=progress
    )
    predictions = _scan(session, split, names, on_batch)
    report = {
        **run_header("score", session.config, session.model_info),
        "split": split,
        **score_report(predictions, names, protocol=protocol, budget=budget, seed=session.seed),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return ScoreResult(report, predictions)


def score_report(
    predictions: Predictions,
    scores: Sequence[str],
    *,
    protocol: str = "standard",
    budget: int | float | None = None,
    seed: int = 0,
) -> Report:
    """The detector part of the report, from a scan that kept ``scores``.

    Args:
        predictions: a :class:`~mitigate.scanning.Predictions` (e.g. ``Predictions.load``).
        scores: registry names kept by the scan.
        protocol: ``standard`` (needs ``budget``) or ``paper``.
        budget: count or fraction of all scanned inputs, spent once on the whole set.
        seed: seed of the ``paper`` protocol.

    Returns:
        ``protocol``, ``budget``, ``n``, ``schemes``, ``scores``, ``results`` (one row per
        scheme x score: overall metrics, ``by_shift`` and ``groups`` rows) and ``winner``
        (per scheme, the best score by AUROC other than ``oracle``, or None).
    """
    schemes = list(predictions.variants)
    results = [
        row
        for scheme in schemes
        for row in _scheme_results(predictions, scheme, scores, protocol, budget, seed)
    ]
    return {
        "protocol": protocol,
        "budget": budget,
        "n": len(predictions),
        "schemes": schemes,
        "scores": list(scores),
        "results": results,
        "winner": {scheme: _winner(results, scheme) for scheme in schemes},
    }


# ---- validation at the public edge ----------------------------------------------------------


def _check_choice(kind: str, name: object, choices: Sequence[str]) -> None:
    if name not in choices:
        raise unknown_choice(kind, name, choices)


def _check_scores(scores: Sequence[str] | None) -> list[str]:
    from mitigate.selectors import score_names

    valid = score_names()
    if scores is None:
        return valid
    if isinstance(scores, str) or not scores:
        raise MitigateError(
            "scores must be a non-empty list of names; valid choices: " + ", ".join(valid)
        )
    for name in scores:
        _check_choice("score", name, valid)
    return list(dict.fromkeys(scores))


def _check_budget(budget: int | float) -> int | float:
    from mitigate.selectors import resolve_budget

    resolve_budget(budget, 0)  # raises on a bad count or fraction
    return budget


# ---- the scan -------------------------------------------------------------------------------


def _scan(
    session: Session, split: str, scores: list[str], on_batch: Callable[[int], None] | None
) -> Predictions:
    """One scan of the FP model and every quantized copy over the pool or the test groups,
    keeping every score per input."""
    variants = session.quantize(session.config.quantization.schemes)
    if split == "test":
        batches, groups = session.test_batches(), session.groups
    else:
        groups = session.pool_groups
        batches = iter_batches(
            session.data.splits.pool,
            groups,
            batch_size=session.config.eval.batch_size,
            seed=session.seed,
            split=split,
        )
    return scan(
        session.model,
        variants,
        batches,
        groups=groups,
        scores=scores,
        classes=session.data.classes,
        seed=session.seed,
        on_batch=on_batch,
    )


# ---- the report -----------------------------------------------------------------------------


def _scheme_results(
    predictions: Predictions,
    scheme: str,
    scores: Sequence[str],
    protocol: str,
    budget: int | float | None,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per score for one scheme: overall metrics, then per shift and per group."""
    from mitigate.selectors import evaluate_scores

    truth = torch.from_numpy(predictions.variants[scheme] != predictions.reference)
    values = {s: torch.from_numpy(predictions.scores[score_key(s, scheme)]) for s in scores}
    group_id = torch.from_numpy(predictions.group.astype(np.int64))
    shift_names, shift_of_group = family_of(predictions.groups)
    held = {g.name: g.held_out for g in predictions.groups}
    held |= {g.shift: g.held_out for g in predictions.groups if g.shift is not None}

    def rows(ids: torch.Tensor, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in scores}
        for row in evaluate_scores(
            values,
            truth,
            budget=budget,
            groups=ids,
            group_names=names,
            protocol=protocol,
            seed=seed,
        ):
            score, group = row.pop("score"), row["group"]
            out[score].append(_clean(row) | {"held_out": held.get(group, False)})
        return out

    by_group = rows(group_id, [g.name for g in predictions.groups])
    by_shift = rows(torch.from_numpy(shift_of_group)[group_id], shift_names)
    results = []
    for score in scores:
        overall = {k: v for k, v in by_group[score][0].items() if k not in ("group", "held_out")}
        results.append(
            {
                "score": score,
                "scheme": scheme,
                **overall,
                "by_shift": by_shift[score][1:],
                "groups": by_group[score][1:],
            }
        )
    return results


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (undefined) -> None, so the report is strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _winner(results: list[dict[str, Any]], scheme: str) -> dict[str, Any] | None:
    """The best real score by AUROC, with the best score of the FP model alone (what can rank
    a pool before anything is quantized), the baseline and the ceiling."""
    from mitigate.selectors import SCORES

    rows = {r["score"]: r for r in results if r["scheme"] == scheme}
    real = [
        r
        for name, r in rows.items()
        if name not in (UPPER_BOUND, BASELINE) and r["auroc"] is not None
    ]
    if not real:
        return None
    best = _best(real)
    fp_only = [r for r in real if not SCORES[r["score"]].needs_quantized]
    return {
        "score": best["score"],
        "auroc": best["auroc"],
        "aupr": best["aupr"],
        "best_fp_only": {k: _best(fp_only)[k] for k in ("score", "auroc")} if fp_only else None,
        "baseline_auroc": rows[BASELINE]["auroc"] if BASELINE in rows else None,
        "upper_bound_auroc": rows[UPPER_BOUND]["auroc"] if UPPER_BOUND in rows else None,
    }


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest AUROC; ``max`` keeps the first of equal values, so ties go to registry order."""
    return max(rows, key=lambda r: r["auroc"])
