from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate.counting import summarize, tally
from mitigate.data.evalset import Group
from mitigate.scanning import Predictions


def _predictions(seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    groups = [
        Group("clean"),
        Group("fog/1", "fog", 1, held_out=True),
        Group("fog/2", "fog", 2, held_out=True),
        Group("blur/1", "blur", 1),
    ]
    n = 400
    group = rng.integers(0, len(groups), n).astype(np.int32)
    label = rng.integers(0, 4, n)
    fp = np.where(rng.random(n) < 0.8, label, rng.integers(0, 4, n))
    a = np.where(rng.random(n) < 0.9, fp, rng.integers(0, 4, n))
    b = np.where(rng.random(n) < 0.7, fp, rng.integers(0, 4, n))
    return Predictions(
        groups, group, np.arange(n), label, fp, {"a": a, "b": b}, classes=("w", "x", "y", "z")
    )


def test_counts_equal_a_direct_recount():
    p = _predictions()
    report = summarize(p)
    for i, g in enumerate(report["groups"]):
        m = p.group == i
        assert g["n"] == m.sum()
        for s in ("a", "b"):
            assert g["disagreements"][s] == (p.variants[s][m] != p.reference[m]).sum()
            assert g["accuracy"][s] == round((p.variants[s][m] == p.label[m]).mean(), 6)
        union = (p.variants["a"][m] != p.reference[m]) | (p.variants["b"][m] != p.reference[m])
        assert g["disagreements"]["any"] == union.sum()
    fog = next(r for r in report["by_shift"] if r["name"] == "fog")
    assert fog["n"] == np.isin(p.group, [1, 2]).sum()
    assert report["totals"]["held_out"]["n"] == fog["n"]
    assert sum(c["n"] for c in report["by_class"]) == len(p)
    assert report["totals"]["all"]["disagreements"]["a"] == (p.variants["a"] != p.reference).sum()


def test_flip_directions_add_up_to_disagreements():
    report = summarize(_predictions(1))
    for g in report["groups"]:
        for s in ("a", "b"):
            assert sum(g["flips"][s].values()) == g["disagreements"][s]


def test_worst_group_is_the_maximum_rate_and_minimum_accuracy():
    report = summarize(_predictions(2))
    for s in ("a", "b"):
        rates = {g["name"]: g["disagreement_rate"][s] for g in report["groups"]}
        accs = {g["name"]: g["accuracy"][s] for g in report["groups"]}
        worst = report["worst_group"][s]
        assert worst["by_disagreement"]["disagreement_rate"] == max(rates.values())
        assert rates[worst["by_disagreement"]["group"]] == max(rates.values())
        assert accs[worst["by_accuracy"]["group"]] == min(accs.values())


def test_predictions_round_trip_through_npz(tmp_path):
    p = _predictions(3)
    p.save(tmp_path / "p.npz")
    q = Predictions.load(tmp_path / "p.npz")
    assert q.groups == p.groups and q.classes == p.classes
    assert summarize(q) == summarize(p)
    assert not list(tmp_path.glob("*.tmp*"))


# ---- the group-by-group counts equal a whole-array recount -----------------------------------

_GROUPS = [
    Group("clean"),
    Group("fog/1", "fog", 1, held_out=True),
    Group("fog/2", "fog", 2, held_out=True),
    Group("blur/1", "blur", 1),
    Group("blur/2", "blur", 2),
    Group("natural:x", source="x", held_out=True),
]


def _whole_array_counts(pred: Predictions, mask: np.ndarray) -> dict:
    """One report row counted on every input at once, masks over all inputs: what
    ``summarize`` computed before it counted group by group."""
    t = tally(
        pred.label[mask], pred.reference[mask], {s: v[mask] for s, v in pred.variants.items()}
    )
    n = t["n"]
    disagreements = t["disagreements"] | {"any": int(t["union"].sum())}

    def share(count: int) -> float:
        return round(count / n, 6) if n else 0.0

    return {
        "n": n,
        "disagreements": disagreements,
        "disagreement_rate": {k: share(v) for k, v in disagreements.items()},
        "accuracy": {k: share(v) for k, v in t["correct"].items()},
        "flips": t["flips"],
    }


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_group_by_group_counts_equal_a_whole_array_recount(seed, scan_order):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    # Some groups may be empty; a scan writes groups in order, a hand-made file need not.
    group = rng.integers(0, len(_GROUPS), n).astype(np.int32)
    if scan_order:
        group = np.sort(group)
    label = rng.integers(0, 3, n)
    fp = np.where(rng.random(n) < 0.8, label, rng.integers(0, 3, n))
    variants = {s: np.where(rng.random(n) < 0.7, fp, rng.integers(0, 3, n)) for s in "ab"}
    p = Predictions(_GROUPS, group, np.arange(n), label, fp, variants, classes=("u", "v", "w"))
    report = summarize(p)

    kind = np.array([g.kind for g in _GROUPS])[group]
    shift = np.array([g.shift or "" for g in _GROUPS])[group]
    severity = np.array([g.severity for g in _GROUPS])[group]
    held_out = np.array([g.held_out for g in _GROUPS])[group]
    for i, row in enumerate(report["groups"]):
        assert {k: row[k] for k in _ROW} == _whole_array_counts(p, group == i)
    for row in report["by_shift"]:
        mask = kind == "clean" if row["name"] == "clean" else shift == row["name"]
        assert {k: row[k] for k in _ROW} == _whole_array_counts(p, mask)
    for row in report["by_severity"][1:]:
        mask = (severity == row["severity"]) & (kind == "shifted")
        assert {k: row[k] for k in _ROW} == _whole_array_counts(p, mask)
    for row in report["by_class"]:
        assert {k: row[k] for k in _ROW} == _whole_array_counts(p, label == row["class"])
    masks = {
        "all": np.ones(n, dtype=bool),
        "clean": kind == "clean",
        "shifted": kind == "shifted",
        "natural": kind == "natural",
        "held_out": held_out,
    }
    assert report["totals"] == {k: _whole_array_counts(p, m) for k, m in masks.items()}


_ROW = ("n", "disagreements", "disagreement_rate", "accuracy", "flips")
