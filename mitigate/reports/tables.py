"""What every report's tables share: percentages, and terminal tables that never cut.

A rich table squeezed below its natural width truncates cells that may not wrap (``1128 (1.…``)
or, left to itself, narrows the widest column first and breaks its words (``int8:engine=qnnpac``
/ ``k``) while other columns still had room to wrap. A :class:`Fitted` table picks its column
widths when it is rendered: every column at least as wide as its longest word, and the rest of
the line shared in proportion to how much wider each column would like to be. Words are never
broken unless one word is wider than the whole terminal allows, and nothing is ever replaced
by an ellipsis.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Column, Table

__all__ = ["Fitted", "bare_table", "breakable", "pct", "table"]


def pct(value: float | None, digits: int = 1, *, signed: bool = False) -> str:
    """A share as a percentage: ``pct(0.1234) == "12.3%"``; ``"-"`` for ``None``.

    Example:
        >>> pct(0.1234), pct(-0.5, 0, signed=True), pct(None)
        ('12.3%', '-50%', '-')
    """
    if value is None:
        return "-"
    return f"{100 * value:{'+' if signed else ''}.{digits}f}%"


def breakable(label: str, longest: int = 14, *, dashes: bool = False) -> str:
    """A long scheme or strategy label with line breaks where it may wrap: before each
    ``:option`` and after each ``+`` (with ``dashes``, after each ``-`` of a preset name), so
    ``int8:engine=qnnpack`` never folds mid-word.

    Example:
        >>> print(breakable("int8:engine=qnnpack:observer=minmax"))
        int8
        :engine=qnnpack
        :observer=minmax
        >>> breakable("int8")
        'int8'
    """
    words = label.split(" ")
    if all(len(word) <= longest for word in words):
        return label
    broken = [w.replace(":", "\n:").replace("+", "+\n") if len(w) > longest else w for w in words]
    if dashes:
        broken = [w.replace("-", "-\n") if len(w) > longest else w for w in broken]
    return " ".join(broken)


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
    result = bare_table(title, caption)
    for i, name in enumerate(header):
        result.add_column(
            name,
            justify="left" if i in left else "right",
            style="bold" if bold_first and i == 0 else None,
            overflow="fold",
        )
    for row in rows:
        result.add_row(*row)
    return Fitted(result)


def bare_table(title: str, caption: str | None = None) -> Table:
    """The borderless, left-titled rich table every report starts from (no columns yet); wrap
    it in :class:`Fitted` once filled."""
    return Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        show_edge=False,
        pad_edge=False,
    )


class Fitted:
    """A rich :class:`~rich.table.Table` that wraps at words to the width it is rendered at.

    Attributes:
        table: the table as built (column widths unset); ``title``, ``columns`` and
            ``caption`` read through to it.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    @property
    def title(self) -> object:
        return self.table.title

    @property
    def caption(self) -> object:
        return self.table.caption

    @property
    def columns(self) -> list[Column]:
        return self.table.columns

    @property
    def row_count(self) -> int:
        return self.table.row_count

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _fit(self.table, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table)


def _words(column: Column) -> Iterator[str]:
    yield from str(column.header).split()
    for cell in column.cells:
        yield from str(cell).split()


def _lines(column: Column) -> Iterator[str]:
    yield from str(column.header).splitlines()
    for cell in column.cells:
        yield from str(cell).splitlines()


def _fit(table: Table, width: int) -> Table:
    """A copy of ``table`` with every column's width set so it fits ``width`` without breaking
    a word; the table itself when it fits as it is, or when no word-keeping layout exists."""
    columns = table.columns
    n = len(columns)
    if n == 0:
        return table
    _, right, _, left = table.padding
    padding = (left + right) * n - (0 if table.pad_edge else left + right)
    rules = (n - 1 + (2 if table.show_edge else 0)) if table.box else 0
    available = width - padding - rules
    longest = [max((cell_len(w) for w in _words(c)), default=1) for c in columns]
    natural = [max((cell_len(line) for line in _lines(c)), default=1) for c in columns]
    natural = [max(a, b) for a, b in zip(natural, longest, strict=True)]
    if sum(natural) <= available or sum(longest) > available:
        return table
    spare = available - sum(longest)
    wants = [b - a for a, b in zip(longest, natural, strict=True)]
    total = sum(wants)
    share = [spare * w // total for w in wants]
    order = sorted(range(n), key=lambda i: -(spare * wants[i] % total))
    for i in order[: spare - sum(share)]:
        share[i] += 1
    fitted = copy.deepcopy(table)
    for column, low, extra in zip(fitted.columns, longest, share, strict=True):
        column.width = low + extra
    return fitted
