"""The layer-sensitivity table (rich): plain report dict in, a renderable that fits 80 columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

__all__ = [
    "sensitivity_markdown",
    "sensitivity_rows",
    "sensitivity_summary",
    "sensitivity_table",
]

HEADER = ("#", "layer", "type", "params", "MACs", "alone", "in float", "removes")


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def sensitivity_table(report: dict[str, Any]) -> Table:
    """Layers ranked by the disagreements keeping them in float removes.

    Columns: rank, layer, type, share of parameters and of MACs, disagreements with only this
    layer in int8 (``alone``), with every layer but this one in int8 (``in float``), and how
    many of the all-int8 disagreements that removes.
    """
    probe = report["probe"]
    table = Table(
        title=(
            f"Layer sensitivity: {report['scheme']}, {probe['size']} pool inputs picked by "
            f"{probe['selector']}"
        ),
        title_justify="left",
        caption=(
            "alone: only this layer (and functional ops) in int8.  in float: all others.\n"
            f"removes: all-int8 count ({report['disagreements']['all_int8']}) minus 'in float'."
        ),
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("#", justify="right")
    table.add_column("layer", style="bold", overflow="fold")
    table.add_column("type", no_wrap=True)
    for name in HEADER[3:]:
        table.add_column(name, justify="right", no_wrap=True)
    for row in sensitivity_rows(report):
        table.add_row(*row)
    return table


def sensitivity_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per layer, in rank order (see :func:`sensitivity_table` for the columns)."""
    return [
        [
            str(row["rank"]),
            row["name"],
            row["type"],
            _pct(row["param_share"]),
            _pct(row["mac_share"]),
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
