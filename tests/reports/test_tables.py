"""Terminal tables never cut a label or a number, at any width: they wrap (or fold a word
longer than its whole column), never truncate with an ellipsis."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console
from rich.table import Table

from mitigate.counting import summarize
from mitigate.reports.calibrate import calibrate_table
from mitigate.reports.compare import compare_tables
from mitigate.reports.evaluate import evaluate_tables
from mitigate.reports.retrain import retrain_tables
from mitigate.reports.tables import table

WIDTHS = (30, 50, 80, 120)
LONG = {"int8": "int8:engine=qnnpack:observer=minmax", "int4-weight": "int4-weight:group_size=32"}


def _render(renderable: object, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    console.print(renderable)
    return console.export_text()


def _tables(renderables: object) -> list[Table]:
    return list(renderables) if isinstance(renderables, list) else [renderables]


def _assert_whole(renderables: object) -> None:
    for t in _tables(renderables):
        for width in WIDTHS:
            assert "…" not in _render(t, width), f"{t.title!r} is cut at {width} columns"
        lines = _render(t, 80).splitlines()
        for column in t.columns:
            for cell in column.cells:
                for word in str(cell).split():
                    assert any(word in line for line in lines), (
                        f"{word!r} of {t.title!r} is broken at 80 columns"
                    )


@pytest.fixture(scope="module")
def long_labels(scan) -> dict:
    """An evaluate report whose schemes have long labels (options spelled out)."""
    variants = {LONG[k]: v for k, v in scan.variants.items()}
    return summarize(replace(scan, variants=variants))


def test_evaluate_tables_keep_long_scheme_labels_and_numbers(evaluate_report, long_labels):
    _assert_whole(evaluate_tables(evaluate_report))
    _assert_whole(evaluate_tables(long_labels))


def test_retrain_and_compare_tables_keep_everything(retrain_report, compare_report):
    report = retrain_report | {"totals": retrain_report["totals"]}
    _assert_whole(retrain_tables(report))
    rows = [r | {"strategy": "settings+fallback+adaround"} for r in compare_report["rows"]]
    report = compare_report | {"rows": rows, "scheme": LONG["int8"]}
    for t in compare_tables(report):
        _assert_whole(t)


def test_the_shared_table_wraps_and_folds(capsys):
    t = table("title", ["name", "a long header"], [["a-very-long-label-without-spaces", "1128"]])
    text = _render(t, 20)
    assert "…" not in text and "1128" in text


def _stats(mean: float, ci: float | None = 0.01) -> dict:
    return {"mean": mean, "ci95": ci, "n": 3, "values": []}


def test_score_and_calibrate_tables_keep_everything(scan):
    from mitigate.reports.score import score_table
    from mitigate.runs.score import score_report

    variants = {LONG[k]: v for k, v in scan.variants.items()}
    long = replace(
        scan,
        variants=variants,
        scores={
            **scan.scores,
            **{
                f"kl@{v}": s
                for v, s in zip(
                    variants, (scan.scores["kl@int8"], scan.scores["kl@int4-weight"]), strict=True
                )
            },
        },
    )
    _assert_whole(score_table(score_report(long, ["margin", "kl", "random"], budget=50)))
    rows = [
        {
            "factor": factor,
            "level": level,
            "setting": "shifted-1024-balanced-aug3-movingavg-pertensor-x86full",
            "calibration_inputs": 4096,
            "accuracy": _stats(0.912),
            "worst_accuracy": _stats(0.4),
            "worst_accuracy_group": "class:3",
            "disagreement": _stats(0.0123),
            "worst_disagreement": _stats(0.1234),
            "worst_group": "gaussian-noise/5",
            "vs_baseline": _stats(-0.0234),
            "vs_baseline_noise": False,
        }
        for factor, level in (("baseline", "-"), ("extra", "shifted-1024-balanced-qnnpack"))
    ]
    report = {"scheme": LONG["int8"], "seeds": [0, 1, 2], "rows": rows}
    _assert_whole(calibrate_table(report))
