from __future__ import annotations

import numpy as np

from mitigate.counting import summarize
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
