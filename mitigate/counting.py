"""Counts of disagreements and accuracy over the groups of a scan, and the worst group.

Pure functions of :class:`~mitigate.scanning.Predictions`, so every count in a report can be
recomputed from its ``predictions.npz``. Inputs are grouped by measured group (clean, each
shift x severity, each natural shift), by shift *family* (all severities of a shift; clean and
each natural shift stand alone), by severity, by kind (clean, shifted, natural), and by class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from mitigate.data.evalset import Group
from mitigate.scanning import Predictions

__all__ = [
    "ANY",
    "InputGroups",
    "add_counts",
    "family_of",
    "group_metrics",
    "summarize",
    "tally",
    "worst",
]

ANY = "any"  # the union over schemes: an input on which at least one copy disagrees
Row = TypeVar("Row")


def family_of(groups: Sequence[Group]) -> tuple[list[str], np.ndarray]:
    """The family of each group — its shift, or its own name for clean and natural groups —
    as ``(names in first-seen order, int64 [len(groups)] index into names)``."""
    family = [g.shift if g.shift is not None else g.name for g in groups]
    names = list(dict.fromkeys(family))
    return names, np.array([names.index(f) for f in family], dtype=np.int64)


@dataclass(frozen=True)
class InputGroups:
    """Per-group columns of a scan (each ``[G]``, one entry per measured group) and the
    per-input group index that spreads them over the inputs.

    Columns are kept per group, not per input: a per-input copy of each (strings included)
    would cost more than the scan's own result arrays. :meth:`where` makes one boolean input
    mask at a time, and :meth:`slices` walks the groups without copying the inputs.

    Attributes:
        group: ``int [N]``, the scan's group index of every input (not a copy).
        kind: ``[G]`` ``"clean"``, ``"shifted"`` or ``"natural"``.
        held_out: ``bool [G]``, the group's family is held out of the pool.
        shift: ``[G]`` the shift family, ``""`` for clean and natural groups.
        severity: ``int64 [G]``, 1-5 for shifted groups, 0 otherwise.
        families: the family names (see :func:`family_of`); ``family`` indexes them.
        family: ``int64 [G]`` index into ``families``.
    """

    group: np.ndarray
    kind: np.ndarray
    held_out: np.ndarray
    shift: np.ndarray
    severity: np.ndarray
    families: list[str]
    family: np.ndarray

    @classmethod
    def of(cls, pred: Predictions) -> InputGroups:
        names, index = family_of(pred.groups)
        return cls(
            group=pred.group,
            kind=np.array([x.kind for x in pred.groups]),
            held_out=np.array([x.held_out for x in pred.groups], dtype=bool),
            shift=np.array([x.shift or "" for x in pred.groups]),
            severity=np.array([x.severity for x in pred.groups], dtype=np.int64),
            families=names,
            family=index,
        )

    def where(self, groups: np.ndarray) -> np.ndarray:
        """``bool [N]``: the inputs of the groups where ``groups`` (``bool [G]``) holds."""
        return groups[self.group]

    def slices(self) -> Iterator[slice | np.ndarray]:
        """For each group in order, what indexes its inputs: a slice (a view, no copy) when
        the inputs come group by group, as a scan writes them; else their positions."""
        g, count = self.group, len(self.kind)
        if g.size < 2 or bool((g[1:] >= g[:-1]).all()):
            bounds = np.searchsorted(g, np.arange(count + 1), side="left")
            for i in range(count):
                yield slice(int(bounds[i]), int(bounds[i + 1]))
        else:
            for i in range(count):
                yield np.flatnonzero(g == i)

    def synthetic_families(self, groups: Sequence[Group]) -> list[str]:
        """The shift families of ``groups`` (no clean, no natural), in order."""
        return list(dict.fromkeys(x.shift for x in groups if x.shift is not None))


def add_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of count dicts of disjoint input sets: every int added, nested dicts key by
    key (the first row's keys and order). A count over a union of groups is the sum of the
    groups' counts, so each group's inputs are read once and never copied whole."""
    rows = list(rows)
    total: dict[str, Any] = {}
    for key, value in rows[0].items():
        parts = [row[key] for row in rows]
        total[key] = add_counts(parts) if isinstance(value, Mapping) else sum(parts)
    return total


