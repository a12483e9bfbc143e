"""``mitigate calibrate`` report: one row per setting, best first (terminal and Markdown), and
the worst-group disagreement bars.

The same rows feed the terminal (rich) and ``report.md``, so both tell one story.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mitigate.reports.figures import figure
from mitigate.reports.tables import Fitted, breakable, table
from mitigate.reports.writer import Plot
from mitigate.stats import format_mean_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HEADER",
    "calibrate_markdown",
    "calibrate_plots",
    "calibrate_rows",
    "calibrate_table",
    "disagreement_bars",
    "varied",
]

HEADER = (
    "varied",
    "inputs",
    "acc",
    "worst acc",
    "disagree",
    "worst-group disagree",
    "worst group",
    "Δ worst vs default",
    "",
)


def _pct(stats: dict[str, Any], digits: int = 1) -> str:
    """A rate's mean and CI over seeds: ``2.77% ±1.28``."""
    return format_mean_ci(stats, digits=digits, unit="%")


def _delta(row: dict[str, Any]) -> str:
    if row["factor"] == "baseline":
        return "default"
    return format_mean_ci(row["vs_baseline"], digits=2, signed=True)


def varied(row: dict[str, Any]) -> str:
    """What the row changes: ``default``, ``engine qnnpack``, ``extra shifted-qnnpack``."""
    if row["factor"] == "baseline":
        return "default"
    if row["factor"] == "grid":
        return row["setting"]
    return f"{row['factor']} {row['level']}"


def calibrate_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows in report order (lowest mean worst-group disagreement first). Accuracy and
    disagreement are over every test input; worst-* over the groups (clean, each shift
    family, each class); Δ is the seed-paired change in worst-group disagreement, in points."""
    return [
        [
            varied(r),
            str(r["calibration_inputs"]),
            _pct(r["accuracy"]),
            f"{_pct(r['worst_accuracy'])} ({r['worst_accuracy_group']})",
            _pct(r["disagreement"], 2),
            _pct(r["worst_disagreement"], 2),
            r["worst_group"],
            _delta(r),
            "" if r["factor"] == "baseline" or not r["vs_baseline_noise"] else "noise",
        ]
        for r in report["rows"]
    ]


_SHORT_HEADER = (
    "setting",
    "inputs",
    "acc %",
    "worst\nacc %",
    "dis. %",
    "worst\ndis. %",
    "worst group",
    "Δ worst\npoints",
)


def _two_lines(stats: dict[str, Any], digits: int = 1, signed: bool = False) -> str:
    """Mean over ±CI on two lines, so the table fits an 80-column terminal."""
    return format_mean_ci(stats, digits=digits, signed=signed, sep="\n")


def calibrate_table(report: dict[str, Any]) -> Fitted:
    """The terminal table: each number over its ±95% CI half-width; the full setting names
    are in ``report.md``."""
    seeds = len(report["seeds"])
    rows = []
    for r in report["rows"]:
        delta = "default" if r["factor"] == "baseline" else _two_lines(r["vs_baseline"], 2, True)
        if r["factor"] != "baseline" and not r["vs_baseline_noise"]:
            delta = delta.replace("\n", "*\n", 1) if "\n" in delta else delta + "*"
        rows.append(
            [
                breakable(varied(r), dashes=True),
                str(r["calibration_inputs"]),
                _two_lines(r["accuracy"]),
                _two_lines(r["worst_accuracy"]),
                _two_lines(r["disagreement"], 2),
                _two_lines(r["worst_disagreement"], 2),
                r["worst_group"],
                delta,
            ]
        )
    return table(
        f"{report['scheme']} calibration, mean ±95% CI over {seeds} "
        f"seed{'s' if seeds > 1 else ''}, best worst-group disagreement first",
        _SHORT_HEADER,
        rows,
        caption="dis.: disagreement with the FP model; worst: over clean, each shift family "
        "and each class; Δ: seed-paired change vs the default (* = beyond noise)",
        left=(0, 6),
    )


def calibrate_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md``: the design, the table with full setting names, notes, recommendation,
    plots and provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    rows = [
        [*row[:-1], row[-1], r["setting"]]
        for row, r in zip(calibrate_rows(report), report["rows"], strict=True)
    ]
    notes = [f"- {varied(r)}: {n}" for r in report["rows"] for n in r["notes"]]
    lines = [
        "# mitigate calibrate",
        "",
        f"How the calibration of `{report['scheme']}` changes the quantized model's accuracy and "
        f"its disagreement with the FP model, overall and for the worst group (clean, each shift "
        f"family incl. held-out ones, each class), mean and 95% confidence interval over seeds "
        f"{report['seeds']}. Design: {report['design']}.",
        "",
        md_table([*HEADER[:-1], "noise", "setting"], rows),
        "",
    ]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    if report.get("recommendation"):
        lines += [f"**{report['recommendation']['line']}**", ""]
        lines += [
            "Use it with `mitigate evaluate --calibration best` (or "
            f"`--calibration {report['recommendation']['setting']}`).",
            "",
        ]
    if plots:
        lines += [md_plots(plots), ""]
    lines += [provenance(report), ""]
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------

_DEFAULT, _BEST, _OTHER, _OVERALL = "#4c72b0", "#2a9d55", "#b8b8b8", "#222222"


def disagreement_bars(report: dict[str, Any]) -> Figure:
    """One horizontal bar per setting (report order, best on top): mean worst-group
    disagreement with its 95% CI as an error bar, the overall rate as a dot; the default
    calibration and the recommended setting coloured. One bar container, one dot series."""
    rows = report["rows"]
    fig = figure(6.5, 1.0 + 0.28 * len(rows))
    ax = fig.subplots()
    y = list(range(len(rows)))
    worst = [100 * (r["worst_disagreement"]["mean"] or 0) for r in rows]
    ci = [100 * (r["worst_disagreement"]["ci95"] or 0) for r in rows]
    colors = [
        _DEFAULT
        if r["factor"] == "baseline"
        else _BEST
        if r["setting"] == report.get("best")
        else _OTHER
        for r in rows
    ]
    ax.barh(y, worst, xerr=ci, color=colors, error_kw={"linewidth": 0.8}, label="worst group")
    overall = [100 * (r["disagreement"]["mean"] or 0) for r in rows]
    ax.plot(overall, y, "o", color=_OVERALL, markersize=3, label="all inputs")
    labels = [textwrap.shorten(varied(r), 42) + f" ({r['worst_group']})" for r in rows]
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(left=0)  # a CI over few seeds can reach below zero; rates cannot
    ax.set_xlabel("disagreement with the FP model, %\n(mean, 95% CI over seeds)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color=_OTHER, label="worst group"),
        Patch(color=_DEFAULT, label="default calibration"),
        Patch(color=_BEST, label="recommended"),
        Line2D([], [], marker="o", color=_OVERALL, linestyle="", markersize=3, label="all inputs"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=4, frameon=False)
    ax.set_title(f"{report['scheme']}: worst-group disagreement by calibration", fontsize=9)
    return fig


def calibrate_plots(report: dict[str, Any]) -> list[Any]:
    return [
        Plot(
            "worst-group-disagreement.png",
            "Worst-group (bar, 95% CI) and overall (dot) disagreement per calibration setting",
            disagreement_bars(report),
        )
    ]
