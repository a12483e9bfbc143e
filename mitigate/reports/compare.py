"""``mitigate compare`` report: one row per strategy x selector x budget over seeds — what it
removes, and what its q1 costs against q0 and FP — the best row on held-out shifts, the net
removal against the budget, and the trade-off of removal against cost with its Pareto
frontier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.figures import colors, figure, percent_axis
from mitigate.reports.tables import Fitted, breakable, pct, table
from mitigate.reports.writer import Plot
from mitigate.stats import format_mean_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONTROL = "control"  # a training strategy's no-selection cell
FLOOR = -0.5  # the trade-off plot's lowest net removal; rows below it sit on the floor
NO_SELECTION = "-"  # the selector of a strategy that selects nothing

__all__ = [
    "COST_HEADER",
    "best_line",
    "best_lines",
    "compare_markdown",
    "compare_plots",
    "compare_rows",
    "compare_table",
    "compare_tables",
    "cost_rows",
    "net_removal_vs_budget",
    "pareto",
    "tradeoff",
]

COST_HEADER = (
    "strategy",
    "selector",
    "budget",
    "size vs q0",
    "size vs FP",
    "latency vs q0",
    "latency vs FP",
    "1 by 1 vs q0",
    "1 by 1 vs FP",
    "float params",
    "float MACs",
    "rerouted",
)

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


def _ratio(stats: dict[str, Any] | None) -> str:
    """A ratio's mean and CI over seeds: ``1.04x ±0.19``."""
    return format_mean_ci(stats, scale=1, digits=2, unit="x") if stats else "-"


def cost_rows(report: dict[str, Any]) -> list[list[str]]:
    """What each row's q1 costs (mean ± CI over seeds): size and latency against q0 and the FP
    model (latency: one run's interleaved timing per seed), the shares of parameters and MACs
    kept in float, and the share of test inputs a guard sends to the FP model."""
    rows = []
    for r in report["rows"]:
        if r["selector"] == CONTROL:
            continue
        shares = [
            format_mean_ci(r.get(k) or {"mean": None}, digits=1, unit="%")
            for k in (
                "float_params",
                "float_macs",
                "reroute_rate",
            )
        ]
        rows.append(
            [
                r["strategy"],
                r["selector"],
                r["budget"],
                *(_ratio(r.get(k)) for k in ("size_vs_q0", "size_vs_fp")),
                *(_ratio(r.get(k)) for k in ("latency_vs_q0", "latency_vs_fp")),
                *(_ratio(r.get(k)) for k in ("per_input_vs_q0", "per_input_vs_fp")),
                *shares,
            ]
        )
    return rows


def compare_tables(report: dict[str, Any]) -> list[Fitted]:
    """The removal table and the cost table, for the terminal."""
    return [compare_table(report), cost_table(report)]


def cost_table(report: dict[str, Any]) -> Fitted:
    """:func:`cost_rows` for an 80-column terminal: one label per row (strategy, selector,
    budget), short headers with a legend, and the latency noise (q0 timed twice)."""
    noise = [(r.get("latency_noise") or {}).get("mean") for r in report["rows"]]
    noise = [v for v in noise if v is not None]
    legend = (
        "size, time: q1's size and latency (a batch of 64) divided by q0's and by the FP "
        "model's; 1x1: latency one input at a time; float: "
        "shares of parameters and MACs kept in float; rerouted: test inputs a guard sends to FP"
    )
    if noise:
        legend += f". The same model timed twice differed by up to {max(noise):.2f}x: noise"
    rows = [
        [" ".join([breakable(row[0]), *(v for v in row[1:3] if v != NO_SELECTION)]), *row[3:]]
        for row in cost_rows(report)
    ]
    header = (
        "row",
        "size q0",
        "size FP",
        "time q0",
        "time FP",
        "1x1 q0",
        "1x1 FP",
        "float params",
        "float MACs",
    )
    return table(
        "What q1 costs, mean ±95% CI over seeds",
        [*header, "rerouted"],
        rows,
        caption=legend,
    )


