"""``mitigate evaluate`` report: its tables (the same rows feed the terminal and
``report.md``) and its plots (the per-shift heatmap and the per-severity lines).

Group tables show rates only, so that five schemes fit an 80-column terminal; the counts are
in the totals table and in ``report.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.figures import WORST, colors, figure, percent_axis
from mitigate.reports.tables import Fitted, breakable, table
from mitigate.reports.tables import pct as _pct
from mitigate.reports.writer import Plot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "evaluate_markdown",
    "evaluate_plots",
    "evaluate_sections",
    "evaluate_tables",
    "severity_lines",
    "shift_heatmap",
]

ANY = "any"


def _header(label: str) -> str:
    """Break long scheme labels at their separators so five schemes fit 80 columns."""
    if len(label) <= 6 or " " in label:
        return label
    return label.replace("-", "-\n").replace(":", "\n:")


def _table(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str | None = None,
) -> Fitted:
    labelled = [[breakable(row[0]), *row[1:]] for row in rows]
    return table(
        title, [header[0], *map(_header, header[1:])], labelled, caption=caption, bold_first=True
    )


def _rate_rows(
    first: str, rows: list[dict[str, Any]], schemes: list[str]
) -> tuple[list[str], list[list[str]]]:
    header = [first, "n", "fp acc", *schemes, ANY]
    body = [
        [
            row["name"],
            str(row["n"]),
            _pct(row["accuracy"]["fp"]),
            *[_pct(row["disagreement_rate"][s]) for s in [*schemes, ANY]],
        ]
        for row in rows
        if row["n"]
    ]
    return header, body


def _totals_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    totals = report["totals"]
    parts = [k for k in ("clean", "shifted", "held_out", "natural") if totals[k]["n"]]
    header = ["scheme", *[f"{k.replace('_', '-')} (n={totals[k]['n']})" for k in parts]]
    header.append("accuracy")
    acc = totals["all"]["accuracy"]
    rows = []
    for scheme in [*report["schemes"], ANY]:
        cells = [
            f"{totals[k]['disagreements'][scheme]} ({_pct(totals[k]['disagreement_rate'][scheme])})"
            for k in parts
        ]
        rows.append([scheme, *cells, _pct(acc[scheme]) if scheme != ANY else ""])
    rows.append(["fp", *["" for _ in parts], _pct(acc["fp"])])
    return header, rows


def _cost_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each copy's serialized size and latency against the FP model's (one run's interleaved
    timing)."""
    models = report["deployment"]["models"]
    header = ["scheme", "size vs FP", "latency vs FP", "size", "latency"]
    rows = [
        [
            scheme,
            f"{m['size_vs_fp']:.2f}x",
            f"{m['latency_vs_fp']:.2f}x",
            f"{m['size_bytes'] / 1024:.0f} KiB",
            f"{m['latency_ms']:.2f} ms",
        ]
        for scheme, m in models.items()
    ]
    return header, rows


def _ort_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["scheme", "onnxruntime", "threads", "optimization", "export agrees with torch"]
    rows = []
    for label, info in report["onnxruntime"].items():
        export = info.get("export")
        agrees = (
            f"{'yes' if export['agrees_with_torch'] else 'NO'} (max |logit diff| "
            f"{export['max_abs_logit_diff']:.1e} on {export['inputs']} inputs)"
            if export
            else "user file"
        )
        threads = str(info["threads"])
        rows.append([label, info["version"], threads, info["optimization"], agrees])
    return header, rows


def _worst_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["scheme", "most disagreements", "rate", "lowest accuracy", "acc (fp)"]
    rows = []
    for scheme in report["schemes"]:
        w = report["worst_group"][scheme]
        d, a = w["by_disagreement"], w["by_accuracy"]
        rows.append(
            [
                scheme,
                d["group"],
                _pct(d["disagreement_rate"]),
                a["group"],
                f"{_pct(a['accuracy'])} ({_pct(a['fp_accuracy'])})",
            ]
        )
    return header, rows


