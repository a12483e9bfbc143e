"""Plots for the reports: plain report dicts (and a scan) in, matplotlib ``Figure`` out.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``:
no global state, no GUI backend, so they render headless (Agg) from any thread. Every
function returns the figure unsaved, so a caller (or a test) can inspect its axes, lines and
patches before :func:`save_png` writes it.

One plot function per command, plus ``<command>_plots`` that names the files:

- ``evaluate``: :func:`shift_heatmap` (rate per shift family x severity, one panel per
  scheme, clean first, each scheme's worst group boxed) and :func:`severity_lines`.
- ``score``: :func:`roc_figure` (ROC curve of every score, one panel per scheme) and
  :func:`margin_histogram` (the margin of agreeing vs disagreeing inputs).
- ``retrain``: :func:`removed_introduced` (before/after per shift family).
- ``compare``: :func:`net_removal_vs_budget` (mean net removal with the 95% CI shaded).
- ``sensitivity``: :func:`layer_bars`.

Example:
    >>> report = {"rows": [{"strategy": "finetune", "selector": "margin", "budget": b,
    ...            "all": {"mean": m, "ci95": 0.05}, "held_out_shifts": {"mean": m, "ci95": None}}
    ...           for b, m in (("50", 0.1), ("200", 0.3))]}
    >>> fig = net_removal_vs_budget(report)
    >>> [len(series_lines(ax)) for ax in fig.axes]
    [1, 1]
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.bundle import Plot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "compare_plots",
    "evaluate_plots",
    "layer_bars",
    "margin_histogram",
    "net_removal_vs_budget",
    "removed_introduced",
    "retrain_plots",
    "roc_figure",
    "save_png",
    "score_plots",
    "sensitivity_plots",
    "series_lines",
    "severity_lines",
    "shift_heatmap",
]

ANY = "any"  # the union over schemes in an evaluate report
CONTROL = "control"  # compare: a training strategy's no-selection cell
NO_SELECTION = "-"  # compare: the selector of a strategy that selects nothing
_REMOVED, _INTRODUCED, _SURVIVED = "#2a9d55", "#d1495b", "#b8b8b8"
_WORST = "#d62728"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def _colors(n: int) -> list[Any]:
    """``n`` distinct colours, the same for the same position in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _pct_axis(ax: Axes, axis: str = "y", decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def series_lines(ax: Axes) -> list[Any]:
    """The data series drawn on ``ax``: lines with a legend label (reference lines such as a
    zero line or a diagonal are drawn with a label starting with ``_`` and are left out)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def save_png(fig: Figure, path: str | Path, *, dpi: int = 110) -> bytes:
    """Render ``fig`` with Agg and write it to ``path`` as PNG; return the PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mitigate.reports.io import write_bytes

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" tag: the same figure gives the same bytes whatever the matplotlib version.
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    data = buffer.getvalue()
    write_bytes(path, data)
    return data


# ---- evaluate ---------------------------------------------------------------------------------


def _grid(
    report: dict[str, Any],
) -> tuple[list[str], list[int], dict[tuple[str, int | None], dict]]:
    """Rows (``clean`` first, then shift families in report order, then natural sets), the
    severity columns, and the measured group at each (row, severity); a group without a
    severity (clean, a natural set) sits at (row, ``None``): it spans its row."""
    groups = [g for g in report["groups"] if g["n"]]
    severities = sorted({g["severity"] for g in groups if g["shift"]})
    rows: list[str] = []
    cells: dict[tuple[str, int | None], dict] = {}
    for g in groups:
        row, column = (g["shift"], g["severity"]) if g["shift"] else (g["name"], None)
        if row not in rows:
            rows.append(row)
        cells[(row, column)] = g
    rows.sort(key=lambda r: r != "clean")  # stable: clean first, the rest in report order
    return rows, severities, cells


def _span(column: int | None, severities: list[int]) -> tuple[int, int]:
    """First column index and width of a cell (a row-spanning cell covers every column)."""
    return (0, max(len(severities), 1)) if column is None else (severities.index(column), 1)


def shift_heatmap(report: dict[str, Any]) -> Figure:
    """Disagreement rate per shift family (rows) and severity (columns), one panel per scheme.

    ``clean`` is the first row (one value spanning the row; so is each natural set). All
    panels share one colour scale (square-root, so small rates stay visible) and each scheme's
    worst group is boxed and labelled. Held-out families are marked ``*``. One image per
    scheme panel (``len(ax.images) == 1``) and one box per scheme (``len(ax.patches) == 1``).
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    schemes = list(report["schemes"])
    rows, severities, cells = _grid(report)
    columns = max(len(severities), 1)
    held = {g["shift"] for g in report["groups"] if g.get("held_out") and g["shift"]}
    labels = [r + (" *" if r in held else "") for r in rows]
    top = max((g["disagreement_rate"][s] for g in cells.values() for s in schemes), default=0.0)
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(top, 1e-3))
    fig = _figure(min(1.2 + 1.55 * len(schemes) + 0.9, 16), 1.3 + 0.19 * len(rows))
    axes = fig.subplots(1, len(schemes), sharey=True, squeeze=False)[0]
    image = None
    for ax, scheme in zip(axes, schemes, strict=True):
        grid = np.full((len(rows), columns), np.nan)
        for (row, column), g in cells.items():
            start, width = _span(column, severities)
            grid[rows.index(row), start : start + width] = g["disagreement_rate"][scheme]
        image = ax.imshow(grid, aspect="auto", cmap="magma_r", norm=norm, interpolation="none")
        ax.set_title(scheme, fontsize=9)
        ax.set_xticks(range(columns), [str(s) for s in severities] or [""], fontsize=7)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.tick_params(length=0)
        if len(rows) > 1 and rows[0] == "clean":  # set the clean row apart from the shifts
            ax.axhline(0.5, color="white", linewidth=2, label="_separator")
        worst = report.get("worst_group", {}).get(scheme, {}).get("by_disagreement")
        where = [(r, c) for (r, c), g in cells.items() if worst and g["name"] == worst["group"]]
        if where:
            row, column = where[0]
            start, width = _span(column, severities)
            y = rows.index(row)
            ax.add_patch(
                Rectangle(
                    (start - 0.5, y - 0.5), width, 1, fill=False, edgecolor=_WORST, linewidth=2
                )
            )
            rate = worst["disagreement_rate"]
            ax.text(
                start + (width - 1) / 2,
                y,
                f"{100 * rate:.1f}%",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if norm(rate) > 0.45 else "black",
            )
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.6, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        _pct_axis(bar.ax, "y", decimals=1 if top < 0.05 else 0)
    note = "box: each scheme's worst group" + ("; * held out" if held else "")
    fig.suptitle(f"Disagreement rate with the FP model per shift and severity\n{note}", fontsize=9)
    return fig


def severity_lines(report: dict[str, Any]) -> Figure:
    """Disagreement rate against shift severity (all families pooled; clean at 0), one line
    per scheme."""
    schemes = list(report["schemes"])
    rows = [r for r in report["by_severity"] if r["n"]]
    x = [r["severity"] for r in rows]
    fig = _figure(5.2, 3.2)
    ax = fig.subplots()
    for scheme, color in zip(schemes, _colors(len(schemes)), strict=True):
        y = [r["disagreement_rate"][scheme] for r in rows]
        ax.plot(x, y, marker="o", markersize=3.5, color=color, label=scheme)
    ax.set_xticks(x, ["clean" if s == 0 else str(s) for s in x])
    ax.set_xlabel("shift severity (all families)")
    ax.set_ylabel("disagreement rate")
    ax.set_ylim(bottom=0)
    _pct_axis(
        ax,
        decimals=1
        if max((max(r["disagreement_rate"].values()) for r in rows), default=0) < 0.05
        else 0,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Disagreement rate per severity", fontsize=10)
    return fig


def evaluate_plots(report: dict[str, Any]) -> list[Plot]:
    """The ``evaluate`` plots: the per-shift heatmap and the per-severity lines."""
    return [
        Plot(
            "disagreement-by-shift.png",
            "Disagreement rate per shift family and severity, each scheme's worst group boxed",
            shift_heatmap(report),
        ),
        Plot(
            "disagreement-by-severity.png",
            "Disagreement rate per severity, one line per scheme",
            severity_lines(report),
        ),
    ]


# ---- score ------------------------------------------------------------------------------------


def _panels(n: int, *, per_row: int = 3, size: tuple[float, float] = (3.2, 3.0)) -> tuple:
    columns = min(n, per_row)
    lines = math.ceil(n / columns)
    fig = _figure(size[0] * columns, size[1] * lines + 0.4)
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _key(score: str, scheme: str, stored: Any) -> str | None:
    """Where the scan keeps ``score`` for ``scheme`` (``"kl@int8"`` or ``"margin"``)."""
    for key in (f"{score}@{scheme}", score):
        if key in stored:
            return key
    return None


def roc_figure(predictions: Any, scores: Sequence[str], schemes: Sequence[str]) -> Figure:
    """ROC curve of every score, one panel per scheme, over every scanned input.

    ``predictions`` is a :class:`~mitigate.scanning.Predictions` that kept ``scores``; a
    positive is an input on which the scheme disagrees with the FP model. Legend entries
    carry each curve's AUROC; ``oracle`` and ``random`` are drawn dashed. A panel without
    both classes says so and draws no curve.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axes = _panels(len(schemes))
    colors = dict(zip(scores, _colors(len(scores)), strict=True))
    for ax, scheme in zip(axes, schemes, strict=True):
        truth = predictions.variants[scheme] != predictions.reference
        positives = int(truth.sum())
        ax.set_title(f"{scheme} ({positives:,} of {truth.size:,} disagree)", fontsize=9)
        ax.plot([0, 1], [0, 1], color="0.8", linewidth=0.8, label="_chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        if positives in (0, truth.size):
            ax.text(0.5, 0.5, "no disagreements to find", ha="center", va="center", fontsize=8)
            continue
        curves = []
        for score in scores:
            key = _key(score, scheme, predictions.scores)
            if key is None:
                continue
            values = np.nan_to_num(predictions.scores[key].astype(np.float64), nan=-np.inf)
            fpr, tpr, _ = roc_curve(truth, values)
            curves.append((roc_auc_score(truth, values), score, fpr, tpr))
        for auroc, score, fpr, tpr in sorted(curves, key=lambda c: -c[0]):
            dashed = score in ("oracle", "random")
            ax.plot(
                fpr,
                tpr,
                color="0.45" if dashed else colors[score],
                linestyle="--" if dashed else "-",
                linewidth=1.0 if dashed else 1.3,
                label=f"{score} {auroc:.2f}",
            )
        ax.legend(fontsize=6, frameon=False, loc="lower right", title="AUROC", title_fontsize=6)
    fig.suptitle("Which score finds the disagreements: ROC per scheme", fontsize=10)
    return fig


def margin_histogram(predictions: Any, schemes: Sequence[str], bins: int = 40) -> Figure:
    """The FP model's margin score (``1 - (p1 - p2)``, high = near a tie) of the inputs each
    scheme agrees on vs those it disagrees on, each normalized to its own total. Two filled
    histograms (patches) per scheme panel."""
    values = predictions.scores["margin"].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = _panels(len(schemes), size=(3.2, 2.6))
    for ax, scheme in zip(axes, schemes, strict=True):
        truth = predictions.variants[scheme] != predictions.reference
        for mask, name, color in (
            (~truth, "agree", "#4c78a8"),
            (truth, "disagree", _WORST),
        ):
            n = int(mask.sum())
            weights = np.full(n, 1.0 / n) if n else None
            ax.hist(
                values[mask],
                bins=edges,
                weights=weights,
                histtype="stepfilled",
                alpha=0.45,
                color=color,
                edgecolor=color,
                label=f"{name} ({n:,})",
            )
        ax.set_title(scheme, fontsize=9)
        ax.set_xlabel("margin score 1 − (p1 − p2)", fontsize=8)
        ax.set_ylabel("share of inputs", fontsize=8)
        _pct_axis(ax)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="upper center")
    fig.suptitle("Disagreements sit near ties: margin of agreeing vs disagreeing", fontsize=10)
    return fig


def score_plots(report: dict[str, Any], predictions: Any) -> list[Plot]:
    """The ``score`` plots: ROC curves, and the margin histogram when margin was scored."""
    schemes, scores = list(report["schemes"]), list(report["scores"])
    plots = [
        Plot(
            "roc.png",
            "ROC curve of every score per scheme (legend: AUROC)",
            roc_figure(predictions, scores, schemes),
        )
    ]
    if "margin" in predictions.scores:
        plots.append(
            Plot(
                "margin-histogram.png",
                "FP margin of the inputs each scheme agrees vs disagrees on",
                margin_histogram(predictions, schemes),
            )
        )
    return plots


# ---- retrain ----------------------------------------------------------------------------------


def removed_introduced(report: dict[str, Any]) -> Figure:
    """Before and after the mitigation per shift family (clean first), as a share of the
    family's inputs: *before* = survived + removed, *after* = survived + introduced.

    Four bar containers: before-survived, removed, after-survived, introduced.
    """
    rows = [r for r in report["by_shift"] if r["n"]]
    names = [r["name"] + (" *" if r.get("held_out") else "") for r in rows]
    n = np.array([max(r["n"], 1) for r in rows], dtype=float)
    share = {
        k: np.array([r[k] for r in rows], dtype=float) / n
        for k in ("survived", "removed", "introduced")
    }
    y = np.arange(len(rows))
    h = 0.38
    fig = _figure(7.0, 1.4 + 0.28 * len(rows))
    ax = fig.subplots()
    before, after = y - h / 2, y + h / 2
    ax.barh(before, share["survived"], h, color=_SURVIVED, label="survived")
    ax.barh(before, share["removed"], h, left=share["survived"], color=_REMOVED, label="removed")
    ax.barh(after, share["survived"], h, color=_SURVIVED, label="_survived")
    ax.barh(
        after, share["introduced"], h, left=share["survived"], color=_INTRODUCED, label="introduced"
    )
    ax.set_yticks(y, [f"{name}  before\nafter" for name in names], fontsize=7)
    ax.invert_yaxis()
    _pct_axis(ax, "x", decimals=1)
    ax.set_xlabel("disagreements with f0 (share of the group's inputs)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    t = report["totals"]["all"]
    change = "" if t["net_removal"] is None else f", net removal {100 * t['net_removal']:+.0f}%"
    fig.suptitle(
        f"{report['strategy']} on {report['scheme_before']}: {t['before']} → {t['after']} "
        f"disagreements ({t['removed']} removed, {t['introduced']} introduced{change})",
        fontsize=9,
    )
    return fig


def retrain_plots(report: dict[str, Any]) -> list[Plot]:
    return [
        Plot(
            "removed-introduced.png",
            "Disagreements before (top bar) and after (bottom bar) per shift family",
            removed_introduced(report),
        )
    ]


# ---- compare ----------------------------------------------------------------------------------


def _budget_axis(budgets: Sequence[str]) -> tuple[dict[str, float], bool]:
    """x position of each budget label: its value when every budget is a count, else its
    rank (fractions and counts cannot share a numeric axis)."""
    numbers = {}
    for b in budgets:
        try:
            numbers[b] = float(b)
        except ValueError:
            return {b: float(i) for i, b in enumerate(budgets)}, False
    if all(v >= 1 and v.is_integer() for v in numbers.values()):
        return numbers, True
    ordered = sorted(budgets, key=lambda b: numbers[b])
    return {b: float(ordered.index(b) + 1) for b in budgets}, False


def net_removal_vs_budget(report: dict[str, Any]) -> Figure:
    """Mean net removal against the budget, one line per strategy and one panel per selector,
    with the 95% confidence interval over seeds shaded (top: every test input; bottom: the
    held-out shift families).

    A training strategy's control (no selected inputs) is drawn at budget 0; a strategy that
    ignores the budget (``none``; ``settings``/``fallback`` score on the probe) is a flat line
    across the panel. Series lines are those returned by :func:`series_lines`.
    """
    rows = report["rows"]
    selectors = list(
        dict.fromkeys(r["selector"] for r in rows if r["selector"] not in (NO_SELECTION, CONTROL))
    )
    selectors = selectors or [NO_SELECTION]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    colors = dict(zip(strategies, _colors(len(strategies)), strict=True))
    budgets = list(
        dict.fromkeys(r["budget"] for r in rows if r["budget"] != "-" and r["selector"] != CONTROL)
    )
    x_of, numeric = _budget_axis(budgets)
    span = (0.0, max(x_of.values(), default=1.0))
    parts = [("all", "all test inputs"), ("held_out_shifts", "held-out shifts")]
    parts = [p for p in parts if any(r[p[0]]["mean"] is not None for r in rows)]
    fig = _figure(1.0 + 3.3 * len(selectors), 0.6 + 2.7 * len(parts))
    axes = fig.subplots(len(parts), len(selectors), squeeze=False, sharex=True, sharey="row")
    for i, (part, part_label) in enumerate(parts):
        for j, selector in enumerate(selectors):
            ax = axes[i][j]
            ax.axhline(0, color="0.6", linewidth=0.8, label="_zero")
            for strategy in strategies:
                _draw_strategy(ax, rows, strategy, selector, part, x_of, span, colors[strategy])
            if i == 0:
                ax.set_title(f"selector {selector}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"net removal\n({part_label})", fontsize=8)
            if i == len(parts) - 1:
                ax.set_xlabel("budget (selected inputs)" if numeric else "budget", fontsize=8)
            ticks = sorted(set(x_of.values()) | {0.0})
            ax.set_xticks(ticks, [_tick(t, x_of) for t in ticks], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            _pct_axis(ax)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(handles), 6),
            fontsize=7,
            frameon=False,
        )
    seeds = len(report.get("seeds", [])) or "?"
    fig.suptitle(
        f"Net removal of {report.get('scheme', '')} disagreements vs budget "
        f"(mean, 95% CI over {seeds} seeds; 0 = control)",
        fontsize=10,
    )
    return fig


def _tick(position: float, x_of: dict[str, float]) -> str:
    for label, x in x_of.items():
        if x == position:
            return label
    return "0"


def _draw_strategy(ax, rows, strategy, selector, part, x_of, span, color) -> None:
    mine = [r for r in rows if r["strategy"] == strategy]
    flat = [r for r in mine if r["budget"] == "-" and r["selector"] in (selector, NO_SELECTION)]
    if flat:  # ignores the budget: a level line with its band
        stats = flat[0][part]
        if stats["mean"] is None:
            return
        ax.plot(
            span, [stats["mean"]] * 2, color=color, linestyle="--", linewidth=1.2, label=strategy
        )
        if stats["ci95"] is not None:
            ax.fill_between(
                span,
                stats["mean"] - stats["ci95"],
                stats["mean"] + stats["ci95"],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        return
    points = [
        (x_of[r["budget"]], r[part])
        for r in mine
        if r["selector"] == selector and r["budget"] in x_of
    ]
    points += [(0.0, r[part]) for r in mine if r["selector"] == CONTROL]
    points = sorted((x, s) for x, s in points if s["mean"] is not None)
    if not points:
        return
    x = np.array([p[0] for p in points])
    mean = np.array([p[1]["mean"] for p in points])
    half = np.array([p[1]["ci95"] if p[1]["ci95"] is not None else np.nan for p in points])
    ax.plot(x, mean, marker="o", markersize=3.5, color=color, label=strategy)
    known = np.isfinite(half)
    if known.any():  # the interval at each point, and shaded between points
        ax.vlines(x[known], (mean - half)[known], (mean + half)[known], color=color, linewidth=1)
        if len(x) > 1:
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, linewidth=0)


def compare_plots(report: dict[str, Any]) -> list[Plot]:
    return [
        Plot(
            "net-removal-vs-budget.png",
            "Net removal against the budget per strategy, 95% CI shaded",
            net_removal_vs_budget(report),
        )
    ]


# ---- sensitivity ------------------------------------------------------------------------------


def layer_bars(report: dict[str, Any]) -> Figure:
    """Disagreements removed by keeping each layer in float (ranked), labelled with the
    layer's share of the parameters. One bar container."""
    layers = report["layers"]
    removed = [row["removed_by_float"] or 0 for row in layers]
    y = np.arange(len(layers))
    fig = _figure(6.0, 1.2 + 0.3 * len(layers))
    ax = fig.subplots()
    colors = [_REMOVED if v > 0 else _INTRODUCED for v in removed]
    ax.barh(y, removed, color=colors, label="removed by keeping it in float")
    ax.set_yticks(
        y, [f"{r['name']} ({100 * r['param_share']:.0f}% params)" for r in layers], fontsize=7
    )
    ax.invert_yaxis()
    ax.axvline(0, color="0.5", linewidth=0.8)
    total = report["disagreements"]["all_int8"]
    ax.set_xlabel(f"disagreements removed (of {total} on the probe)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Layer sensitivity: {report['scheme']}", fontsize=10)
    return fig


def sensitivity_plots(report: dict[str, Any]) -> list[Plot]:
    if not report["layers"]:
        return []
    return [
        Plot(
            "layer-sensitivity.png",
            "Disagreements removed by keeping each layer in float",
            layer_bars(report),
        )
    ]