def compare_table(report: dict[str, Any]) -> Fitted:
    """The compare rows for an 80-column terminal: a strategy that trained on the selected
    inputs' labels is marked ``*`` (instead of a labels column), and each value wraps at its
    ``±`` rather than being cut short."""
    seeds = len(report["seeds"])
    rows = [
        [breakable(row[0]) + (" *" if row[3] == "yes" else ""), *row[1:3], *row[4:]]
        for row in compare_rows(report)
    ]
    header = [*HEADER[:3], *HEADER[4:]]
    return table(
        f"Net removal of {report['scheme']} disagreements vs the original FP model, "
        f"mean ±95% CI over {seeds} seed{'s' if seeds > 1 else ''}",
        header,
        rows,
        caption="* uses the selected inputs' labels.  noise: not distinguishable from its "
        "noise floor (the control, or zero); floor: the noise floor itself",
        left=(0, 1, 2, len(header) - 1),
    )


def best_lines(report: dict[str, Any], *, bold: bool = False) -> list[str]:
    """The row that removed most on held-out shifts, and the one that did so while keeping what
    quantization bought (fully int8, within the size and float budget), with their costs."""
    lines = []
    if report.get("best_on_held_out"):
        lines.append(best_line(report["best_on_held_out"], bold=bold))
    within = report.get("best_within_budget")
    if within:
        b = report["budget"]
        lines.append(
            best_line(within, bold=bold, what="Most removed by a fully int8 q1").rstrip(".")
            + f" (budget: {b['size_vs_q0']:g}x q0's size, {pct(b['float_params'], 0)} of "
            f"parameters and {pct(b['float_macs'], 0)} of MACs in float)."
        )
    return lines


def best_line(
    best: dict[str, Any],
    *,
    bold: bool = False,
    what: str = "Most disagreements removed on held-out shifts",
) -> str:
    """One best row, with what its q1 costs against q0 and FP (``bold``: the strategy in
    Markdown bold)."""
    strategy = f"**{best['strategy']}**" if bold else best["strategy"]
    line = (
        f"{what}: {strategy} "
        f"(selector {best['selector']}, budget {best['budget']}): {_ci(best['net_removal'])}"
    )
    size, latency = best.get("size_vs_q0"), best.get("latency_vs_q0")
    if size and size["mean"] is not None:
        line += (
            f"; its q1 costs {size['mean']:.2f}x the size and {_ratio(latency)} the latency of q0"
        )
        fp_size, fp_latency = best.get("size_vs_fp"), best.get("latency_vs_fp")
        if fp_size and fp_size["mean"] is not None:
            line += f" ({fp_size['mean']:.2f}x / {_ratio(fp_latency)} of FP)"
        single = best.get("per_input_vs_q0")
        if single and single["mean"] is not None:
            line += f", one input at a time {_ratio(single)} q0's latency"
    return line + "."


def compare_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md`` of ``mitigate compare``: the table, the best row on held-out shifts, the
    plots and the provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    lines = [
        "# mitigate compare",
        "",
        f"Net removal of {report['scheme']} disagreements against the original FP model, mean and "
        f"95% confidence interval over seeds {report['seeds']}. Held-out: shift families never "
        "in the pool. noise: not distinguishable from its noise floor.",
        "",
        md_table(HEADER[:-1] + ("noise",), compare_rows(report)),
        "",
        "## What q1 costs",
        "",
        "Size and latency against q0 (the default int8 model) and the FP model; latency ratios "
        "come from one run's interleaved timing per seed, on a batch of 64 test inputs spread "
        "over every group and on the same inputs one at a time (1 by 1: what a stream of "
        "single requests meets; a guard re-runs the FP model only on the few it reroutes), "
        "and the same model timed twice differs by the latency noise. Float: shares of "
        "parameters and MACs kept in float. "
        "Rerouted: share of test inputs a guard answers with the FP model.",
        "",
        md_table(COST_HEADER, cost_rows(report)),
        "",
    ]
    for line in best_lines(report, bold=True):
        lines += [line, ""]
    if plots:
        lines += ["## Plots", "", md_plots(plots), ""]
    lines += [provenance(report), ""]
    return "\n".join(lines)


# ---- plots ------------------------------------------------------------------------------------


