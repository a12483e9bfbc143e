"""The ``mitigate compare`` table: one row per strategy x selector x budget, over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from mitigate.stats import format_mean_ci

__all__ = ["best_line", "compare_markdown", "compare_rows", "compare_table"]

HEADER = (
    "strategy",
    "selector",
    "budget",
    "labels",
    "net removal",
    "held-out",
    "Δacc q1",
    "churn",
    "",
)


def _ci(stats: dict[str, Any]) -> str:
    """A signed share in whole percent: ``+56% ±10``."""
    return format_mean_ci(stats, digits=0, signed=True, unit="%")


def compare_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows sorted by mean net removal (all test inputs, against f0); held-out = shift
    families never in the pool; Δacc q1 = accuracy points gained by the quantized model;
    churn = share of inputs where the new FP model answers differently from f0."""
    return [
        [
            r["strategy"],
            r["selector"],
            r["budget"],
            "yes" if r["used_labels"] else "no",
            _ci(r["all"]),
            _ci(r["held_out_shifts"]),
            format_mean_ci(r["accuracy_change"], signed=True),
            format_mean_ci(r["churn"], ci_digits=0, unit="%"),
            r["noise"],
        ]
        for r in report["rows"]
    ]


def compare_table(report: dict[str, Any]) -> Table:
    """The compare rows for an 80-column terminal: a strategy that trained on the selected
    inputs' labels is marked ``*`` (instead of a labels column), and each value wraps at its
    ``±`` rather than being cut short."""
    seeds = len(report["seeds"])
    table = Table(
        title=f"Net removal of {report['scheme']} disagreements vs the original FP model, "
        f"mean ±95% CI over {seeds} seed{'s' if seeds > 1 else ''}",
        title_justify="left",
        caption="* uses the selected inputs' labels.  noise: not distinguishable from its "
        "noise floor (the control, or zero); floor: the noise floor itself",
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    rows = [
        [row[0] + (" *" if row[3] == "yes" else ""), *row[1:3], *row[4:]]
        for row in compare_rows(report)
    ]
    header = [*HEADER[:3], *HEADER[4:]]
    for i, column in enumerate(header):
        if i < 3:  # names and budgets stay whole; the values wrap instead
            width = max([len(column)] + [len(row[i]) for row in rows])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(
                "\n".join(column.rsplit(" ", 1)),
                justify="right" if i < len(header) - 1 else "left",
                overflow="fold",
                min_width=5,
            )
    for row in rows:
        table.add_row(*row)
    return table


def best_line(best: dict[str, Any], *, bold: bool = False) -> str:
    """The row that removed most on held-out shifts, with what its q1 costs against q0
    (``bold``: the strategy in Markdown bold)."""
    strategy = f"**{best['strategy']}**" if bold else best["strategy"]
    line = (
        f"Most disagreements removed on held-out shifts: {strategy} "
        f"(selector {best['selector']}, budget {best['budget']}): {_ci(best['net_removal'])}"
    )
    size, latency = best.get("size_vs_q0"), best.get("latency_vs_q0")
    if size and size["mean"] is not None:
        line += (
            f"; its q1 costs {size['mean']:.2f}x the size and "
            f"{format_mean_ci(latency, scale=1, digits=2, unit='x')} the latency of q0 "
            "(one run's interleaved timing)"
        )
    return line + "."


def compare_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md`` of ``mitigate compare``: the table, the best row on held-out shifts, the
    plots and the provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    best = report.get("best_on_held_out")
    lines = [
        "# mitigate compare",
        "",
        f"Net removal of {report['scheme']} disagreements against the original FP model, mean and "
        f"95% confidence interval over seeds {report['seeds']}. Held-out: shift families never "
        "in the pool. noise: not distinguishable from its noise floor.",
        "",
        md_table(HEADER[:-1] + ("noise",), compare_rows(report)),
        "",
    ]
    if best:
        lines += [best_line(best, bold=True), ""]
    if plots:
        lines += ["## Plots", "", md_plots(plots), ""]
    lines += [provenance(report), ""]
    return "\n".join(lines)
