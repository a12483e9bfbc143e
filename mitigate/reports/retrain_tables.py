"""Tables for ``mitigate retrain``: the accounting against f0, within the new pair, and cost.

The same rows feed the terminal (rich) and ``report.md`` (Markdown), so both show one story.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

__all__ = ["accounting_rows", "headline", "pair_rows", "retrain_markdown", "retrain_tables"]

TOTALS = (
    ("clean", "clean"),
    ("seen_shifts", "seen shifts"),
    ("held_out_shifts", "held-out shifts"),
    ("natural", "natural"),
    ("all", "all"),
)
ACCOUNTING = ("inputs", "n", "before", "removed", "introduced", "after", "net removal")
PAIR = ("inputs", "q1≠f1", "net in pair", "f1≠f0 churn", "acc f0", "acc q0", "acc f1", "acc q1")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}%"


def _acc(value: float) -> str:
    return f"{100 * value:.1f}%"


def _present(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(label, report["totals"][key]) for key, label in TOTALS if report["totals"][key]["n"]]


def accounting_rows(report: dict[str, Any]) -> list[list[str]]:
    """Against the original FP model f0: before = q0≠f0, after = q1≠f0."""
    return [
        [
            label,
            str(t["n"]),
            str(t["before"]),
            str(t["removed"]),
            str(t["introduced"]),
            str(t["after"]),
            _pct(t["net_removal"]),
        ]
        for label, t in _present(report)
    ]


def pair_rows(report: dict[str, Any]) -> list[list[str]]:
    """Within the new pair (q1 vs f1), the FP model's own churn, and every model's accuracy."""
    rows = []
    for label, t in _present(report):
        acc = t["accuracy"]
        rows.append(
            [
                label,
                str(t["within_pair"]),
                _pct(t["net_removal_within_pair"]),
                str(t["churn"]),
                _acc(acc["f0"]),
                _acc(acc["q0"]),
                _acc(acc["f1"]),
                _acc(acc["q1"]),
            ]
        )
    return rows


def headline(report: dict[str, Any]) -> list[str]:
    """Lines around the tables: what ran, each step's choice, the control, worst group, cost."""
    sel = report["selection"]
    scheme = report["scheme_before"]
    if report["scheme_after"] != scheme:
        scheme += f" -> {report['scheme_after']}"
    first = (
        f"strategy {report['strategy']} ({'uses' if report['used_labels'] else 'no'} labels) "
        f"on {scheme}; selector {sel['selector']}: {sel['n']} selected "
        f"({sel['disagreements_among_selected']} of them q0≠f0)"
    )
    lines = [first + (f", probe {sel['probe']}" if sel.get("probe") else "")]
    for step, notes in report["notes"].items():
        probe = f"(on {notes.get('probe')} probe inputs)"
        if notes.get("winner"):
            lines.append(f"{step}: winning setting {notes['winner']} {probe}")
        if "float_layers" in notes:
            kept = ", ".join(notes["float_layers"]) or "none helped"
            lines.append(f"{step}: layers kept in float: {kept} {probe}")
    for row in report.get("per_step") or []:
        t = row["totals"]["all"]
        lines.append(f"after {row['step']}: {t['after']} disagreements ({_pct(t['net_removal'])})")
    if report.get("control"):
        t = report["control"]["all"]
        lines.append(
            "control (same training, no selected inputs): "
            f"after {t['after']} ({_pct(t['net_removal'])}), churn {t['churn']}"
        )
    worst = report["worst_group"]["before"]
    rates = f"{_acc(worst['before_rate'])} -> {_acc(worst['after_rate'])}"
    lines.append(f"worst group before: {worst['group']} {rates} after")
    cost = report.get("deployment", {}).get("models", {}).get("q1")
    if cost:
        lines.append(
            f"q1 costs {cost['size_vs_reference']:.2f}x the size and "
            f"{cost['latency_vs_reference']:.2f}x the latency of q0 "
            f"({cost['size_vs_fp']:.2f}x / {cost['latency_vs_fp']:.2f}x of FP)"
        )
    return lines


def _table(title: str, header: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, column in enumerate(header):
        # Two-word headers take two lines, so eight columns fit an 80-column terminal.
        table.add_column(
            "\n".join(column.rsplit(" ", 1)) if i else column,
            justify="left" if i == 0 else "right",
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*row)
    return table


def retrain_tables(report: dict[str, Any]) -> list[Any]:
    return [
        _table("Disagreements with the original FP model f0", ACCOUNTING, accounting_rows(report)),
        _table("Within the new pair, FP churn, accuracy", PAIR, pair_rows(report)),
    ]


def retrain_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md``: the headline, the plots, both tables, the worst groups, and the
    provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    worst = report["worst_group"]
    worst_rows = [
        [
            key.replace("_", " "),
            w["group"],
            _acc(w["before_rate"]),
            _acc(w["after_rate"]),
            _acc(w["q1_accuracy"]),
        ]
        for key, w in worst.items()
    ]
    parts = [
        f"# mitigate retrain: {report['strategy']}",
        "",
        *[f"- {line}" for line in headline(report)],
        "",
        *(["## Plots", "", md_plots(plots), ""] if plots else []),
        "## Disagreements with the original FP model f0",
        "",
        "before = q0≠f0, after = q1≠f0; before − removed + introduced = after.",
        "",
        md_table(ACCOUNTING, accounting_rows(report)),
        "",
        "## Within the new pair, FP churn, accuracy",
        "",
        md_table(PAIR, pair_rows(report)),
        "",
        "## Worst groups",
        "",
        md_table(("worst by", "group", "before", "after", "acc q1"), worst_rows),
        "",
        provenance(report),
        "",
    ]
    return "\n".join(parts)
