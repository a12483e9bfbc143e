"""Turn per-input predictions into the counts a report shows: per group, shift, severity,
class, and the worst group. A pure function of :class:`~mitigate.scanning.Predictions`, so the
counts in ``report.json`` can always be recomputed from ``predictions.npz``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mitigate.scanning import Predictions

__all__ = ["summarize"]

ANY = "any"  # the union over schemes: an input on which at least one copy disagrees


def summarize(pred: Predictions) -> dict[str, Any]:
    """Counts and accuracies for every way of grouping the inputs.

    Returns a JSON-able dict with ``schemes``, ``groups`` (one entry per measured group, in
    order), ``by_shift`` (families over all severities, clean first), ``by_severity``,
    ``by_class`` (by true label), ``totals`` (``all``, ``clean``, ``shifted``, ``natural``,
    ``held_out``) and ``worst_group`` (per scheme, the group with the highest disagreement rate
    and the one with the lowest quantized accuracy).
    """
    schemes = list(pred.variants)
    kinds = np.array([g.kind for g in pred.groups])[pred.group]
    held = np.array([g.held_out for g in pred.groups], dtype=bool)[pred.group]

    groups = []
    for i, g in enumerate(pred.groups):
        entry = {"name": g.name, "shift": g.shift, "severity": g.severity, "held_out": g.held_out}
        groups.append(entry | _counts(pred, pred.group == i))

    families = list(dict.fromkeys(g.shift for g in pred.groups if g.shift is not None))
    shift_of = np.array([g.shift or "" for g in pred.groups])[pred.group]
    by_shift = [{"name": "clean"} | _counts(pred, kinds == "clean")]
    by_shift += [{"name": f} | _counts(pred, shift_of == f) for f in families]

    severity_of = np.array([g.severity for g in pred.groups])[pred.group]
    severities = sorted({g.severity for g in pred.groups if g.shift is not None})
    by_severity = [{"severity": 0, "name": "clean"} | _counts(pred, kinds == "clean")]
    by_severity += [
        {"severity": s, "name": f"severity {s}"}
        | _counts(pred, (severity_of == s) & (kinds == "shifted"))
        for s in severities
    ]

    names = pred.classes or tuple(str(c) for c in range(int(pred.label.max()) + 1))
    by_class = [
        {"class": c, "name": n} | _counts(pred, pred.label == c) for c, n in enumerate(names)
    ]

    everything = np.ones(len(pred), dtype=bool)
    totals = {
        "all": _counts(pred, everything),
        "clean": _counts(pred, kinds == "clean"),
        "shifted": _counts(pred, kinds == "shifted"),
        "natural": _counts(pred, kinds == "natural"),
        "held_out": _counts(pred, held),
    }
    return {
        "schemes": schemes,
        "n": len(pred),
        "groups": groups,
        "by_shift": by_shift,
        "by_severity": by_severity,
        "by_class": by_class,
        "totals": totals,
        "worst_group": _worst(groups, schemes),
    }


def _counts(pred: Predictions, mask: np.ndarray) -> dict[str, Any]:
    n = int(mask.sum())
    label, ref = pred.label[mask], pred.reference[mask]
    disagreements: dict[str, int] = {}
    flips: dict[str, dict[str, int]] = {}
    accuracy = {"fp": _share(int((ref == label).sum()), n)}
    union = np.zeros(n, dtype=bool)
    for scheme, labels in pred.variants.items():
        other = labels[mask]
        flipped = other != ref
        union |= flipped
        disagreements[scheme] = int(flipped.sum())
        accuracy[scheme] = _share(int((other == label).sum()), n)
        flips[scheme] = {
            "correct_to_wrong": int((flipped & (ref == label)).sum()),
            "wrong_to_correct": int((flipped & (other == label)).sum()),
            "wrong_to_other_wrong": int((flipped & (ref != label) & (other != label)).sum()),
        }
    disagreements[ANY] = int(union.sum())
    return {
        "n": n,
        "disagreements": disagreements,
        "disagreement_rate": {k: _share(v, n) for k, v in disagreements.items()},
        "accuracy": accuracy,
        "flips": flips,
    }


def _worst(groups: list[dict[str, Any]], schemes: list[str]) -> dict[str, Any]:
    """Per scheme: the measured group with the highest disagreement rate and the one with the
    lowest quantized accuracy (ties: the first in group order)."""
    measured = [g for g in groups if g["n"] > 0]
    worst: dict[str, Any] = {}
    for scheme in [*schemes, ANY]:
        by_rate = max(measured, key=lambda g: g["disagreement_rate"][scheme], default=None)
        entry: dict[str, Any] = {}
        if by_rate is not None:
            entry["by_disagreement"] = {
                "group": by_rate["name"],
                "n": by_rate["n"],
                "disagreements": by_rate["disagreements"][scheme],
                "disagreement_rate": by_rate["disagreement_rate"][scheme],
            }
        if scheme != ANY and measured:
            by_acc = min(measured, key=lambda g: g["accuracy"][scheme])
            entry["by_accuracy"] = {
                "group": by_acc["name"],
                "n": by_acc["n"],
                "accuracy": by_acc["accuracy"][scheme],
                "fp_accuracy": by_acc["accuracy"]["fp"],
            }
        worst[scheme] = entry
    return worst


def _share(count: int, n: int) -> float:
    return round(count / n, 6) if n else 0.0
