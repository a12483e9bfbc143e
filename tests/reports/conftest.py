"""Synthetic scans and reports (no model, no training) for the plot and bundle tests."""

from __future__ import annotations

import numpy as np
import pytest

from mitigate.data.evalset import Group
from mitigate.scanning import Predictions

GROUPS = [
    Group("clean"),
    Group("gaussian-noise/1", "gaussian-noise", 1),
    Group("gaussian-noise/3", "gaussian-noise", 3),
    Group("rotate/1", "rotate", 1, held_out=True),
    Group("rotate/3", "rotate", 3, held_out=True),
    Group("natural:other", source="other"),
]


@pytest.fixture(scope="session")
def scan() -> Predictions:
    """600 inputs in six groups, two schemes that disagree more as severity grows, and the
    scores ``margin`` (FP only), ``kl@<scheme>`` and ``random``."""
    rng = np.random.default_rng(0)
    n = 100
    group = np.repeat(np.arange(len(GROUPS)), n).astype(np.int32)
    label = rng.integers(0, 10, group.size)
    reference = np.where(rng.random(group.size) < 0.8, label, (label + 1) % 10)
    severity = np.array([g.severity for g in GROUPS])[group]
    margin = np.clip(rng.random(group.size) * 0.6 + 0.1 * severity, 0, 1).astype(np.float32)
    variants, scores = {}, {"margin": margin, "random": rng.random(group.size).astype(np.float32)}
    for scheme, strength in (("int8", 0.15), ("int4-weight", 0.4)):
        flip = rng.random(group.size) < strength * margin
        variants[scheme] = np.where(flip, (reference + 1) % 10, reference)
        scores[f"kl@{scheme}"] = (margin + rng.normal(0, 0.1, group.size)).astype(np.float32)
    return Predictions(
        groups=list(GROUPS),
        group=group,
        index=np.tile(np.arange(n), len(GROUPS)).astype(np.int64),
        label=label.astype(np.int64),
        reference=reference.astype(np.int64),
        variants={k: v.astype(np.int64) for k, v in variants.items()},
        scores=scores,
        classes=tuple(str(c) for c in range(10)),
    )


@pytest.fixture(scope="session")
def evaluate_report(scan) -> dict:
    from mitigate.counting import summarize

    return {
        "command": "evaluate",
        "model": {"arch": "lenet1", "source": "cache", "path": "x.pt"},
        "seed": 0,
        "config": {"seed": 0},
        "wall_time_s": 1.0,
        **summarize(scan),
    }


@pytest.fixture(scope="session")
def retrain_report(scan) -> dict:
    """An accounting report as ``mitigate retrain`` writes it (f1 = f0, q1 = int8 again)."""
    from dataclasses import replace

    from mitigate.mitigation.accounting import account

    pred = replace(
        scan,
        variants={
            "q0": scan.variants["int4-weight"],
            "f1": scan.reference,
            "q1": scan.variants["int8"],
        },
    )
    return {"command": "retrain", "strategy": "finetune", "scheme_before": "int8", **account(pred)}


def stats(mean: float | None, ci95: float | None = None) -> dict:
    return {"mean": mean, "ci95": ci95, "n": 3, "values": []}


def compare_row(strategy: str, selector: str, budget: str, mean: float, ci: float | None) -> dict:
    return {
        "strategy": strategy,
        "selector": selector,
        "budget": budget,
        "seeds": [0, 1, 2],
        "used_labels": strategy == "finetune" and selector != "control",
        "all": stats(mean, ci),
        "held_out_shifts": stats(mean / 2, ci),
        "seen_shifts": stats(mean, ci),
        "clean": stats(None),
        "accuracy_change": stats(0.01, 0.005),
        "fp_accuracy_change": stats(0.0, 0.0),
        "churn": stats(0.02, 0.01),
        "within_pair": stats(0.3, 0.1),
        "noise": "",
    }


@pytest.fixture(scope="session")
def compare_report() -> dict:
    """Two selectors; finetune at two budgets plus its control; none and fallback flat."""
    rows = [compare_row("none", "-", "-", 0.0, 0.0)]
    for selector in ("margin", "random"):
        rows += [
            compare_row("finetune", selector, "50", 0.1, 0.05),
            compare_row("finetune", selector, "200", 0.3, 0.1),
            compare_row("fallback", selector, "-", 0.5, None),
        ]
    rows.append(compare_row("finetune", "control", "0", -0.05, 0.04))
    return {
        "command": "compare",
        "seeds": [0, 1, 2],
        "scheme": "int8",
        "rows": rows,
        "best_on_held_out": None,
        "config": {"seed": 0},
        "wall_time_s": 3.0,
    }
