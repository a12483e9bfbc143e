"""What every report's tables share: percentages, and terminal tables that never cut.

A rich table squeezed below its natural width truncates cells that may not wrap (``1128 (1.…``)
— in a log or an 80-column terminal the numbers a user came for are lost. Every column here
may wrap: at its spaces first, and only when a single word is wider than the whole column,
folded onto the next line. Nothing is ever replaced by an ellipsis.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

__all__ = ["pct", "table"]


def pct(value: float | None, digits: int = 1, *, signed: bool = False) -> str:
    """A share as a percentage: ``pct(0.1234) == "12.3%"``; ``"-"`` for ``None``.

    Example:
        >>> pct(0.1234), pct(-0.5, 0, signed=True), pct(None)
        ('12.3%', '-50%', '-')
    """
    if value is None:
        return "-"
    return f"{100 * value:{'+' if signed else ''}.{digits}f}%"


def table(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str | None = None,
    left: Sequence[int] = (0,),
    bold_first: bool = False,
) -> Table:
    """A borderless rich table whose columns wrap (never truncate) when the terminal is narrow.

    Args:
        title: shown above, left-aligned.
        header: column names; a two-word name wraps onto two lines when space is short.
        rows: cells as text, one list per row.
        caption: shown below, left-aligned.
        left: indices of the left-aligned columns (the others align right: numbers).
        bold_first: the first column in bold (row labels).
    """
    result = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for i, name in enumerate(header):
        result.add_column(
            name,
            justify="left" if i in left else "right",
            style="bold" if bold_first and i == 0 else None,
            overflow="fold",
        )
    for row in rows:
        result.add_row(*row)
    return result