def evaluate_sections(
    report: dict[str, Any], *, classes: bool = True
) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """``(title, header, rows, caption)`` of every evaluate table, in display order: rates per
    shift family, severity and class, then totals per scheme and the worst group of each."""
    schemes = report["schemes"]
    held = {g["shift"] for g in report["groups"] if g["held_out"] and g["shift"]}
    shift_rows = [
        r | {"name": r["name"] + (" *" if r["name"] in held else "")} for r in report["by_shift"]
    ]
    severity_rows = [
        r | {"name": str(r["severity"]) if r["severity"] else "clean"}
        for r in report["by_severity"]
    ]
    caption = "* held out: measured, never in the pool or calibration set" if held else None
    sections = [
        (
            "Disagreement rate per shift (all severities)",
            *_rate_rows("shift", shift_rows, schemes),
            caption,
        ),
        ("Per severity (all shifts)", *_rate_rows("severity", severity_rows, schemes), None),
    ]
    if classes:
        sections.append(
            ("Per class (true label)", *_rate_rows("class", report["by_class"], schemes), None)
        )
    sections.append(("Disagreements with the FP model", *_totals_rows(report), None))
    sections.append(("Worst group per scheme", *_worst_rows(report), None))
    if report.get("deployment"):
        batch = report["deployment"]["batch"]
        note = f"latency: one run's interleaved timing on {batch} inputs spread over every group"
        sections.append(("What each copy costs", *_cost_rows(report), note))
    if report.get("onnxruntime"):
        note = "measure at the optimization level you deploy: 'all' runs fused integer kernels"
        sections.append(("ONNX Runtime sessions", *_ort_rows(report), note))
    return sections  # type: ignore[return-value]


def evaluate_tables(report: dict[str, Any], *, classes: bool = True) -> list[Any]:
    """Disagreement rates per shift family, severity and class with the FP model's accuracy,
    then totals per scheme and the worst group of each scheme (rich tables)."""
    return [
        _table(title, header, rows, caption)
        for title, header, rows, caption in evaluate_sections(report, classes=classes)
    ]


def evaluate_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md`` of ``mitigate evaluate``: headline, totals and worst groups, the plots,
    the per-shift, per-severity and per-class rates, and the provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    info = report["model"]
    sections = evaluate_sections(report)
    lead = (3 if report.get("deployment") else 2) + bool(report.get("onnxruntime"))
    first, rest = sections[-lead:], sections[:-lead]  # totals, worst groups and cost lead
    parts = [
        "# mitigate evaluate",
        "",
        f"How often each quantized copy of the FP model ({info['arch']}, {info['source']}) "
        f"changes its top-1 answer, on {report['n']:,} test inputs: clean, shifted and "
        "held-out. *any*: at least one copy disagrees.",
        "",
    ]
    for title, header, rows, caption in first:
        parts += [f"## {title}", "", md_table(header, rows), ""]
        if caption:
            parts += [caption, ""]
    if plots:
        parts += ["## Plots", "", md_plots(plots), ""]
    for title, header, rows, caption in rest:
        parts += [f"## {title}", "", md_table(header, rows), ""]
        if caption:
            parts += [caption.replace("*", "\\*", 1), ""]  # a leading * would be a bullet
    parts += [provenance(report), ""]
    return "\n".join(parts)


# ---- plots ------------------------------------------------------------------------------------


def _grid(
    report: dict[str, Any],
) -> tuple[list[str], list[int], dict[tuple[str, int | None], dict]]:
    """Rows (``clean`` first, then shift families in report order, then natural sets), the
    severity columns, and the measured group at each (row, severity); a group without a
    severity (clean, a natural set) sits at (row, ``None``): it spans its row."""
    groups = [g for g in report["groups"] if g["n"]]
    severities = sorted({g["severity"] for g in groups if g["shift"]})
    rows: list[str] = []
    cells: dict[tuple[str, int | None], dict] = {}
    for g in groups:
        row, column = (g["shift"], g["severity"]) if g["shift"] else (g["name"], None)
        if row not in rows:
            rows.append(row)
        cells[(row, column)] = g
    rows.sort(key=lambda r: r != "clean")  # stable: clean first, the rest in report order
    return rows, severities, cells


def _span(column: int | None, severities: list[int]) -> tuple[int, int]:
    """First column index and width of a cell (a row-spanning cell covers every column)."""
    return (0, max(len(severities), 1)) if column is None else (severities.index(column), 1)


