from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate.data.evalset import Group
from mitigate.mitigation.accounting import account, counts
from mitigate.scanning import Predictions


@settings(max_examples=50, deadline=None, database=None)
@given(st.integers(0, 2**31 - 1))
def test_before_minus_removed_plus_introduced_is_after_everywhere(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    groups = [Group("clean"), Group("a/1", "a", 1), Group("b/1", "b", 1, held_out=True)]
    label = rng.integers(0, 3, n)
    f0 = np.where(rng.random(n) < 0.8, label, rng.integers(0, 3, n))
    q0 = np.where(rng.random(n) < 0.7, f0, rng.integers(0, 3, n))
    f1 = np.where(rng.random(n) < 0.9, f0, rng.integers(0, 3, n))
    q1 = np.where(rng.random(n) < 0.7, f1, rng.integers(0, 3, n))
    pred = Predictions(
        groups,
        rng.integers(0, 3, n).astype(np.int32),
        np.arange(n),
        label,
        f0,
        {"q0": q0, "f1": f1, "q1": q1},
    )
    report = account(pred)
    rows = [*report["groups"], *report["by_shift"], *report["totals"].values()]
    for row in rows:
        assert row["before"] - row["removed"] + row["introduced"] == row["after"]
        assert row["survived"] + row["removed"] == row["before"]
    assert report["totals"]["all"]["before"] == int((q0 != f0).sum())
    assert report["totals"]["all"]["churn"] == int((f1 != f0).sum())
    assert report["totals"]["all"]["within_pair"] == int((q1 != f1).sum())
    parts = ("clean", "seen_shifts", "held_out_shifts", "natural")
    assert sum(report["totals"][p]["n"] for p in parts) == n


def test_counts_name_each_kind_of_change():
    label = np.array([0, 0, 0, 0, 0])
    f0 = np.array([0, 0, 0, 0, 1])
    q0 = np.array([1, 0, 1, 0, 1])  # disagreements at 0 and 2
    f1 = np.array([0, 0, 0, 2, 1])  # churn at 3
    q1 = np.array([0, 1, 1, 2, 1])  # vs f0: disagree at 1, 2, 3
    c = counts(label, f0, q0, f1, q1)
    assert (c["before"], c["removed"], c["introduced"], c["survived"], c["after"]) == (
        2,
        1,
        2,
        1,
        3,
    )
    assert c["churn"] == 1 and c["within_pair"] == 2
    assert c["net_removal"] == (2 - 3) / 2
    assert c["accuracy"] == {"f0": 0.8, "q0": 0.4, "f1": 0.6, "q1": 0.2}


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(0, 2**31 - 1), st.booleans(), st.booleans())
def test_group_by_group_accounting_equals_a_whole_array_recount(seed, scan_order, guarded):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    groups = [
        Group("clean"),
        Group("a/1", "a", 1),
        Group("a/2", "a", 2),
        Group("b/1", "b", 1, held_out=True),
        Group("natural:x", source="x", held_out=True),
    ]
    group = rng.integers(0, len(groups), n).astype(np.int32)  # some groups may be empty
    if scan_order:
        group = np.sort(group)
    label = rng.integers(0, 3, n)
    f0 = np.where(rng.random(n) < 0.8, label, rng.integers(0, 3, n))
    q0 = np.where(rng.random(n) < 0.7, f0, rng.integers(0, 3, n))
    f1 = np.where(rng.random(n) < 0.9, f0, rng.integers(0, 3, n))
    q1 = np.where(rng.random(n) < 0.7, f1, rng.integers(0, 3, n))
    rerouted = (rng.random(n) < 0.2).astype(np.float32)
    scores = {"rerouted": rerouted} if guarded else {}
    variants = {"q0": q0, "f1": f1, "q1": q1}
    pred = Predictions(groups, group, np.arange(n), label, f0, variants, scores)
    report = account(pred)

    def whole(mask):  # every input masked at once, as account counted before
        guard = rerouted[mask] if guarded else None
        row = counts(label[mask], f0[mask], q0[mask], f1[mask], q1[mask], guard)
        models = {"f0": f0, "q0": q0, "f1": f1, "q1": q1}
        assert row["accuracy"] == {  # the mean of the whole mask, as before
            k: round(float((v[mask] == label[mask]).mean()), 6) if mask.any() else 0.0
            for k, v in models.items()
        }
        return row

    kind = np.array([g.kind for g in groups])[group]
    shift = np.array([g.shift or "" for g in groups])[group]
    held_out = np.array([g.held_out for g in groups])[group]
    for i, row in enumerate(report["groups"]):
        assert {k: v for k, v in row.items() if k not in ("name", "held_out")} == whole(group == i)
    for row in report["by_shift"]:
        mask = kind == "clean" if row["name"] == "clean" else shift == row["name"]
        assert {k: v for k, v in row.items() if k not in ("name", "held_out")} == whole(mask)
    shifted = kind == "shifted"
    masks = {
        "all": np.ones(n, dtype=bool),
        "clean": kind == "clean",
        "seen_shifts": shifted & ~held_out,
        "held_out_shifts": shifted & held_out,
        "natural": kind == "natural",
    }
    assert report["totals"] == {k: whole(m) for k, m in masks.items()}
