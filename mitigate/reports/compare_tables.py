"""The ``mitigate compare`` table: one row per strategy x selector x budget, over seeds."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["compare_markdown", "compare_rows", "compare_table"]

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


def _ci(stats: dict[str, Any], scale: float = 100.0, signed: bool = True) -> str:
    if stats["mean"] is None:
        return "-"
    mean = f"{scale * stats['mean']:+.0f}%" if signed else f"{scale * stats['mean']:.1f}%"
    if stats["ci95"] is None:
        return mean
    return f"{mean} ±{scale * stats['ci95']:.0f}"


def _acc(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "-"
    text = f"{100 * stats['mean']:+.1f}"
    return text if stats["ci95"] is None else f"{text} ±{100 * stats['ci95']:.1f}"


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
            _acc(r["accuracy_change"]),
            _ci(r["churn"], signed=False),
            r["noise"],
        ]
        for r in report["rows"]
    ]


def compare_table(report: dict[str, Any]) -> Table:
    seeds = len(report["seeds"])
    table = Table(
        title=f"Net removal of {report['scheme']} disagreements vs the original FP model, "
        f"mean ±95% CI over {seeds} seed{'s' if seeds > 1 else ''}",
        title_justify="left",
        caption="noise: not distinguishable from its noise floor (the control, or zero); "
        "floor: the noise floor itself",
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for i, column in enumerate(HEADER):
        table.add_column(column, justify="left" if i < 4 or i == 8 else "right", no_wrap=True)
    for row in compare_rows(report):
        table.add_row(*row)
    return table


def compare_markdown(report: dict[str, Any]) -> str:
    from mitigate.reports.markdown import md_table, provenance

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
        lines += [
            f"Most disagreements removed on held-out shifts: **{best['strategy']}** "
            f"(selector {best['selector']}, budget {best['budget']}): {_ci(best['net_removal'])}.",
            "",
        ]
    lines += [provenance(report), ""]
    return "\n".join(lines)
