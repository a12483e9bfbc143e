"""``mitigate score`` report: one table of detector metrics, the winners, and the plots (ROC
curve of every score per scheme; the margin of agreeing vs disagreeing inputs).

Plain report dict in (see :func:`mitigate.runs.score.score_report`), rich renderables, lines
and figures out. One section per scheme, scores sorted by AUROC; seven columns fit an
80-column terminal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mitigate.reports.figures import WORST, colors, panels, percent_axis
from mitigate.reports.tables import Fitted, bare_table, breakable
from mitigate.reports.writer import Plot
from mitigate.scanning import Predictions, score_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "margin_histogram",
    "roc_figure",
    "score_markdown",
    "score_plots",
    "score_rows",
    "score_table",
    "winner_lines",
]

_UNDEFINED = "-"


def _num(value: float | None) -> str:
    return _UNDEFINED if value is None else f"{value:.2f}"


def _auroc_key(row: dict[str, Any]) -> float:
    """Highest AUROC first, undefined last (a stable sort keeps registry order among ties)."""
    return -row["auroc"] if row["auroc"] is not None else math.inf


def _budget_label(report: dict[str, Any]) -> tuple[str, str]:
    """``(k, title)``: the resolved count, and the budget as configured when it is a fraction."""
    budget = report["budget"]
    k = str(report["results"][0]["budget"]) if report["results"] else str(budget)
    return k, f"{k} = {budget:g} of the inputs" if isinstance(budget, float) else k


def score_table(report: dict[str, Any]) -> Fitted:
    """Per scheme, every score sorted by AUROC: AUROC, AUPR, TNR@95 and, with the standard
    protocol, precision / recall at the budget (with the paper protocol, the sample size)."""
    standard = report["protocol"] == "standard"
    split = report.get("split", "pool")
    k, budget = _budget_label(report) if standard else ("", "")
    title = f"How well each score finds the disagreements ({report['n']:,} {split} inputs"
    title += f", budget {budget})" if standard else ", paper protocol)"
    caption = "oracle knows the true disagreements (upper bound); random is the baseline"
    if standard:
        caption += (
            f"\nP@{k}: share of the {k} selected inputs that disagree; "
            f"R@{k}: share of the disagreements they catch"
        )
    result = bare_table(title, caption)
    result.add_column("scheme", style="bold", overflow="fold")
    result.add_column("score", overflow="fold")
    extra = [f"P@{k}", f"R@{k}"] if standard else ["n"]
    for header in ["AUROC", "AUPR", "TNR@95", *extra]:
        result.add_column(header, justify="right", overflow="fold")
    for scheme in report["schemes"]:
        rows = sorted((r for r in report["results"] if r["scheme"] == scheme), key=_auroc_key)
        if not rows:
            continue
        note = f"{rows[0]['positives']:,} disagree"
        for i, row in enumerate(rows):
            first = breakable(scheme) if i == 0 else note if i == 1 else ""
            cells = [_num(row["auroc"]), _num(row["aupr"]), _num(row["tnr_at_95tpr"])]
            if standard:
                cells += [_num(row["precision_at_budget"]), _num(row["recall_at_budget"])]
            else:
                cells.append(str(row["n"]))
            style = "dim" if row["score"] in ("oracle", "random") else None
            result.add_row(first, row["score"], *cells, style=style)
        result.add_section()
    return Fitted(result)


def winner_lines(report: dict[str, Any]) -> list[str]:
    """One sentence per scheme naming the score that finds its disagreements best."""
    lines = []
    for scheme in report["schemes"]:
        win = report["winner"].get(scheme)
        if win is None:
            lines.append(_no_winner(report, scheme))
            continue
        fp_only = win["best_fp_only"]
        notes = []
        if fp_only is not None and fp_only["score"] != win["score"]:
            notes.append(f"FP model alone: {fp_only['score']} {_num(fp_only['auroc'])}")
        if win["baseline_auroc"] is not None:
            notes.append(f"random {_num(win['baseline_auroc'])}")
        tail = f" ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"{win['score']} finds {scheme}'s disagreements best: "
            f"AUROC {_num(win['auroc'])}, AUPR {_num(win['aupr'])}{tail}"
        )
    return lines


def _no_winner(report: dict[str, Any], scheme: str) -> str:
    rows = [r for r in report["results"] if r["scheme"] == scheme]
    positives = rows[0]["positives"] if rows else 0
    if not positives:
        return f"{scheme}: no disagreements here, so no score can be ranked"
    if all(r["score"] in ("oracle", "random") for r in rows):
        return f"{scheme}: only oracle and random were scored; nothing to rank"
    return f"{scheme}: too few disagreements ({positives}) to rank the scores"


def score_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per scheme x score (scores sorted by AUROC within a scheme)."""
    standard = report["protocol"] == "standard"
    k = _budget_label(report)[0] if standard else ""
    extra = [f"P@{k}", f"R@{k}"] if standard else ["n"]
    header = ["scheme", "score", "disagree", "AUROC", "AUPR", "TNR@95", *extra]
    rows = []
    for scheme in report["schemes"]:
        for row in sorted((r for r in report["results"] if r["scheme"] == scheme), key=_auroc_key):
            cells = [_num(row["auroc"]), _num(row["aupr"]), _num(row["tnr_at_95tpr"])]
            if standard:
                cells += [_num(row["precision_at_budget"]), _num(row["recall_at_budget"])]
            else:
                cells.append(str(row["n"]))
            rows.append([scheme, row["score"], f"{row['positives']:,}", *cells])
    return header, rows


