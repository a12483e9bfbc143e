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