def _budget_axis(budgets: Sequence[str]) -> tuple[dict[str, float], bool]:
    """x position of each budget label: its value when every budget is a count, else its
    rank (fractions and counts cannot share a numeric axis)."""
    numbers = {}
    for b in budgets:
        try:
            numbers[b] = float(b)
        except ValueError:
            return {b: float(i) for i, b in enumerate(budgets)}, False
    if all(v >= 1 and v.is_integer() for v in numbers.values()):
        return numbers, True
    ordered = sorted(budgets, key=lambda b: numbers[b])
    return {b: float(ordered.index(b) + 1) for b in budgets}, False


def net_removal_vs_budget(report: dict[str, Any]) -> Figure:
    """Mean net removal against the budget, one line per strategy and one panel per selector,
    with the 95% confidence interval over seeds shaded (top: every test input; bottom: the
    held-out shift families).

    A training strategy's control (no selected inputs) is drawn at budget 0; a strategy that
    ignores the budget (``none``; ``settings``/``fallback`` score on the probe) is a flat line
    across the panel. Series lines are those returned by :func:`series_lines`.
    """
    rows = report["rows"]
    selectors = list(
        dict.fromkeys(r["selector"] for r in rows if r["selector"] not in (NO_SELECTION, CONTROL))
    )
    selectors = selectors or [NO_SELECTION]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    palette = dict(zip(strategies, colors(len(strategies)), strict=True))
    budgets = list(
        dict.fromkeys(r["budget"] for r in rows if r["budget"] != "-" and r["selector"] != CONTROL)
    )
    x_of, numeric = _budget_axis(budgets)
    span = (0.0, max(x_of.values(), default=1.0))
    parts = [("all", "all test inputs"), ("held_out_shifts", "held-out shifts")]
    parts = [p for p in parts if any(r[p[0]]["mean"] is not None for r in rows)]
    fig = figure(1.0 + 3.3 * len(selectors), 0.6 + 2.7 * len(parts))
    axes = fig.subplots(len(parts), len(selectors), squeeze=False, sharex=True, sharey="row")
    for i, (part, part_label) in enumerate(parts):
        for j, selector in enumerate(selectors):
            ax = axes[i][j]
            ax.axhline(0, color="0.6", linewidth=0.8, label="_zero")
            for strategy in strategies:
                _draw_strategy(ax, rows, strategy, selector, part, x_of, span, palette[strategy])
            if i == 0:
                ax.set_title(f"selector {selector}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"net removal\n({part_label})", fontsize=8)
            if i == len(parts) - 1:
                ax.set_xlabel("budget (selected inputs)" if numeric else "budget", fontsize=8)
            ticks = sorted(set(x_of.values()) | {0.0})
            ax.set_xticks(ticks, [_tick(t, x_of) for t in ticks], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            percent_axis(ax)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(handles), 6),
            fontsize=7,
            frameon=False,
        )
    seeds = len(report.get("seeds", [])) or "?"
    fig.suptitle(
        f"Net removal of {report.get('scheme', '')} disagreements vs budget "
        f"(mean, 95% CI over {seeds} seeds; 0 = control)",
        fontsize=10,
    )
    return fig


def _tick(position: float, x_of: dict[str, float]) -> str:
    for label, x in x_of.items():
        if x == position:
            return label
    return "0"


