"""``mitigate sensitivity`` report: the ranked layer table (fits 80 columns) and its bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.figures import INTRODUCED, REMOVED, figure
from mitigate.reports.tables import pct, table
from mitigate.reports.writer import Plot

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = [
    "layer_bars",
    "sensitivity_markdown",
    "sensitivity_plots",
    "sensitivity_rows",
    "sensitivity_summary",
    "sensitivity_table",
]

HEADER = ("#", "layer", "type", "params", "MACs", "alone", "in float", "removes")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def sensitivity_table(report: dict[str, Any]) -> Table:
    """Layers ranked by the disagreements keeping them in float removes.

    Columns: rank, layer, type, share of parameters and of MACs, disagreements with only this
    layer in int8 (``alone``), with every layer but this one in int8 (``in float``), and how
    many of the all-int8 disagreements that removes.
    """
    probe = report["probe"]
    return table(
        f"Layer sensitivity: {report['scheme']}, {probe['size']} pool inputs picked by "
        f"{probe['selector']}",
        HEADER,
        sensitivity_rows(report),
        caption=(
            "alone: only this layer (and functional ops) in int8.  in float: all others.\n"
            f"removes: all-int8 count ({report['disagreements']['all_int8']}) minus 'in float'."
        ),
        left=(1, 2),
    )


def sensitivity_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per layer, in rank order (see :func:`sensitivity_table` for the columns)."""
    return [
        [
            str(row["rank"]),
            row["name"],
            row["type"],
            pct(row["param_share"]),
            pct(row["mac_share"]),
            _count(row["disagreements_alone"]),
            _count(row["disagreements_without"]),
            _count(row["removed_by_float"]),
        ]
        for row in report["layers"]
    ]


def sensitivity_summary(report: dict[str, Any]) -> str:
    """Two lines: the all-int8 count on the probe, and the floor with every module in float
    (what the functional ops torch still quantizes cause)."""
    d, probe = report["disagreements"], report["probe"]
    return (
        f"all int8: {d['all_int8']} of {probe['size']} probe inputs disagree "
        f"(pool: {probe['pool_size']} inputs)\n"
        f"every module in float: {d['every_module_in_float']} (functional ops stay int8)"
    )


def sensitivity_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md`` of ``mitigate sensitivity``: summary, plot, ranked layers, provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    probe = report["probe"]
    parts = [
        f"# mitigate sensitivity: {report['scheme']}",
        "",
        f"Layers ranked by the disagreements that keeping them in float removes, counted on "
        f"{probe['size']} pool inputs picked by {probe['selector']} (no labels needed).",
        "",
        *[f"- {line}" for line in sensitivity_summary(report).splitlines()],
        "",
    ]
    if plots:
        parts += ["## Plots", "", md_plots(plots), ""]
    parts += [
        "## Layers",
        "",
        md_table(HEADER, sensitivity_rows(report)),
        "",
        "alone: only this layer (and functional ops) in int8; in float: every other layer in "
        "int8; removes: the all-int8 count minus 'in float'.",
        "",
        provenance(report),
        "",
    ]
    return "\n".join(parts)


# ---- plots ------------------------------------------------------------------------------------


def layer_bars(report: dict[str, Any]) -> Figure:
    """Disagreements removed by keeping each layer in float (ranked), labelled with the
    layer's share of the parameters. One bar container."""
    layers = report["layers"]
    removed = [row["removed_by_float"] or 0 for row in layers]
    y = np.arange(len(layers))
    fig = figure(6.0, 1.2 + 0.3 * len(layers))
    ax = fig.subplots()
    colors = [REMOVED if v > 0 else INTRODUCED for v in removed]
    ax.barh(y, removed, color=colors, label="removed by keeping it in float")
    ax.set_yticks(
        y, [f"{r['name']} ({pct(r['param_share'], 0)} params)" for r in layers], fontsize=7
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
