from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mitigate.atomic import read_json
from mitigate.cli.app import app
from mitigate.cli.score import PROTOCOL_CHOICES, SCORE_CHOICES, SPLIT_CHOICES
from mitigate.runs.score import SPLITS
from mitigate.scanning import Predictions, score_key
from mitigate.selectors import PROTOCOLS, detection_metrics, score_names

TINY = """
seed = 0
[data]
train = 300
val = 50
calibration = 50
pool = 100
test = 100
[model]
arch = "mlp"
[train]
epochs = 3
[shifts]
families = ["gaussian-noise", "contrast", "rotate"]
severities = [3]
held_out = ["rotate"]
[quantization]
schemes = ["int8", "int4-weight"]
calibration_size = 50
[selection]
budget = 20
"""

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Run ``mitigate score`` on the tiny config: default flags, then paper protocol on test."""
    root = tmp_path_factory.mktemp("score")
    (root / "tiny.toml").write_text(TINY)
    runs = {}
    # The conftest's per-test cache fixture has not run yet at module scope: use the same dir.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITIGATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        for name, extra in {
            "standard": [],
            "paper": ["--protocol", "paper", "--split", "test", "--scores", "margin,kl,oracle"],
        }.items():
            args = ["score", "-c", str(root / "tiny.toml"), "-o", str(root / name), "-q", *extra]
            runs[name] = (runner.invoke(app, args), root / name)
    return runs


def _recount(pred: Predictions, score: str, scheme: str, budget: int) -> dict:
    values = torch.from_numpy(pred.scores[score_key(score, scheme)])
    truth = torch.from_numpy(pred.variants[scheme] != pred.reference)
    metrics = detection_metrics(values, truth, budget=budget)
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


def test_report_fields_recount_from_predictions(tiny) -> None:
    result, out = tiny["standard"]
    assert result.exit_code == 0, result.output
    report = read_json(out / "report.json")
    pred = Predictions.load(out / "predictions.npz")
    for key in ("command", "split", "protocol", "budget", "schemes", "scores", "results"):
        assert key in report
    assert {"winner", "config", "seed", "wall_time_s", "mitigate_version", "torch_version"} <= set(
        report
    )
    assert (report["command"], report["split"], report["protocol"]) == ("score", "pool", "standard")
    assert report["budget"] == 20 and report["schemes"] == ["int8", "int4-weight"]
    assert report["scores"] == score_names() and report["n"] == len(pred) == 100 * 3
    # Pool: clean + the families not held out, never the held-out one.
    assert [g.name for g in pred.groups] == ["clean", "gaussian-noise/3", "contrast/3"]
    assert len(report["results"]) == 2 * len(score_names())
    for row in report["results"]:
        want = _recount(pred, row["score"], row["scheme"], 20)
        assert {k: row[k] for k in want} == pytest.approx(want)
        assert row["n"] == len(pred)


def test_oracle_is_perfect_and_random_is_finite(tiny) -> None:
    report = read_json(tiny["standard"][1] / "report.json")
    rows = {(r["scheme"], r["score"]): r for r in report["results"]}
    for scheme in report["schemes"]:
        if rows[scheme, "oracle"]["positives"]:
            assert rows[scheme, "oracle"]["auroc"] == 1.0
            assert math.isfinite(rows[scheme, "random"]["auroc"])


def test_terminal_output_has_the_table_and_a_winner_per_scheme(tiny) -> None:
    result, _ = tiny["standard"]
    report = read_json(tiny["standard"][1] / "report.json")
    assert "AUROC" in result.stdout and "P@20" in result.stdout
    for scheme in report["schemes"]:
        win = report["winner"][scheme]
        if win is not None:
            assert f"{win['score']} finds {scheme}'s disagreements best" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "wrote " in result.stdout


def test_paper_protocol_on_the_test_split(tiny) -> None:
    result, out = tiny["paper"]
    assert result.exit_code == 0, result.output
    report = read_json(out / "report.json")
    assert (report["protocol"], report["split"], report["budget"]) == ("paper", "test", None)
    assert report["scores"] == ["margin", "kl", "oracle"]
    row = report["results"][0]
    assert {"score", "scheme", "auroc", "aupr", "tnr_at_95tpr", "n", "positives", "n_test"} <= set(
        row
    )
    assert "precision_at_budget" not in row
    # The test split measures the held-out family too.
    assert "rotate" in [g["group"] for g in row["by_shift"]]
    assert any(g["held_out"] for g in row["groups"])
    pred = Predictions.load(out / "predictions.npz")
    assert np.array_equal(np.unique(pred.group), np.arange(4))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--scores", "margin,foo"],
            "unknown score 'foo'; valid choices: margin, least-confidence",
        ),
        (["--protocol", "papers"], "unknown protocol 'papers'; valid choices: standard, paper"),
        (["--split", "val"], "unknown split 'val'; valid choices: pool, test"),
        (["--budget", "2.5"], "budget fraction must be in (0, 1]"),
    ],
)
def test_bad_choices_exit_2_with_one_line(args, message, tmp_path) -> None:
    result = runner.invoke(app, ["score", "-o", str(tmp_path), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "report.json").exists()


def test_help_choices_equal_the_registries() -> None:
    assert list(SCORE_CHOICES) == score_names()
    assert PROTOCOL_CHOICES == PROTOCOLS
    assert SPLIT_CHOICES == SPLITS


def test_cli_import_does_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mitigate.cli.app"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "torch" not in result.stderr