def _draw_strategy(ax, rows, strategy, selector, part, x_of, span, color) -> None:
    mine = [r for r in rows if r["strategy"] == strategy]
    flat = [r for r in mine if r["budget"] == "-" and r["selector"] in (selector, NO_SELECTION)]
    if flat:  # ignores the budget: a level line with its band
        stats = flat[0][part]
        if stats["mean"] is None:
            return
        ax.plot(
            span, [stats["mean"]] * 2, color=color, linestyle="--", linewidth=1.2, label=strategy
        )
        if stats["ci95"] is not None:
            ax.fill_between(
                span,
                stats["mean"] - stats["ci95"],
                stats["mean"] + stats["ci95"],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        return
    points = [
        (x_of[r["budget"]], r[part])
        for r in mine
        if r["selector"] == selector and r["budget"] in x_of
    ]
    points += [(0.0, r[part]) for r in mine if r["selector"] == CONTROL]
    points = sorted((x, s) for x, s in points if s["mean"] is not None)
    if not points:
        return
    x = np.array([p[0] for p in points])
    mean = np.array([p[1]["mean"] for p in points])
    half = np.array([p[1]["ci95"] if p[1]["ci95"] is not None else np.nan for p in points])
    ax.plot(x, mean, marker="o", markersize=3.5, color=color, label=strategy)
    known = np.isfinite(half)
    if known.any():  # the interval at each point, and shaded between points
        ax.vlines(x[known], (mean - half)[known], (mean + half)[known], color=color, linewidth=1)
        if len(x) > 1:
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, linewidth=0)


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has at least the removal (second
    value) at no more cost (first value), and is better in one of them. Sorted by cost.

    Example:
        >>> pareto([(1.0, 0.5), (2.0, 0.4), (0.5, 0.1), (1.0, 0.5)])
        [2, 0]
    """
    front = []
    for i, (cost, gain) in enumerate(points):
        beaten = any(
            (c <= cost and g >= gain) and (c < cost or g > gain)
            for j, (c, g) in enumerate(points)
            if j != i
        )
        duplicate = any(points[j] == (cost, gain) for j in front)
        if not beaten and not duplicate:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def tradeoff(report: dict[str, Any]) -> Figure:
    """Net removal on held-out shifts against what q1 costs relative to the FP model —
    latency (left) and size (right) — one point per row (mean, 95% CI over seeds as error
    bars), the Pareto frontier drawn as a line through the rows it holds. The FP model itself
    sits at cost 1: a mitigation to the right of it gave back what quantization bought."""
    rows = [
        r
        for r in report["rows"]
        if r["selector"] != CONTROL
        and r["held_out_shifts"]["mean"] is not None
        and (r.get("latency_vs_fp") or {}).get("mean") is not None
    ]
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    palette = dict(zip(strategies, colors(len(strategies)), strict=True))
    fig = figure(9.0, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(
        axes, ("latency_vs_fp", "size_vs_fp"), ("latency", "size"), strict=True
    ):
        ax.axhline(0, color="0.6", linewidth=0.8, label="_zero")
        ax.axvline(1, color="0.6", linewidth=0.8, linestyle=":", label="_fp")
        points = [(r[key]["mean"], r["held_out_shifts"]["mean"]) for r in rows]
        for r, (x, y) in zip(rows, points, strict=True):
            if y < FLOOR:  # off the scale: a marker on the floor, pointing down
                ax.plot(x, FLOOR, "v", markersize=5, color=palette[r["strategy"]], label="_off")
                continue
            ax.errorbar(
                x,
                y,
                xerr=r[key]["ci95"] or 0,
                yerr=r["held_out_shifts"]["ci95"] or 0,
                fmt="o",
                markersize=4,
                color=palette[r["strategy"]],
                elinewidth=0.7,
                label="_point",
            )
        ax.set_ylim(FLOOR - 0.05, 1.05)
        front = pareto(points)
        if front:
            ax.plot(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                color="0.2",
                linewidth=1.0,
                linestyle="--",
                label="Pareto frontier",
            )
        ax.set_xlabel(f"q1 {label} / FP {label}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        percent_axis(ax)
    axes[0].set_ylabel("net removal, held-out shifts", fontsize=8)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=palette[s], label=s) for s in strategies
    ]
    handles.append(Line2D([], [], color="0.2", linestyle="--", label="Pareto frontier"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 5),
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(
        "Removal against cost (mean, 95% CI over seeds; dotted: the FP model's own cost;\n"
        f"▼ rows below {FLOOR:.0%}, drawn on the floor)",
        fontsize=9,
    )
    return fig


def compare_plots(report: dict[str, Any]) -> list[Plot]:
    plots = [
        Plot(
            "net-removal-vs-budget.png",
            "Net removal against the budget per strategy, 95% CI shaded",
            net_removal_vs_budget(report),
        )
    ]
    if any((r.get("latency_vs_fp") or {}).get("mean") is not None for r in report["rows"]):
        plots.append(
            Plot(
                "removal-vs-cost.png",
                "Net removal on held-out shifts against q1's latency and size relative to FP, "
                "Pareto frontier dashed",
                tradeoff(report),
            )
        )
    return plots
