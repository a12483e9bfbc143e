from __future__ import annotations

import json

from typer.testing import CliRunner

from mitigate.cli.app import app
from mitigate.cli.retrain import STRATEGY_CHOICES
from mitigate.config import Config
from mitigate.mitigation.accounting import account
from mitigate.mitigation.strategies import STRATEGIES
from mitigate.scanning import Predictions

runner = CliRunner()


def test_retrain_margin_writes_an_honest_report(tiny_config, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(
        app,
        [
            "retrain",
            "-c",
            str(tiny_config),
            "--selector",
            "margin",
            "--strategy",
            "finetune",
            "--budget",
            "20",
            "--epochs",
            "1",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Disagreements with the original FP model f0" in result.output
    assert "control (same training, no selected inputs)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["used_labels"] is True and report["selection"]["n"] == 20
    total = report["totals"]["all"]
    assert total["before"] - total["removed"] + total["introduced"] == total["after"]
    for group in report["groups"]:
        for key in ("n", "before", "after", "removed", "introduced"):
            assert key in group
    assert account(Predictions.load(out / "predictions.npz"))["totals"] == report["totals"]
    markdown = (out / "report.md").read_text()
    assert "| inputs | n | before | removed | introduced | after | net removal |" in markdown
    assert "mitigate retrain" in markdown and "```json" in markdown


def test_bare_retrain_keeps_f0_and_stays_within_the_float_budget(tiny_config, tmp_path):
    # The command users run first: its default strategy must not move the validated model
    # (f1 = f0, churn 0) nor give back what quantization bought (float shares within budget).
    out = tmp_path / "bare"
    result = runner.invoke(app, ["retrain", "-c", str(tiny_config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    default = Config().retrain
    assert report["strategy"] == default.strategy
    assert all(STRATEGIES[step].keeps_f0 for step in default.strategy.split("+"))
    assert report["used_labels"] is False and report["control"] is None
    assert report["totals"]["all"]["churn"] == 0
    cost = report["deployment"]
    assert cost["float_share"]["params"] <= default.max_float_params
    assert cost["float_share"]["macs"] <= default.max_float_macs


def test_retrain_without_labels_says_so(tiny_config, tmp_path):
    result = runner.invoke(
        app,
        [
            "retrain",
            "-c",
            str(tiny_config),
            "--strategy",
            "recalibrate",
            "--budget",
            "10",
            "--class-balanced",
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "x" / "report.json").read_text())
    assert report["used_labels"] is False and report["control"] is None
    selection = report["selection"]
    assert selection["class_balanced"] is True and selection["n"] == 10
    per_class = selection["by_fp_class"].values()
    assert sum(per_class) == 10 and max(per_class) - min(per_class) <= 1  # round-robin


def test_bad_strategy_or_selector_exit_2(tiny_config):
    result = runner.invoke(app, ["retrain", "-c", str(tiny_config), "--strategy", "magic"])
    assert result.exit_code == 2 and "unknown strategy 'magic'; valid choices" in result.output
    result = runner.invoke(app, ["retrain", "-c", str(tiny_config), "--selector", "vibes"])
    assert (
        result.exit_code == 2 and "unknown selector 'vibes'; valid choices: margin" in result.output
    )


def test_help_choices_match_the_registry():
    assert tuple(STRATEGIES) == STRATEGY_CHOICES


def test_compare_cli_resumes(tiny_config, tmp_path):
    args = [
        "compare",
        "-c",
        str(tiny_config),
        "--selectors",
        "margin",
        "--strategies",
        "none,recalibrate",
        "--budgets",
        "10",
        "--seeds",
        "2",
        "-o",
        str(tmp_path / "c"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "(0 reused" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "reused" in second.output and "(0 reused" not in second.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert {r["strategy"] for r in report["rows"]} == {"none", "recalibrate"}
    assert (tmp_path / "c" / "report.md").read_text().startswith("# mitigate compare")