def tally(
    label: np.ndarray, reference: np.ndarray, others: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Disagreements of each labelling in ``others`` with ``reference``, and every model's
    correct answers, on one set of inputs (all arrays ``int [n]``).

    Returns ``{"n", "disagreements": {name: int}, "correct": {"fp": int, name: int},
    "flips": {name: {correct_to_wrong, wrong_to_correct, wrong_to_other_wrong}},
    "union": bool [n]}`` (``union``: some labelling disagrees).
    """
    n = int(label.shape[0])
    fp_right = reference == label
    union = np.zeros(n, dtype=bool)
    disagreements: dict[str, int] = {}
    correct = {"fp": int(fp_right.sum())}
    flips: dict[str, dict[str, int]] = {}
    for name, labels in others.items():
        flipped = labels != reference
        right = labels == label
        union |= flipped
        disagreements[name] = int(flipped.sum())
        correct[name] = int(right.sum())
        flips[name] = {
            "correct_to_wrong": int((flipped & fp_right).sum()),
            "wrong_to_correct": int((flipped & right).sum()),
            "wrong_to_other_wrong": int((flipped & ~fp_right & ~right).sum()),
        }
    return {
        "n": n,
        "disagreements": disagreements,
        "correct": correct,
        "flips": flips,
        "union": union,
    }


def worst(rows: Sequence[Row], key: Callable[[Row], float], *, lowest: bool = False) -> Row:
    """The row with the highest ``key`` (``lowest=True``: the lowest); ties go to the first in
    order, so a report names the same group however its numbers were recounted."""
    return (min if lowest else max)(rows, key=key)


# ---- evaluate: every scheme against the FP model ---------------------------------------------


def summarize(pred: Predictions) -> dict[str, Any]:
    """Counts and accuracies for every way of grouping the inputs.

    Returns a JSON-able dict with ``schemes``, ``groups`` (one entry per measured group, in
    order), ``by_shift`` (families over all severities, clean first), ``by_severity``,
    ``by_class`` (by true label), ``totals`` (``all``, ``clean``, ``shifted``, ``natural``,
    ``held_out``) and ``worst_group`` (per scheme, the group with the highest disagreement rate
    and the one with the lowest quantized accuracy).
    """
    schemes = list(pred.variants)
    cols = InputGroups.of(pred)
    # Each group is counted once, on views of its inputs; every other row (families,
    # severities, totals) adds the counts of its groups instead of masking all inputs again.
    raw = [_raw_counts(pred, rows) for rows in cols.slices()]

    def over(groups: np.ndarray) -> dict[str, Any]:
        picked = [r for r, keep in zip(raw, groups, strict=True) if keep]
        return _entry(add_counts(picked) if picked else _raw_counts(pred, slice(0, 0)))

    groups = []
    for g, counts in zip(pred.groups, raw, strict=True):
        entry = {"name": g.name, "shift": g.shift, "severity": g.severity, "held_out": g.held_out}
        groups.append(entry | _entry(counts))

    clean = cols.kind == "clean"
    by_shift = [{"name": "clean"} | over(clean)]
    by_shift += [{"name": f} | over(cols.shift == f) for f in cols.synthetic_families(pred.groups)]

    severities = sorted({g.severity for g in pred.groups if g.shift is not None})
    by_severity = [{"severity": 0, "name": "clean"} | over(clean)]
    by_severity += [
        {"severity": s, "name": f"severity {s}"}
        | over((cols.severity == s) & (cols.kind == "shifted"))
        for s in severities
    ]

    names = pred.classes or tuple(str(c) for c in range(int(pred.label.max()) + 1))
    by_class = [
        {"class": c, "name": n} | _entry(_raw_counts(pred, pred.label == c))
        for c, n in enumerate(names)
    ]

    totals = {
        "all": over(np.ones(len(pred.groups), dtype=bool)),
        "clean": over(clean),
        "shifted": over(cols.kind == "shifted"),
        "natural": over(cols.kind == "natural"),
        "held_out": over(cols.held_out),
    }
    return {
        "schemes": schemes,
        "n": len(pred),
        "groups": groups,
        "by_shift": by_shift,
        "by_severity": by_severity,
        "by_class": by_class,
        "totals": totals,
        "worst_group": _worst_per_scheme(groups, schemes),
    }


def _raw_counts(pred: Predictions, rows: slice | np.ndarray) -> dict[str, Any]:
    """The integer counts of the inputs at ``rows`` (a slice, positions or a boolean mask):
    ``n``, ``disagreements`` (per scheme and ``any``), ``correct`` and ``flips``."""
    others = {scheme: labels[rows] for scheme, labels in pred.variants.items()}
    t = tally(pred.label[rows], pred.reference[rows], others)
    return {
        "n": t["n"],
        "disagreements": t["disagreements"] | {ANY: int(t["union"].sum())},
        "correct": t["correct"],
        "flips": t["flips"],
    }


def _entry(counts: dict[str, Any]) -> dict[str, Any]:
    """A report row from :func:`_raw_counts`: the counts with their rates."""
    n = counts["n"]
    return {
        "n": n,
        "disagreements": counts["disagreements"],
        "disagreement_rate": {k: _share(v, n) for k, v in counts["disagreements"].items()},
        "accuracy": {k: _share(v, n) for k, v in counts["correct"].items()},
        "flips": counts["flips"],
    }


def _worst_per_scheme(groups: list[dict[str, Any]], schemes: list[str]) -> dict[str, Any]:
    """Per scheme: the measured group with the highest disagreement rate and the one with the
    lowest quantized accuracy (ties: the first in group order)."""
    measured = [g for g in groups if g["n"] > 0]
    result: dict[str, Any] = {}
    for scheme in [*schemes, ANY]:
        entry: dict[str, Any] = {}
        if measured:
            by_rate = worst(measured, lambda g, s=scheme: g["disagreement_rate"][s])
            entry["by_disagreement"] = {
                "group": by_rate["name"],
                "n": by_rate["n"],
                "disagreements": by_rate["disagreements"][scheme],
                "disagreement_rate": by_rate["disagreement_rate"][scheme],
            }
        if scheme != ANY and measured:
            by_acc = worst(measured, lambda g, s=scheme: g["accuracy"][s], lowest=True)
            entry["by_accuracy"] = {
                "group": by_acc["name"],
                "n": by_acc["n"],
                "accuracy": by_acc["accuracy"][scheme],
                "fp_accuracy": by_acc["accuracy"]["fp"],
            }
        result[scheme] = entry
    return result


def _share(count: int, n: int) -> float:
    return round(count / n, 6) if n else 0.0


# ---- calibrate: one quantized copy, worst group over families and classes ------------------


def group_metrics(pred: Predictions, quantized: np.ndarray) -> dict[str, Any]:
    """Accuracy and disagreement (against ``pred.reference``, the FP labels) overall and per
    group, and the worst group of each.

    Groups are the ones study B reports worst-case numbers over: the clean inputs, each shift
    family (all its severities together, held-out families included), each natural shift, and
    each class (by true label).

    Args:
        pred: :class:`~mitigate.scanning.Predictions` holding labels and the FP model's labels.
        quantized: ``int [N]`` labels of the quantized copy on the same inputs.

    Returns:
        ``overall`` and every entry of ``groups``: ``{n, disagreements, disagreement_rate,
        accuracy, fp_accuracy}``; ``worst_disagreement``: the group with the highest
        disagreement rate; ``worst_accuracy``: the one with the lowest quantized accuracy
        (ties: the first in group order).
    """
    quantized = np.asarray(quantized)
    overall = _one(pred.label, pred.reference, quantized)
    groups = [
        {"name": name} | _one(pred.label[m], pred.reference[m], quantized[m])
        for name, m in _family_and_class_masks(pred).items()
    ]
    worst_dis = worst(groups, lambda g: g["disagreement_rate"])
    worst_acc = worst(groups, lambda g: g["accuracy"], lowest=True)
    return {
        "overall": overall,
        "groups": groups,
        "worst_disagreement": {
            k: worst_dis[k] for k in ("name", "n", "disagreements", "disagreement_rate")
        },
        "worst_accuracy": {k: worst_acc[k] for k in ("name", "n", "accuracy", "fp_accuracy")},
    }


def _family_and_class_masks(pred: Predictions) -> dict[str, np.ndarray]:
    """Group name -> boolean mask: ``clean``, each family, each ``natural:<name>``, then
    ``class:<name>`` for every class present."""
    cols = InputGroups.of(pred)
    masks = {name: cols.where(cols.family == i) for i, name in enumerate(cols.families)}
    classes = pred.classes or tuple(str(c) for c in range(int(pred.label.max()) + 1))
    for c, class_name in enumerate(classes):
        masks[f"class:{class_name}"] = pred.label == c
    return {name: mask for name, mask in masks.items() if mask.any()}


def _one(label: np.ndarray, fp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    t = tally(label, fp, {"q": q})
    n = t["n"]
    return {
        "n": n,
        "disagreements": t["disagreements"]["q"],
        "disagreement_rate": t["disagreements"]["q"] / n if n else 0.0,
        "accuracy": t["correct"]["q"] / n if n else 0.0,
        "fp_accuracy": t["correct"]["fp"] / n if n else 0.0,
    }