def score_markdown(report: dict[str, Any], plots: Sequence[Any] = ()) -> str:
    """``report.md`` of ``mitigate score``: the winners, the plots, the metrics table and the
    provenance."""
    from mitigate.reports.markdown import md_plots, md_table, provenance

    standard = report["protocol"] == "standard"
    split = report.get("split", "pool")
    protocol = f"budget {_budget_label(report)[1]}" if standard else "paper protocol"
    parts = [
        "# mitigate score",
        "",
        f"How well each score finds the inputs on which a quantized copy disagrees with the FP "
        f"model ({report['n']:,} {split} inputs, {protocol}). oracle knows the true "
        "disagreements (upper bound); random is the baseline.",
        "",
        *[f"- {line}" for line in winner_lines(report)],
        "",
    ]
    if plots:
        parts += ["## Plots", "", md_plots(plots), ""]
    parts += ["## Detector metrics", "", md_table(*score_rows(report)), ""]
    if standard:
        k = _budget_label(report)[0]
        parts += [
            f"P@{k}: share of the {k} selected inputs that disagree; R@{k}: share of the "
            "disagreements they catch; TNR@95: agreeing inputs left out when 95% of the "
            "disagreements are caught.",
            "",
        ]
    parts += [provenance(report), ""]
    return "\n".join(parts)


# ---- plots ------------------------------------------------------------------------------------


def roc_figure(predictions: Predictions, scores: Sequence[str], schemes: Sequence[str]) -> Figure:
    """ROC curve of every score, one panel per scheme, over every scanned input.

    ``predictions`` is a :class:`~mitigate.scanning.Predictions` that kept ``scores``; a
    positive is an input on which the scheme disagrees with the FP model. Legend entries
    carry each curve's AUROC; ``oracle`` and ``random`` are drawn dashed. A panel without
    both classes says so and draws no curve.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axes = panels(len(schemes))
    palette = dict(zip(scores, colors(len(scores)), strict=True))
    for ax, scheme in zip(axes, schemes, strict=True):
        truth = predictions.variants[scheme] != predictions.reference
        positives = int(truth.sum())
        ax.set_title(f"{scheme} ({positives:,} of {truth.size:,} disagree)", fontsize=9)
        ax.plot([0, 1], [0, 1], color="0.8", linewidth=0.8, label="_chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        if positives in (0, truth.size):
            ax.text(0.5, 0.5, "no disagreements to find", ha="center", va="center", fontsize=8)
            continue
        curves = []
        for score in scores:
            key = score_key(score, scheme)
            if key not in predictions.scores:
                continue
            values = np.nan_to_num(predictions.scores[key].astype(np.float64), nan=-np.inf)
            fpr, tpr, _ = roc_curve(truth, values)
            curves.append((roc_auc_score(truth, values), score, fpr, tpr))
        for auroc, score, fpr, tpr in sorted(curves, key=lambda c: -c[0]):
            dashed = score in ("oracle", "random")
            ax.plot(
                fpr,
                tpr,
                color="0.45" if dashed else palette[score],
                linestyle="--" if dashed else "-",
                linewidth=1.0 if dashed else 1.3,
                label=f"{score} {auroc:.2f}",
            )
        ax.legend(fontsize=6, frameon=False, loc="lower right", title="AUROC", title_fontsize=6)
    fig.suptitle("Which score finds the disagreements: ROC per scheme", fontsize=10)
    return fig


def margin_histogram(predictions: Predictions, schemes: Sequence[str], bins: int = 40) -> Figure:
    """The FP model's margin score (``1 - (p1 - p2)``, high = near a tie) of the inputs each
    scheme agrees on vs those it disagrees on, each normalized to its own total. Two filled
    histograms (patches) per scheme panel."""
    values = predictions.scores["margin"].astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = panels(len(schemes), size=(3.2, 2.6))
    for ax, scheme in zip(axes, schemes, strict=True):
        truth = predictions.variants[scheme] != predictions.reference
        for mask, name, color in (
            (~truth, "agree", "#4c78a8"),
            (truth, "disagree", WORST),
        ):
            n = int(mask.sum())
            weights = np.full(n, 1.0 / n) if n else None
            ax.hist(
                values[mask],
                bins=edges,
                weights=weights,
                histtype="stepfilled",
                alpha=0.45,
                color=color,
                edgecolor=color,
                label=f"{name} ({n:,})",
            )
        ax.set_title(scheme, fontsize=9)
        ax.set_xlabel("margin score 1 − (p1 − p2)", fontsize=8)
        ax.set_ylabel("share of inputs", fontsize=8)
        percent_axis(ax)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="upper center")
    fig.suptitle("Disagreements sit near ties: margin of agreeing vs disagreeing", fontsize=10)
    return fig


def score_plots(report: dict[str, Any], predictions: Predictions) -> list[Plot]:
    """The ``score`` plots: ROC curves, and the margin histogram when margin was scored."""
    schemes, scores = list(report["schemes"]), list(report["scores"])
    plots = [
        Plot(
            "roc.png",
            "ROC curve of every score per scheme (legend: AUROC)",
            roc_figure(predictions, scores, schemes),
        )
    ]
    if "margin" in predictions.scores:
        plots.append(
            Plot(
                "margin-histogram.png",
                "FP margin of the inputs each scheme agrees vs disagrees on",
                margin_histogram(predictions, schemes),
            )
        )
    return plots
