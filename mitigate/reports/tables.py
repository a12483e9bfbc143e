"""``mitigate evaluate`` tables: the same rows feed the terminal (rich) and ``report.md``.

Group tables show rates only, so that five schemes fit an 80-column terminal; the counts are
in the totals table and in ``report.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

__all__ = [
    "evaluate_markdown",
    "evaluate_sections",
    "evaluate_tables",
    "totals_table",
    "worst_table",
]

ANY = "any"


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


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
) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column(header[0], style="bold", no_wrap=True)
    for column in header[1:]:
        table.add_column(_header(column), justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


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


def totals_table(report: dict[str, Any]) -> Table:
    """Per scheme: disagreements (count and rate) on clean, shifted, held-out and natural
    inputs, and the quantized copy's accuracy next to the FP model's."""
    return _table("Disagreements with the FP model", *_totals_rows(report))


def worst_table(report: dict[str, Any]) -> Table:
    return _table("Worst group per scheme", *_worst_rows(report))


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
    first, rest = sections[-2:], sections[:-2]  # totals and worst groups lead
    parts = [
        "# mitigate evaluate",
        "",
        f"How often each quantized copy of the FP model ({info['arch']}, {info['source']}) "
        f"changes its top-1 answer, on {report['n']:,} test inputs: clean, shifted and "
        "held-out. *any*: at least one copy disagrees.",
        "",
    ]
    for title, header, rows, _ in first:
        parts += [f"## {title}", "", md_table(header, rows), ""]
    if plots:
        parts += ["## Plots", "", md_plots(plots), ""]
    for title, header, rows, caption in rest:
        parts += [f"## {title}", "", md_table(header, rows), ""]
        if caption:
            parts += [caption.replace("*", "\\*", 1), ""]  # a leading * would be a bullet
    parts += [provenance(report), ""]
    return "\n".join(parts)
