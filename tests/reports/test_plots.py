from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_auc_score

from mitigate.reports import compare, evaluate, retrain, score, sensitivity
from mitigate.reports.figures import save_png, series_lines

PNG = b"\x89PNG\r\n\x1a\n"


def _panels(fig):
    """The figure's data axes (colorbars and hidden spares left out)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_save_png_writes_a_valid_deterministic_png(tmp_path, evaluate_report):
    fig = evaluate.severity_lines(evaluate_report)
    data = save_png(fig, tmp_path / "a.png")
    again = save_png(evaluate.severity_lines(evaluate_report), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == data and data.startswith(PNG)
    assert len(data) > 1000
    assert again == data  # same report, same bytes (no timestamp or version in the file)


def test_shift_heatmap_one_image_per_scheme_clean_first_worst_boxed(evaluate_report):
    fig = evaluate.shift_heatmap(evaluate_report)
    panels = _panels(fig)
    schemes = evaluate_report["schemes"]
    assert [ax.get_title() for ax in panels] == schemes
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert labels == ["clean", "gaussian-noise", "rotate *", "natural:other"]
    for ax, scheme in zip(panels, schemes, strict=True):
        (image,) = ax.images
        grid = np.asarray(image.get_array())
        assert grid.shape == (4, 2)  # rows x severities 1 and 3
        clean = next(g for g in evaluate_report["groups"] if g["name"] == "clean")
        assert np.allclose(grid[0], clean["disagreement_rate"][scheme])  # spans the row
        by_name = {g["name"]: g for g in evaluate_report["groups"]}
        assert grid[2, 1] == pytest.approx(by_name["rotate/3"]["disagreement_rate"][scheme])
        (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
        worst = evaluate_report["worst_group"][scheme]["by_disagreement"]
        assert f"{100 * worst['disagreement_rate']:.1f}%" in [t.get_text() for t in ax.texts]
        row = box.get_y() + 0.5
        name = labels[int(row)].removesuffix(" *")
        assert worst["group"].startswith(name)


def test_severity_lines_one_series_per_scheme(evaluate_report):
    (ax,) = _panels(evaluate.severity_lines(evaluate_report))
    lines = series_lines(ax)
    assert [line.get_label() for line in lines] == evaluate_report["schemes"]
    x = list(lines[0].get_xdata())
    assert x == [0, 1, 3]  # clean, then each severity
    rates = [r["disagreement_rate"]["int8"] for r in evaluate_report["by_severity"]]
    assert np.allclose(lines[0].get_ydata(), rates)


def test_roc_one_curve_per_score_with_sklearn_auroc(scan):
    scores = ["margin", "kl", "random"]
    fig = score.roc_figure(scan, scores, list(scan.variants))
    for ax, scheme in zip(_panels(fig), scan.variants, strict=True):
        lines = series_lines(ax)
        assert len(lines) == len(scores)
        truth = scan.variants[scheme] != scan.reference
        expected = roc_auc_score(truth, scan.scores["margin"])
        assert f"margin {expected:.2f}" in [line.get_label() for line in lines]


def test_roc_panel_without_disagreements_draws_no_curve(scan):
    from dataclasses import replace

    same = replace(scan, variants={"fp16": scan.reference.copy()})
    (ax,) = _panels(score.roc_figure(same, ["margin"], ["fp16"]))
    assert series_lines(ax) == []
    assert "no disagreements" in ax.texts[0].get_text()


def test_margin_histogram_two_normalized_series_per_scheme(scan):
    fig = score.margin_histogram(scan, list(scan.variants))
    for ax in _panels(fig):
        assert len(ax.patches) == 2
        assert [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()] == [
            "agree",
            "disagree",
        ]


def test_score_plots_skip_the_histogram_without_margin(scan):
    from dataclasses import replace

    report = {"schemes": list(scan.variants), "scores": ["kl", "random"]}
    no_margin = replace(scan, scores={k: v for k, v in scan.scores.items() if k != "margin"})
    assert [p.file for p in score.score_plots(report, no_margin)] == ["roc.png"]
    report["scores"].append("margin")
    assert [p.file for p in score.score_plots(report, scan)] == ["roc.png", "margin-histogram.png"]


def test_removed_introduced_four_bar_series_that_add_up(retrain_report):
    (ax,) = _panels(retrain.removed_introduced(retrain_report))
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(containers) == 4
    survived, removed, _, introduced = ([b.get_width() for b in c] for c in containers)
    rows = [r for r in retrain_report["by_shift"] if r["n"]]
    assert len(survived) == len(rows)
    for i, row in enumerate(rows):
        assert survived[i] + removed[i] == pytest.approx(row["before"] / row["n"])
        assert survived[i] + introduced[i] == pytest.approx(row["after"] / row["n"])


def test_net_removal_one_series_per_strategy_and_control_at_zero(compare_report):
    fig = compare.net_removal_vs_budget(compare_report)
    panels = _panels(fig)
    assert len(panels) == 4  # (all, held-out) x (margin, random)
    for ax in panels:
        lines = {line.get_label(): line for line in series_lines(ax)}
        assert set(lines) == {"none", "finetune", "fallback"}
        finetune = lines["finetune"]
        assert list(finetune.get_xdata()) == [0.0, 50.0, 200.0]  # the control, then budgets
        assert len(ax.collections) >= 2  # shaded intervals
    top = {line.get_label(): line for line in series_lines(panels[0])}
    assert list(top["finetune"].get_ydata()) == pytest.approx([-0.05, 0.1, 0.3])
    assert list(top["fallback"].get_ydata()) == [0.5, 0.5]  # ignores the budget: a level


def test_net_removal_fraction_budgets_use_ranks(compare_report):
    rows = [
        r | {"budget": {"50": "0.01", "200": "0.05"}.get(r["budget"], r["budget"])}
        for r in compare_report["rows"]
    ]
    fig = compare.net_removal_vs_budget(compare_report | {"rows": rows})
    ax = _panels(fig)[-1]  # the bottom row carries the shared x labels
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.01", "0.05"]
    assert list(ax.get_xticks()) == [0.0, 1.0, 2.0]


def test_layer_bars_one_bar_per_layer():
    report = {
        "scheme": "int8",
        "disagreements": {"all_int8": 10},
        "layers": [
            {"name": "fc", "param_share": 0.6, "removed_by_float": 4},
            {"name": "conv1", "param_share": 0.4, "removed_by_float": -1},
        ],
    }
    (ax,) = _panels(sensitivity.layer_bars(report))
    (bars,) = ax.containers
    assert [b.get_width() for b in bars] == [4, -1]
    assert sensitivity.sensitivity_plots(report | {"layers": []}) == []
