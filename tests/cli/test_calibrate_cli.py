from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mitigate.calibration.settings import ENGINES, GRANULARITIES, OBSERVERS, SAMPLINGS, SOURCES
from mitigate.cli.app import app
from mitigate.config import CalibrationConfig
from mitigate.quantization import OBSERVERS as QUANT_OBSERVERS

runner = CliRunner()

SMALL = [
    "--sources",
    "clean,mixed",
    "--sizes",
    "16",
    "--samplings",
    "random",
    "--augmentations",
    "0",
    "--observers",
    "histogram,minmax",
    "--granularities",
    "per-channel",
    "--engines",
    "x86,qnnpack",
    "--extra",
    "",
    "--seeds",
    "1",
]


def test_calibrate_writes_a_sorted_table_and_best_that_evaluate_picks_up(tiny_config, tmp_path):
    out = tmp_path / "cal"
    result = runner.invoke(app, ["calibrate", "-c", str(tiny_config), *SMALL, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "best worst-group disagreement first" in result.output.replace("\n", " ")
    assert "recommended calibration:" in result.output
    report = json.loads((out / "report.json").read_text())
    best = json.loads((out / "best.json").read_text())
    assert best["preset"] == report["best"] == report["rows"][0]["setting"]
    assert report["seeds"] == [0] and report["cells"]["reused"] == 0
    # 5 one-factor rows (baseline, mixed, 16, minmax, qnnpack), plus maybe the combination
    assert len(report["rows"]) in (5, 6)
    markdown = (out / "report.md").read_text()
    assert "| varied | inputs | acc |" in markdown and report["best"] in markdown

    # a rerun resumes every cell
    again = runner.invoke(app, ["calibrate", "-c", str(tiny_config), *SMALL, "-o", str(out), "-q"])
    assert again.exit_code == 0, again.output
    assert (
        json.loads((out / "report.json").read_text())["cells"]["reused"] == report["cells"]["total"]
    )

    ev = tmp_path / "ev"
    result = runner.invoke(
        app, ["evaluate", "-c", str(tiny_config), "--calibration", "best", "-o", str(ev)]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((ev / "report.json").read_text())["config"]
    assert config["calibration"]["preset"] == best["preset"]
    assert best["scheme"] in config["quantization"]["schemes"]
    assert "int4-weight" in config["quantization"]["schemes"]


def test_a_named_preset_reaches_evaluate(tiny_config, tmp_path):
    result = runner.invoke(
        app,
        ["evaluate", "-c", str(tiny_config), "--calibration", "mixed-16-minmax-qnnpack"]
        + ["--schemes", "int8", "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schemes"] == ["int8:engine=qnnpack:observer=minmax"]
    assert report["config"]["calibration"]["preset"] == (
        "mixed-16-random-aug0-minmax-perchannel-qnnpack"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "--sources", "clean,soup"], "unknown calibration source 'soup'"),
        (["calibrate", "--engines", "arm"], "unknown calibration engine 'arm'"),
        (["calibrate", "--grid", "half"], "unknown calibration grid 'half'"),
        (["calibrate", "--sizes", "ten"], "must be int"),
        (["calibrate", "--families", "rotate"], "held out"),
        (["evaluate", "--calibration", "clean-soup"], "unknown token 'soup'"),
        (["retrain", "--calibration", "nope.json"], "calibration preset file not found"),
    ],
)
def test_bad_options_exit_2_with_one_line(tiny_config, tmp_path, args, message):
    result = runner.invoke(app, [*args, "-c", str(tiny_config), "-o", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_choices_match_the_registries():
    assert OBSERVERS == QUANT_OBSERVERS
    c = CalibrationConfig()
    assert set(c.sources) == set(SOURCES) and set(c.samplings) == set(SAMPLINGS)
    assert set(c.engines) == set(ENGINES) and set(c.granularities) == set(GRANULARITIES)
    assert set(c.observers) == set(OBSERVERS)
