from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
)

from mitigate.errors import MitigateError
from mitigate.selectors import (
    PROTOCOLS,
    compute_scores,
    detection_metrics,
    evaluate_scores,
    paper_protocol,
    select,
)


def sk_tnr_at_95(truth: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return float((1.0 - fpr)[tpr >= 0.95].max())


def tm_tnr_at_95(truth: torch.Tensor, preds01: torch.Tensor) -> float:
    fpr, tpr, _ = binary_roc(preds01, truth.long())
    return float((1.0 - fpr)[tpr >= 0.95].max())


def noisy_detector(n: int, seed: int, levels: int | None = None):
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(n, generator=g) < 0.15
    scores = truth.double() * 0.8 + torch.randn(n, generator=g, dtype=torch.float64)
    if levels is not None:  # many ties
        scores = (scores * levels).round() / levels
    return scores, truth


@pytest.mark.parametrize(("seed", "levels"), [(0, None), (1, None), (2, 3), (3, 1)])
def test_ranking_metrics_match_sklearn_and_torchmetrics(seed: int, levels: int | None) -> None:
    scores, truth = noisy_detector(700, seed, levels)
    m = detection_metrics(scores, truth, budget=0.1)
    y, s = truth.numpy(), scores.numpy()
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["aupr"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["tnr_at_95tpr"] == pytest.approx(sk_tnr_at_95(y, s), abs=1e-12)
    # torchmetrics: the same definitions, computed in float32 (scores mapped into [0, 1] so it
    # does not apply a sigmoid).
    p01 = (scores - scores.min()) / (scores.max() - scores.min())
    assert m["auroc"] == pytest.approx(float(binary_auroc(p01, truth.long())), abs=1e-5)
    assert m["aupr"] == pytest.approx(float(binary_average_precision(p01, truth.long())), abs=1e-5)
    assert m["tnr_at_95tpr"] == pytest.approx(tm_tnr_at_95(truth, p01), abs=1e-5)
    assert m["n"] == 700 and m["positives"] == int(truth.sum()) and m["budget"] == 70


def test_tnr_at_exact_95_boundary() -> None:
    # 20 positives: the 19th positive reaches TPR 19/20 = 0.95 exactly and must count.
    scores = torch.arange(40, 0, -1, dtype=torch.float64)
    truth = torch.zeros(40, dtype=torch.bool)
    truth[:19] = True  # top 19 positive
    truth[25] = True  # the 20th positive below 6 negatives
    m = detection_metrics(scores, truth, budget=20)
    assert m["tnr_at_95tpr"] == 1.0 == sk_tnr_at_95(truth.numpy(), scores.numpy())
    assert m["precision_at_budget"] == 19 / 20 and m["recall_at_budget"] == 19 / 20


def test_budget_metrics_by_hand() -> None:
    scores = torch.tensor([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
    truth = torch.tensor([0, 1, 0, 1, 1, 0])
    m = detection_metrics(scores, truth, budget=2)
    assert (m["precision_at_budget"], m["recall_at_budget"]) == (0.5, 1 / 3)  # picks 0 and 1
    m = detection_metrics(scores, truth, budget=0.5)
    assert (m["precision_at_budget"], m["recall_at_budget"], m["budget"]) == (1 / 3, 1 / 3, 3)
    m = detection_metrics(scores, truth, budget=100)
    assert (m["precision_at_budget"], m["recall_at_budget"]) == (0.5, 1.0)


def test_oracle_auroc_is_exactly_one() -> None:
    # Sizes at which torchmetrics' float32 areas come out as 0.99999994 or 1.0000001.
    for seed, n in enumerate([228, 771, 1760, 4141]):
        g = torch.Generator().manual_seed(seed)
        fp = torch.randn(n, 4, generator=g)
        q = fp + 0.7 * torch.randn(n, 4, generator=g)
        scores = compute_scores(["oracle", "margin"], fp, q)
        truth = fp.argmax(1) != q.argmax(1)
        m = detection_metrics(scores["oracle"], truth, budget=int(truth.sum()))
        assert (m["auroc"], m["aupr"], m["tnr_at_95tpr"]) == (1.0, 1.0, 1.0)
        assert (m["precision_at_budget"], m["recall_at_budget"]) == (1.0, 1.0)
        assert detection_metrics(scores["margin"], truth, budget=10)["auroc"] < 1.0


def test_undefined_metrics_are_nan() -> None:
    scores = torch.tensor([0.3, 0.2, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warnings either
        none = detection_metrics(scores, torch.zeros(3, dtype=torch.bool), budget=2)
        every = detection_metrics(scores, torch.ones(3, dtype=torch.bool), budget=0)
    for m in (none, every):
        assert math.isnan(m["auroc"]) and math.isnan(m["aupr"]) and math.isnan(m["tnr_at_95tpr"])
    assert none["precision_at_budget"] == 0.0 and math.isnan(none["recall_at_budget"])
    assert math.isnan(every["precision_at_budget"]) and every["recall_at_budget"] == 0.0
    empty = detection_metrics(torch.empty(0), torch.empty(0, dtype=torch.bool), budget=0.5)
    assert empty["n"] == 0 and math.isnan(empty["auroc"])


def test_paper_protocol() -> None:
    scores, truth = noisy_detector(4000, seed=5)
    m = paper_protocol(scores, truth, seed=0)
    positives = int(truth.sum())
    assert (m["n"], m["positives"], m["n_test"]) == (
        2 * positives,
        positives,
        math.ceil(0.2 * positives),
    )
    assert 0.6 < m["auroc"] < 0.8  # a noisy but real detector
    assert paper_protocol(scores, truth, seed=0) == m  # deterministic
    assert paper_protocol(scores, truth, seed=1) != m
    # A score pointing the wrong way is flipped by the regression: same ranking quality.
    flipped = paper_protocol(-scores, truth, seed=0)
    assert flipped["auroc"] == pytest.approx(m["auroc"], abs=1e-12)
    oracle = paper_protocol(truth.double() + 0.1 * scores.sigmoid(), truth, seed=3)
    assert (oracle["auroc"], oracle["aupr"], oracle["tnr_at_95tpr"]) == (1.0, 1.0, 1.0)
    few = paper_protocol(scores[:40], truth[:40], seed=0)
    assert few["positives"] < 10 and math.isnan(few["auroc"])


def test_evaluate_scores_groups_share_one_selection() -> None:
    scores, truth = noisy_detector(900, seed=7)
    groups = torch.arange(900) % 3
    other = scores.flip(0)
    rows = evaluate_scores(
        {"a": scores, "b": other},
        truth,
        budget=90,
        groups=groups,
        group_names=["clean", "noise", "blur"],
    )
    assert [(r["score"], r["group"]) for r in rows] == [
        (s, g) for s in "ab" for g in ("all", "clean", "noise", "blur")
    ]
    overall, *per_group = rows[:4]
    assert overall == {"score": "a", "group": "all", **detection_metrics(scores, truth, budget=90)}
    selected = select(scores, 90)
    assert sum(r["budget"] for r in per_group) == 90
    for gid, row in enumerate(per_group):
        mask = groups == gid
        chosen = selected[groups[selected] == gid]
        assert row["budget"] == chosen.shape[0]
        assert row["precision_at_budget"] == pytest.approx(truth[chosen].double().mean().item())
        assert row["recall_at_budget"] == pytest.approx(
            truth[chosen].sum().item() / truth[mask].sum().item()
        )
        assert row["auroc"] == pytest.approx(roc_auc_score(truth[mask], scores[mask]), abs=1e-12)
    paper = evaluate_scores({"a": scores}, truth, groups=groups, protocol="paper", seed=2)
    assert [r["group"] for r in paper] == ["all", "0", "1", "2"]
    assert paper[0] == {"score": "a", "group": "all", **paper_protocol(scores, truth, seed=2)}


def test_errors() -> None:
    scores, truth = noisy_detector(20, seed=0)
    with pytest.raises(MitigateError, match="unknown protocol 'pap'; valid choices: standard, p"):
        evaluate_scores({"a": scores}, truth, budget=1, protocol="pap")
    assert PROTOCOLS == ("standard", "paper")
    with pytest.raises(MitigateError, match="needs a budget"):
        evaluate_scores({"a": scores}, truth)
    with pytest.raises(MitigateError, match="has 19 entries, truth has 20"):
        evaluate_scores({"a": scores[:19]}, truth, budget=1)
    with pytest.raises(MitigateError, match=r"group ids must be in \[0, 1\)"):
        evaluate_scores(
            {"a": scores}, truth, budget=1, groups=torch.arange(20) % 2, group_names=["x"]
        )
    with pytest.raises(MitigateError, match="is_disagreement has 19 entries but scores have 20"):
        detection_metrics(scores, truth[:19], budget=1)
    with pytest.raises(MitigateError, match="only 0 and 1"):
        detection_metrics(scores, torch.full((20,), 2), budget=1)
    with pytest.raises(MitigateError, match="contain NaN"):
        paper_protocol(torch.full((20,), float("nan")), truth, seed=0)
