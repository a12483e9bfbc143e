from __future__ import annotations

import pytest

from mitigate.calibration.settings import Setting
from mitigate.reports.calibrate import (
    calibrate_markdown,
    calibrate_plots,
    calibrate_rows,
    calibrate_table,
)
from mitigate.runs.calibrate import Planned, combined_setting, summarize_cells

BASE = Planned(Setting(), "baseline", "-")
QNNPACK = Planned(Setting(engine="qnnpack"), "engine", "qnnpack")
MINMAX = Planned(Setting(observer="minmax"), "observer", "minmax")


def _cell(p: Planned, seed: int, worst: float, group: str, overall: float) -> dict:
    return {
        "seed": seed,
        "setting": p.setting.name,
        "scheme": "int8",
        "calibration_inputs": 100,
        "overall": {"accuracy": 0.9, "fp_accuracy": 0.9, "disagreement_rate": overall},
        "worst_accuracy": {"name": "fog", "accuracy": 0.5},
        "worst_disagreement": {"name": group, "disagreement_rate": worst},
    }


@pytest.fixture
def summary():
    cells = [
        _cell(BASE, 0, 0.10, "fog", 0.02),
        _cell(BASE, 1, 0.12, "fog", 0.03),
        _cell(BASE, 2, 0.14, "class:3", 0.02),
        _cell(QNNPACK, 0, 0.04, "rotate", 0.01),
        _cell(QNNPACK, 1, 0.05, "rotate", 0.01),
        _cell(QNNPACK, 2, 0.06, "fog", 0.01),
        _cell(MINMAX, 0, 0.09, "fog", 0.02),
        _cell(MINMAX, 1, 0.12, "fog", 0.02),
        _cell(MINMAX, 2, 0.13, "fog", 0.02),
    ]
    report = summarize_cells([BASE, QNNPACK, MINMAX], cells)
    return report | {"scheme": "int8", "seeds": [0, 1, 2], "design": "oat", "config": {}}


def test_summary_sorts_pairs_and_names_the_worst_group(summary):
    rows = summary["rows"]
    assert [r["factor"] for r in rows] == ["engine", "observer", "baseline"]
    qnnpack = rows[0]
    assert qnnpack["worst_disagreement"]["mean"] == pytest.approx(0.05)
    assert qnnpack["worst_group"] == "rotate"  # worst in 2 of 3 seeds
    assert qnnpack["vs_baseline"]["mean"] == pytest.approx(-0.07)
    # -6, -7, -8 points: t(2) * sd / sqrt(3)
    assert qnnpack["vs_baseline"]["ci95"] == pytest.approx(4.302653 * 0.01 / 3**0.5)
    assert not qnnpack["vs_baseline_noise"]
    assert rows[1]["vs_baseline_noise"]  # minmax: -1, 0, -1 points
    recommendation = summary["recommendation"]
    assert recommendation["setting"] == QNNPACK.setting.name
    assert recommendation["change_relative"] == pytest.approx(-0.07 / 0.12)
    assert (
        "recommended calibration: clean-100-random-aug0-histogram-perchannel-qnnpack"
        in (recommendation["line"])
    )


def test_combined_takes_every_factor_that_helped(summary):
    combined = combined_setting([BASE, QNNPACK, MINMAX], summary)
    assert combined is not None and combined.factor == "combined"
    assert combined.setting == Setting(engine="qnnpack", observer="minmax")
    # one helpful factor only: that row already ran
    assert combined_setting([BASE, QNNPACK], summary) is None


def test_table_markdown_and_plot(summary):
    rows = calibrate_rows(summary)
    assert rows[0][0] == "engine qnnpack" and rows[2][7] == "default"
    assert rows[0][5] == "5.00% ±2.48"
    assert calibrate_table(summary).row_count == 3
    plots = calibrate_plots(summary)
    ax = plots[0].figure.axes[0]
    assert len(ax.patches) == 3 and ax.get_xlim()[0] == 0
    markdown = calibrate_markdown(summary, plots)
    assert f"| {QNNPACK.setting.name} |" in markdown
    assert "![Worst-group" in markdown and "**recommended calibration:" in markdown