def shift_heatmap(report: dict[str, Any]) -> Figure:
    """Disagreement rate per shift family (rows) and severity (columns), one panel per scheme.

    ``clean`` is the first row (one value spanning the row; so is each natural set). All
    panels share one colour scale (square-root, so small rates stay visible) and each scheme's
    worst group is boxed and labelled. Held-out families are marked ``*``. One image per
    scheme panel (``len(ax.images) == 1``) and one box per scheme (``len(ax.patches) == 1``).
    """
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    schemes = list(report["schemes"])
    rows, severities, cells = _grid(report)
    columns = max(len(severities), 1)
    held = {g["shift"] for g in report["groups"] if g.get("held_out") and g["shift"]}
    labels = [r + (" *" if r in held else "") for r in rows]
    top = max((g["disagreement_rate"][s] for g in cells.values() for s in schemes), default=0.0)
    norm = PowerNorm(0.5, vmin=0.0, vmax=max(top, 1e-3))
    fig = figure(min(1.2 + 1.55 * len(schemes) + 0.9, 16), 1.3 + 0.19 * len(rows))
    axes = fig.subplots(1, len(schemes), sharey=True, squeeze=False)[0]
    image = None
    for ax, scheme in zip(axes, schemes, strict=True):
        grid = np.full((len(rows), columns), np.nan)
        for (row, column), g in cells.items():
            start, width = _span(column, severities)
            grid[rows.index(row), start : start + width] = g["disagreement_rate"][scheme]
        image = ax.imshow(grid, aspect="auto", cmap="magma_r", norm=norm, interpolation="none")
        ax.set_title(scheme, fontsize=9)
        ax.set_xticks(range(columns), [str(s) for s in severities] or [""], fontsize=7)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.tick_params(length=0)
        if len(rows) > 1 and rows[0] == "clean":  # set the clean row apart from the shifts
            ax.axhline(0.5, color="white", linewidth=2, label="_separator")
        worst = report.get("worst_group", {}).get(scheme, {}).get("by_disagreement")
        where = [(r, c) for (r, c), g in cells.items() if worst and g["name"] == worst["group"]]
        if where:
            row, column = where[0]
            start, width = _span(column, severities)
            y = rows.index(row)
            ax.add_patch(
                Rectangle(
                    (start - 0.5, y - 0.5), width, 1, fill=False, edgecolor=WORST, linewidth=2
                )
            )
            rate = worst["disagreement_rate"]
            ax.text(
                start + (width - 1) / 2,
                y,
                _pct(rate),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if norm(rate) > 0.45 else "black",
            )
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), shrink=0.6, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        percent_axis(bar.ax, "y", decimals=1 if top < 0.05 else 0)
    note = "box: each scheme's worst group" + ("; * held out" if held else "")
    fig.suptitle(f"Disagreement rate with the FP model per shift and severity\n{note}", fontsize=9)
    return fig


def severity_lines(report: dict[str, Any]) -> Figure:
    """Disagreement rate against shift severity (all families pooled; clean at 0), one line
    per scheme."""
    schemes = list(report["schemes"])
    rows = [r for r in report["by_severity"] if r["n"]]
    x = [r["severity"] for r in rows]
    fig = figure(5.2, 3.2)
    ax = fig.subplots()
    for scheme, color in zip(schemes, colors(len(schemes)), strict=True):
        y = [r["disagreement_rate"][scheme] for r in rows]
        ax.plot(x, y, marker="o", markersize=3.5, color=color, label=scheme)
    ax.set_xticks(x, ["clean" if s == 0 else str(s) for s in x])
    ax.set_xlabel("shift severity (all families)")
    ax.set_ylabel("disagreement rate")
    ax.set_ylim(bottom=0)
    percent_axis(
        ax,
        decimals=1
        if max((max(r["disagreement_rate"].values()) for r in rows), default=0) < 0.05
        else 0,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Disagreement rate per severity", fontsize=10)
    return fig


def evaluate_plots(report: dict[str, Any]) -> list[Plot]:
    """The ``evaluate`` plots: the per-shift heatmap and the per-severity lines."""
    return [
        Plot(
            "disagreement-by-shift.png",
            "Disagreement rate per shift family and severity, each scheme's worst group boxed",
            shift_heatmap(report),
        ),
        Plot(
            "disagreement-by-severity.png",
            "Disagreement rate per severity, one line per scheme",
            severity_lines(report),
        ),
    ]
