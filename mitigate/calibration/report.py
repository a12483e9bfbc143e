"""The ``mitigate calibrate`` table (terminal and Markdown), one row per setting, best first.

The same rows feed the terminal (rich) and ``report.md``, so both tell one story.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mitigate.stats import format_mean_ci

__all__ = ["HEADER", "calibrate_markdown", "calibrate_rows", "calibrate_table", "varied"]

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


def calibrate_table(report: dict[str, Any]) -> Any:
    """The terminal table: each number over its ±95% CI half-width; the full setting names
    are in ``report.md``."""
    from rich.table import Table

    seeds = len(report["seeds"])
    table = Table(
        title=f"{report['scheme']} calibration, mean ±95% CI over {seeds} "
        f"seed{'s' if seeds > 1 else ''}, best worst-group disagreement first",
        title_justify="left",
        caption="dis.: disagreement with the FP model; worst: over clean, each shift family "
        "and each class; Δ: seed-paired change vs the default (* = beyond noise)",
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for i, column in enumerate(_SHORT_HEADER):
        table.add_column(column, justify="left" if i in (0, 6) else "right", no_wrap=i != 0)
    for r in report["rows"]:
        delta = "default" if r["factor"] == "baseline" else _two_lines(r["vs_baseline"], 2, True)
        if r["factor"] != "baseline" and not r["vs_baseline_noise"]:
            delta = delta.replace("\n", "*\n", 1) if "\n" in delta else delta + "*"
        table.add_row(
            varied(r),
            str(r["calibration_inputs"]),
            _two_lines(r["accuracy"]),
            _two_lines(r["worst_accuracy"]),
            _two_lines(r["disagreement"], 2),
            _two_lines(r["worst_disagreement"], 2),
            r["worst_group"],
            delta,
        )
    return table


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
