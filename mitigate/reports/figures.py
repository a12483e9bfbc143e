"""What every report's figures share: a headless figure, colours, percent axes, PNG output.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``:
no global state, no GUI backend, so they render headless (Agg) from any thread. Every plot
function returns the figure unsaved, so a caller (or a test) can inspect its axes, lines and
patches before :func:`save_png` writes it. Each command's plots live in its reports module
(``mitigate/reports/<command>.py``) beside its tables.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "INTRODUCED",
    "REMOVED",
    "SURVIVED",
    "WORST",
    "colors",
    "figure",
    "panels",
    "percent_axis",
    "save_png",
    "series_lines",
]

REMOVED, INTRODUCED, SURVIVED = "#2a9d55", "#d1495b", "#b8b8b8"
WORST = "#d62728"


def figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_facecolor("white")
    return fig


def colors(n: int) -> list[Any]:
    """``n`` distinct colours, the same for the same position in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def percent_axis(ax: Axes, axis: str = "y", decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def series_lines(ax: Axes) -> list[Any]:
    """The data series drawn on ``ax``: lines with a legend label (reference lines such as a
    zero line or a diagonal are drawn with a label starting with ``_`` and are left out)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def save_png(fig: Figure, path: str | Path, *, dpi: int = 110) -> bytes:
    """Render ``fig`` with Agg and write it to ``path`` as PNG; return the PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mitigate.atomic import write_bytes

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" tag: the same figure gives the same bytes whatever the matplotlib version.
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    data = buffer.getvalue()
    write_bytes(path, data)
    return data


def panels(n: int, *, per_row: int = 3, size: tuple[float, float] = (3.2, 3.0)) -> tuple:
    columns = min(n, per_row)
    lines = math.ceil(n / columns)
    fig = figure(size[0] * columns, size[1] * lines + 0.4)
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]
