"""Before/after accounting of a mitigation, against the original FP model and within the new pair.

Given the per-input labels of the original FP model f0 (the reference the user validated), its
quantized copy q0, the new FP model f1 and its quantized copy q1, an input is

- a disagreement *before* if q0 != f0, *after* if q1 != f0;
- *removed* if before and not after, *introduced* if after and not before, *survived* if both;
- a disagreement *within the new pair* if q1 != f1;
- FP *churn* if f1 != f0 (the retrained FP model itself changed its answer);
- *rerouted* (a guarded q1 only) if the guard answered it with the FP model.

``before - removed + introduced == after`` holds for every group by construction; net removal
is ``(before - after) / before``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mitigate.counting import InputGroups, add_counts, worst
from mitigate.scanning import Predictions

__all__ = ["MODELS", "account", "counts"]

MODELS = ("f0", "q0", "f1", "q1")


def counts(
    label: np.ndarray,
    f0: np.ndarray,
    q0: np.ndarray,
    f1: np.ndarray,
    q1: np.ndarray,
    rerouted: np.ndarray | None = None,
) -> dict[str, Any]:
    """The accounting for one set of inputs (all arrays ``[n]`` of labels; ``rerouted``, for a
    guarded q1, is 1 where the guard answered with the FP model)."""
    return _finish(_raw(label, f0, q0, f1, q1, rerouted))


def _raw(
    label: np.ndarray,
    f0: np.ndarray,
    q0: np.ndarray,
    f1: np.ndarray,
    q1: np.ndarray,
    rerouted: np.ndarray | None,
) -> dict[str, Any]:
    """The integer counts behind :func:`counts`, which add up over disjoint input sets."""
    before, after = q0 != f0, q1 != f0
    raw: dict[str, Any] = {
        "n": int(label.shape[0]),
        "before": int(before.sum()),
        "after": int(after.sum()),
        "removed": int((before & ~after).sum()),
        "introduced": int((after & ~before).sum()),
        "survived": int((before & after).sum()),
        "within_pair": int((q1 != f1).sum()),
        "churn": int((f1 != f0).sum()),
        "correct": {
            name: int((labels == label).sum())
            for name, labels in zip(MODELS, (f0, q0, f1, q1), strict=True)
        },
    }
    if rerouted is not None:
        raw["rerouted"] = int(rerouted.sum())
    return raw


def _finish(raw: dict[str, Any]) -> dict[str, Any]:
    """A report row from :func:`_raw`'s counts: the counts, net removal, rates, accuracy."""
    n = raw["n"]
    result = {k: v for k, v in raw.items() if k not in ("correct", "rerouted")}
    result["net_removal"] = (
        (result["before"] - result["after"]) / result["before"] if result["before"] else None
    )
    result["net_removal_within_pair"] = (
        (result["before"] - result["within_pair"]) / result["before"] if result["before"] else None
    )
    if "rerouted" in raw:
        result["rerouted"] = raw["rerouted"]
        result["reroute_rate"] = raw["rerouted"] / n if n else 0.0
    result["accuracy"] = {
        name: round(correct / n, 6) if n else 0.0 for name, correct in raw["correct"].items()
    }
    return result


def account(pred: Predictions) -> dict[str, Any]:
    """Accounting per group, per shift family, for the totals (clean, seen shifts, held-out
    shifts, natural, all) and the worst group. ``pred.variants`` must hold q0, f1 and q1 and
    ``pred.reference`` is f0; ``pred.scores["rerouted"]``, when present, marks the inputs a
    guarded q1 answered with the FP model.

    Each group is counted once, on views of its inputs; families and totals add the counts of
    their groups, so no row copies every input."""
    q0, f1, q1 = (pred.variants[k] for k in ("q0", "f1", "q1"))
    rerouted = pred.scores.get("rerouted")

    def of(rows: slice | np.ndarray) -> dict[str, Any]:
        guard = None if rerouted is None else rerouted[rows]
        return _raw(pred.label[rows], pred.reference[rows], q0[rows], f1[rows], q1[rows], guard)

    cols = InputGroups.of(pred)
    raw = [of(rows) for rows in cols.slices()]

    def over(groups: np.ndarray) -> dict[str, Any]:
        picked = [r for r, keep in zip(raw, groups, strict=True) if keep]
        return _finish(add_counts(picked) if picked else of(slice(0, 0)))

    groups = [
        {"name": g.name, "held_out": g.held_out} | _finish(counts)
        for g, counts in zip(pred.groups, raw, strict=True)
    ]
    by_shift = [{"name": "clean"} | over(cols.kind == "clean")]
    by_shift += [
        {"name": f, "held_out": bool(cols.held_out[cols.shift == f].any())} | over(cols.shift == f)
        for f in cols.synthetic_families(pred.groups)
    ]
    shifted = cols.kind == "shifted"
    totals = {
        "all": over(np.ones(len(pred.groups), dtype=bool)),
        "clean": over(cols.kind == "clean"),
        "seen_shifts": over(shifted & ~cols.held_out),
        "held_out_shifts": over(shifted & cols.held_out),
        "natural": over(cols.kind == "natural"),
    }
    return {"totals": totals, "groups": groups, "by_shift": by_shift, "worst_group": _worst(groups)}


def _worst(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The group with the highest disagreement rate before, the one with the highest after, and
    the one where q1 is least accurate; each with its before and after rates."""
    measured = [g for g in groups if g["n"]]

    def row(g: dict[str, Any]) -> dict[str, Any]:
        return {
            "group": g["name"],
            "n": g["n"],
            "before_rate": g["before"] / g["n"],
            "after_rate": g["after"] / g["n"],
            "q1_accuracy": g["accuracy"]["q1"],
            "f0_accuracy": g["accuracy"]["f0"],
        }

    return {
        "before": row(worst(measured, lambda g: g["before"] / g["n"])),
        "after": row(worst(measured, lambda g: g["after"] / g["n"])),
        "q1_accuracy": row(worst(measured, lambda g: g["accuracy"]["q1"], lowest=True)),
    }
