from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from mitigate.config import Config, override
from mitigate.data.evalset import Batch, Group
from mitigate.errors import MitigateError
from mitigate.reports.score import score_table, winner_lines
from mitigate.runs.score import score, score_report
from mitigate.scanning import Predictions, scan, score_key
from mitigate.selectors import detection_metrics, score_names

GROUPS = [
    Group("clean"),
    Group("noise/1", "noise", 1),
    Group("noise/3", "noise", 3),
    Group("blur/3", "blur", 3, held_out=True),
]
PER_GROUP = 150


def _linear(weight: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    model[1].weight.data.copy_(weight)
    return model


@pytest.fixture(scope="module")
def predictions() -> Predictions:
    """A real scan of a linear 'FP model', a perturbed copy (disagrees near the decision
    boundaries) and an exact copy (never disagrees), over four groups."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 6, generator=g)
    noisy = weight + 0.3 * torch.randn(4, 6, generator=g)
    batches = []
    for i in range(len(GROUPS)):
        for start in range(0, PER_GROUP, 64):
            index = torch.arange(start, min(start + 64, PER_GROUP))
            x = torch.randn(len(index), 1, 2, 3, generator=g) * (1 + i)
            batches.append(Batch(x, torch.randint(4, (len(index),), generator=g), i, index))
    variants = {"noisy": _linear(noisy), "exact": _linear(weight)}
    return scan(_linear(weight), variants, batches, groups=GROUPS, scores=score_names(), seed=3)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _recount(pred: Predictions, row: dict, mask: np.ndarray, budget: int) -> dict:
    """Standard-protocol metrics of one row's subset, from the arrays alone."""
    values = torch.from_numpy(pred.scores[score_key(row["score"], row["scheme"])])
    truth = torch.from_numpy(pred.variants[row["scheme"]] != pred.reference)
    chosen = torch.zeros(len(pred), dtype=torch.bool)
    chosen[torch.sort(values, descending=True, stable=True).indices[:budget]] = True
    m = torch.from_numpy(mask)
    whole = detection_metrics(values[m], truth[m], budget=0)
    hits, k, positives = (
        int((chosen & truth & m).sum()),
        int((chosen & m).sum()),
        whole["positives"],
    )
    return {
        "auroc": _nan_to_none(whole["auroc"]),
        "aupr": _nan_to_none(whole["aupr"]),
        "tnr_at_95tpr": _nan_to_none(whole["tnr_at_95tpr"]),
        "budget": k,
        "precision_at_budget": hits / k if k else None,
        "recall_at_budget": hits / positives if positives else None,
        "n": int(mask.sum()),
        "positives": positives,
    }


def _pick(row: dict, keys: dict) -> dict:
    return {k: row[k] for k in keys}


def test_score_key_names_the_scan_column() -> None:
    assert score_key("margin", "int8") == "margin"
    assert score_key("oracle", "int4-weight") == "oracle@int4-weight"


def test_standard_report_recounts_from_the_arrays(predictions: Predictions) -> None:
    report = score_report(predictions, score_names(), budget=40, seed=3)
    assert report["schemes"] == ["noisy", "exact"] and report["n"] == 4 * PER_GROUP
    assert len(report["results"]) == 2 * len(score_names())
    shift_of = np.array([g.shift or g.name for g in GROUPS])[predictions.group]
    for row in report["results"]:
        overall = _recount(predictions, row, np.ones(len(predictions), dtype=bool), 40)
        assert _pick(row, overall) == pytest.approx(overall)
        assert [g["group"] for g in row["groups"]] == [g.name for g in GROUPS]
        for entry, group in zip(row["groups"], GROUPS, strict=True):
            want = _recount(predictions, row, predictions.group == GROUPS.index(group), 40)
            assert _pick(entry, want) == pytest.approx(want)
            assert entry["held_out"] is group.held_out
        assert [g["group"] for g in row["by_shift"]] == ["clean", "noise", "blur"]
        for entry in row["by_shift"]:
            want = _recount(predictions, row, shift_of == entry["group"], 40)
            assert _pick(entry, want) == pytest.approx(want)
        assert sum(g["budget"] for g in row["groups"]) == 40


def test_overall_metrics_match_sklearn(predictions: Predictions) -> None:
    report = score_report(predictions, ["margin", "kl"], budget=0.1)
    truth = predictions.variants["noisy"] != predictions.reference
    assert 10 < truth.sum() < len(truth) - 10
    for row in report["results"][:2]:
        values = predictions.scores[score_key(row["score"], "noisy")]
        assert row["auroc"] == pytest.approx(roc_auc_score(truth, values), abs=1e-12)
        assert row["aupr"] == pytest.approx(average_precision_score(truth, values), abs=1e-12)
        assert row["budget"] == 60


def test_oracle_is_perfect_and_undefined_metrics_are_null(predictions: Predictions) -> None:
    report = score_report(predictions, score_names(), budget=40)
    rows = {(r["scheme"], r["score"]): r for r in report["results"]}
    assert rows["noisy", "oracle"]["auroc"] == 1.0
    assert rows["noisy", "oracle"]["tnr_at_95tpr"] == 1.0
    assert math.isfinite(rows["noisy", "random"]["auroc"])
    # The exact copy never disagrees: nothing to rank, no winner, and still strict JSON.
    assert rows["exact", "margin"]["positives"] == 0
    assert rows["exact", "margin"]["auroc"] is None
    assert rows["exact", "margin"]["precision_at_budget"] == 0.0
    assert report["winner"]["exact"] is None
    json.dumps(report, allow_nan=False)


def test_winner_is_the_best_real_score(predictions: Predictions) -> None:
    report = score_report(predictions, score_names(), budget=40)
    real = [
        r
        for r in report["results"]
        if r["scheme"] == "noisy" and r["score"] not in ("oracle", "random")
    ]
    best = max(real, key=lambda r: r["auroc"])
    fp_only = max(
        (r for r in real if r["score"] in ("margin", "least-confidence", "entropy", "gini")),
        key=lambda r: r["auroc"],
    )
    rows = {r["score"]: r for r in report["results"] if r["scheme"] == "noisy"}
    assert report["winner"]["noisy"] == {
        "score": best["score"],
        "auroc": best["auroc"],
        "aupr": best["aupr"],
        "best_fp_only": {"score": fp_only["score"], "auroc": fp_only["auroc"]},
        "baseline_auroc": rows["random"]["auroc"],
        "upper_bound_auroc": 1.0,
    }
    kl_only = score_report(predictions, ["kl", "random"], budget=40)["winner"]["noisy"]
    assert kl_only["score"] == "kl" and kl_only["best_fp_only"] is None
    only_bounds = score_report(predictions, ["oracle", "random"], budget=40)
    assert only_bounds["winner"] == {"noisy": None, "exact": None}


def test_paper_protocol_report(predictions: Predictions) -> None:
    report = score_report(predictions, ["margin", "oracle"], protocol="paper", seed=1)
    assert report["protocol"] == "paper" and report["budget"] is None
    row = report["results"][0]
    expected = {"auroc", "aupr", "tnr_at_95tpr", "n", "positives", "n_test"}
    assert expected <= set(row) and "precision_at_budget" not in row
    assert row["n"] == 2 * row["positives"]
    assert report["results"][1]["auroc"] == 1.0
    assert {"group", "auroc", "n_test"} <= set(row["groups"][0])


def test_table_sorted_by_auroc_and_fits_80_columns(predictions: Predictions) -> None:
    report = score_report(predictions, score_names(), budget=40) | {"split": "pool"}
    console = Console(width=80, record=True, color_system=None)
    console.print(score_table(report))
    for line in winner_lines(report):
        console.print(line)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    noisy = text[text.index("noisy") : text.index("exact")]
    order = sorted(
        (r for r in report["results"] if r["scheme"] == "noisy"), key=lambda r: -r["auroc"]
    )
    positions = [noisy.index(f" {r['score']} ") for r in order]
    assert positions == sorted(positions)
    assert f"{report['winner']['noisy']['score']} finds noisy's disagreements best" in text
    assert "exact: no disagreements here" in text
    assert "P@40" in text


@pytest.mark.parametrize(
    ("kwargs", "config", "message"),
    [
        ({"split": "train"}, {}, "unknown split 'train'; valid choices: pool, test"),
        ({"protocol": "x"}, {}, "unknown protocol 'x'; valid choices: standard, paper"),
        ({"scores": ["margin", "nope"]}, {}, "unknown score 'nope'; valid choices: margin, "),
        ({"scores": []}, {}, "non-empty list"),
        ({}, {"selection__budget": 1.5}, r"budget fraction must be in \(0, 1\]"),
        ({}, {"selection__budget": -3}, "budget count must be >= 0"),
        ({}, {"quantization__schemes": ["int3"]}, "unknown quantization scheme 'int3'"),
    ],
)
def test_bad_choices_fail_before_any_work(monkeypatch, kwargs, config, message) -> None:
    def no_data(_config):
        raise AssertionError("validation must come before loading data")

    monkeypatch.setattr("mitigate.runs.session.load_data", no_data)
    with pytest.raises(MitigateError, match=message):
        score(override(Config(), **config), **kwargs)


def test_no_scheme_is_an_error() -> None:
    with pytest.raises(MitigateError, match="'quantization.schemes' .* one or more scheme names"):
        override(Config(), quantization__schemes=[])
