"""Terminal tables (rich) for the reports; plain data in, renderables out.

Group tables show rates only, so that five schemes fit an 80-column terminal; the counts are
in the totals table and in ``report.json``.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["evaluate_tables"]

ANY = "any"


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _header(label: str) -> str:
    """Break long scheme labels at their separators so five schemes fit 80 columns."""
    if len(label) <= 6 or " " in label:
        return label
    return label.replace("-", "-\n").replace(":", "\n:")


def _table(title: str, first: str, columns: list[str], caption: str | None = None) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column(first, style="bold", no_wrap=True)
    for column in columns:
        table.add_column(_header(column), justify="right", no_wrap=True)
    return table


def _rate_table(
    title: str,
    first: str,
    rows: list[dict[str, Any]],
    schemes: list[str],
    caption: str | None = None,
) -> Table:
    table = _table(title, first, ["n", "fp acc", *schemes, ANY], caption)
    for row in rows:
        if row["n"]:
            rates = [_pct(row["disagreement_rate"][s]) for s in [*schemes, ANY]]
            table.add_row(row["name"], str(row["n"]), _pct(row["accuracy"]["fp"]), *rates)
    return table


def totals_table(report: dict[str, Any]) -> Table:
    """Per scheme: disagreements (count and rate) on clean, shifted, held-out and natural
    inputs, and the quantized copy's accuracy next to the FP model's."""
    totals = report["totals"]
    parts = [k for k in ("clean", "shifted", "held_out", "natural") if totals[k]["n"]]
    headers = [f"{k.replace('_', '-')} (n={totals[k]['n']})" for k in parts]
    table = _table("Disagreements with the FP model", "scheme", [*headers, "accuracy"])
    for scheme in [*report["schemes"], ANY]:
        cells = [
            f"{totals[k]['disagreements'][scheme]} ({_pct(totals[k]['disagreement_rate'][scheme])})"
            for k in parts
        ]
        acc = totals["all"]["accuracy"]
        table.add_row(scheme, *cells, _pct(acc[scheme]) if scheme != ANY else "")
    table.add_row("fp", *["" for _ in parts], _pct(totals["all"]["accuracy"]["fp"]))
    return table


def worst_table(report: dict[str, Any]) -> Table:
    table = _table(
        "Worst group per scheme",
        "scheme",
        ["most disagreements", "rate", "lowest accuracy", "acc (fp)"],
    )
    for scheme in report["schemes"]:
        w = report["worst_group"][scheme]
        d, a = w["by_disagreement"], w["by_accuracy"]
        table.add_row(
            scheme,
            d["group"],
            _pct(d["disagreement_rate"]),
            a["group"],
            f"{_pct(a['accuracy'])} ({_pct(a['fp_accuracy'])})",
        )
    return table


def evaluate_tables(report: dict[str, Any], *, classes: bool = True) -> list[Any]:
    """Disagreement rates per shift family, severity and class with the FP model's accuracy,
    then totals per scheme and the worst group of each scheme."""
    schemes = report["schemes"]
    held = {g["shift"] for g in report["groups"] if g["held_out"] and g["shift"]}
    shift_rows = [
        r | {"name": r["name"] + (" *" if r["name"] in held else "")} for r in report["by_shift"]
    ]
    severity_rows = [
        r | {"name": str(r["severity"]) if r["severity"] else "clean"}
        for r in report["by_severity"]
    ]
    out: list[Any] = [
        _rate_table(
            "Disagreement rate per shift (all severities)",
            "shift",
            shift_rows,
            schemes,
            caption="* held out: measured, never in the pool or calibration set" if held else None,
        ),
        _rate_table("Per severity (all shifts)", "severity", severity_rows, schemes),
    ]
    if classes:
        out.append(_rate_table("Per class (true label)", "class", report["by_class"], schemes))
    out += [totals_table(report), worst_table(report)]
    return out
