"""The ``mitigate calibrate`` figure: worst-group and overall disagreement per setting.

Built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no GUI backend), like
:mod:`mitigate.reports.plots`, and returned as :class:`~mitigate.reports.bundle.Plot` for the
report bundle.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["calibrate_plots", "disagreement_bars"]

_DEFAULT, _BEST, _OTHER, _OVERALL = "#4c72b0", "#2a9d55", "#b8b8b8", "#222222"


def disagreement_bars(report: dict[str, Any]) -> Figure:
    """One horizontal bar per setting (report order, best on top): mean worst-group
    disagreement with its 95% CI as an error bar, the overall rate as a dot; the default
    calibration and the recommended setting coloured. One bar container, one dot series."""
    from matplotlib.figure import Figure

    from mitigate.calibration.report import varied

    rows = report["rows"]
    fig = Figure(figsize=(6.5, 1.0 + 0.28 * len(rows)), layout="constrained")
    fig.set_facecolor("white")
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
    from mitigate.reports.bundle import Plot

    return [
        Plot(
            "worst-group-disagreement.png",
            "Worst-group (bar, 95% CI) and overall (dot) disagreement per calibration setting",
            disagreement_bars(report),
        )
    ]
