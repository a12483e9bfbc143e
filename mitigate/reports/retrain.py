"""``mitigate retrain`` report: the accounting against f0, within the new pair, and cost;
and the removed / introduced plot per shift family.

The same rows feed the terminal (rich) and ``report.md`` (Markdown), so both show one story.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.figures import INTRODUCED, REMOVED, SURVIVED, figure, percent_axis
from mitigate.reports.tables import pct, table
from mitigate.reports.writer import Plot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "accounting_header",
    "accounting_rows",
    "headline",
    "pair_rows",
    "removed_introduced",
    "retrain_markdown",
    "retrain_plots",
    "retrain_tables",
]

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
    return pct(value, 0, signed=True)


def _present(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(label, report["totals"][key]) for key, label in TOTALS if report["totals"][key]["n"]]


def accounting_header(report: dict[str, Any]) -> tuple[str, ...]:
    """The accounting columns; with a guard, also the share of inputs it rerouted."""
    guarded = report["totals"]["all"].get("rerouted") is not None
    return (*ACCOUNTING, "rerouted") if guarded else ACCOUNTING


def accounting_rows(report: dict[str, Any]) -> list[list[str]]:
    """Against the original FP model f0: before = q0≠f0, after = q1≠f0; a guard's reroute
    rate per part."""
    guarded = len(accounting_header(report)) > len(ACCOUNTING)
    return [
        [
            label,
            str(t["n"]),
            str(t["before"]),
            str(t["removed"]),
            str(t["introduced"]),
            str(t["after"]),
            _pct(t["net_removal"]),
            *([pct(t["reroute_rate"])] if guarded else []),
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
                pct(acc["f0"]),
                pct(acc["q0"]),
                pct(acc["f1"]),
                pct(acc["q1"]),
            ]
        )
    return rows


def _step_lines(step: str, notes: dict[str, Any]) -> list[str]:
    """What a step chose, one line each."""
    probe = f"(on {notes.get('probe')} probe inputs)"
    if notes.get("winner"):
        return [f"{step}: winning setting {notes['winner']} {probe}"]
    if "float_layers" in notes:
        kept = ", ".join(notes["float_layers"]) or "none within the budget helped"
        budget = (
            f"budget {pct(notes.get('max_float_params'), 0)} of parameters, "
            f"{pct(notes.get('max_float_macs'), 0)} of MACs"
        )
        return [f"{step}: layers kept in float: {kept} ({budget}; {notes['method']}) {probe}"]
    if "changed" in notes:
        return [f"{step}: {notes['changed']} integers re-rounded (on {notes['inputs']} inputs)"]
    if "moved" in notes:
        moved = ", ".join(notes["moved"]) or "none"
        return [f"{step}: activation ranges re-picked: {moved} {probe}"]
    if "threshold" in notes:
        target = ", ".join(f"{k} {v:g}" for k, v in notes["target"].items())
        return [
            f"{step}: reroutes margin < {notes['threshold']:.4g} to the FP model ({target}: "
            f"on the pool it reroutes {pct(notes['rerouted'])} of inputs and catches "
            f"{pct(notes['caught'])} of {notes['pool_disagreements']} disagreements)"
        ]
    return []


def cost_lines(cost: dict[str, Any] | None, totals: dict[str, Any]) -> list[str]:
    """What q1 costs against q0 and FP, what it keeps in float, and what a guard reroutes."""
    if not cost:
        return []
    q1, noise = cost["models"]["q1"], cost.get("latency_noise")
    line = (
        f"q1 costs {q1['size_vs_reference']:.2f}x the size and "
        f"{q1['latency_vs_reference']:.2f}x the latency of q0 "
        f"({q1['size_vs_fp']:.2f}x / {q1['latency_vs_fp']:.2f}x of FP"
        + (f"; latency noise ±{noise:.2f}" if noise is not None else "")
        + ")"
    )
    if q1.get("per_input_vs_reference") is not None:
        line += (
            f"; one input at a time {q1['per_input_vs_reference']:.2f}x q0's latency "
            f"({q1['per_input_vs_fp']:.2f}x FP's"
            + (f", noise ±{cost['per_input_noise']:.2f}" if "per_input_noise" in cost else "")
            + ")"
        )
    share = cost.get("float_share")
    if share and (share["params"] or share["macs"]):
        line += f"; in float: {pct(share['params'])} of parameters, {pct(share['macs'])} of MACs"
    lines = [line]
    if totals.get("rerouted") is not None:
        lines.append(
            f"the guard sent {totals['rerouted']} of {totals['n']} test inputs "
            f"({pct(totals['reroute_rate'])}) to the FP model"
        )
    return lines


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
        lines += _step_lines(step, notes)
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
    rates = f"{pct(worst['before_rate'])} -> {pct(worst['after_rate'])}"
    lines.append(f"worst group before: {worst['group']} {rates} after")
    lines += cost_lines(report.get("deployment"), report["totals"]["all"])
    return lines


def retrain_tables(report: dict[str, Any]) -> list[Any]:
    return [
        table(
            "Disagreements with the original FP model f0",
            accounting_header(report),
            accounting_rows(report),
        ),
        table("Within the new pair, FP churn, accuracy", PAIR, pair_rows(report)),
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
            pct(w["before_rate"]),
            pct(w["after_rate"]),
            pct(w["q1_accuracy"]),
        ]
        for key, w in worst.items()
    ]
    parts = [
        f"# mitigate retrain: {report['strategy']}",
        "",
        *[f"**Warning: {line}.**\n" for line in report.get("warnings", [])],
        *[f"- {line}" for line in headline(report)],
        "",
        *(["## Plots", "", md_plots(plots), ""] if plots else []),
        "## Disagreements with the original FP model f0",
        "",
        "before = q0≠f0, after = q1≠f0; before − removed + introduced = after.",
        "",
        md_table(accounting_header(report), accounting_rows(report)),
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


# ---- plots ------------------------------------------------------------------------------------


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
    fig = figure(7.0, 1.4 + 0.28 * len(rows))
    ax = fig.subplots()
    before, after = y - h / 2, y + h / 2
    ax.barh(before, share["survived"], h, color=SURVIVED, label="survived")
    ax.barh(before, share["removed"], h, left=share["survived"], color=REMOVED, label="removed")
    ax.barh(after, share["survived"], h, color=SURVIVED, label="_survived")
    ax.barh(
        after, share["introduced"], h, left=share["survived"], color=INTRODUCED, label="introduced"
    )
    ax.set_yticks(y, [f"{name}  before\nafter" for name in names], fontsize=7)
    ax.invert_yaxis()
    percent_axis(ax, "x", decimals=1)
    ax.set_xlabel("disagreements with f0 (share of the group's inputs)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    t = report["totals"]["all"]
    change = "" if t["net_removal"] is None else f", net removal {_pct(t['net_removal'])}"
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
