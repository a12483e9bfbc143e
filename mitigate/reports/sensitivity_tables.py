"""The layer-sensitivity table (rich): plain report dict in, a renderable that fits 80 columns."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["sensitivity_summary", "sensitivity_table"]


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
    for name in ("params", "MACs", "alone", "in float", "removes"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report["layers"]:
        table.add_row(
            str(row["rank"]),
            row["name"],
            row["type"],
            _pct(row["param_share"]),
            _pct(row["mac_share"]),
            _count(row["disagreements_alone"]),
            _count(row["disagreements_without"]),
            _count(row["removed_by_float"]),
        )
    return table


def sensitivity_summary(report: dict[str, Any]) -> str:
    """Two lines: the all-int8 count on the probe, and the floor with every module in float
    (what the functional ops torch still quantizes cause)."""
    d, probe = report["disagreements"], report["probe"]
    return (
        f"all int8: {d['all_int8']} of {probe['size']} probe inputs disagree "
        f"(pool: {probe['pool_size']} inputs)\n"
        f"every module in float: {d['every_module_in_float']} (functional ops stay int8)"
    )
