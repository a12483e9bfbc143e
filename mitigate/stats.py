"""Summary statistics over seeds, shared by the grids (``compare``, ``calibrate``).

Example:
    >>> s = mean_ci([1.0, 2.0, 3.0])
    >>> s["mean"], round(s["ci95"], 3), s["n"]
    (2.0, 2.484, 3)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_mean_ci", "mean_ci"]


def mean_ci(values: list[float | None]) -> dict[str, Any]:
    """Mean and a 95% t-interval half-width of ``values`` (``None`` entries skipped).

    Returns ``{"mean", "ci95", "n", "values"}``; ``ci95`` is ``None`` with fewer than two
    values and ``mean`` is ``None`` with none.
    """
    from scipy import stats

    clean = [v for v in values if v is not None]
    if not clean:
        return {"mean": None, "ci95": None, "n": 0, "values": values}
    mean = sum(clean) / len(clean)
    if len(clean) < 2:
        return {"mean": mean, "ci95": None, "n": 1, "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (len(clean) - 1))
    half = float(stats.t.ppf(0.975, len(clean) - 1)) * sd / math.sqrt(len(clean))
    return {"mean": mean, "ci95": half, "n": len(clean), "values": values}


def format_mean_ci(
    stats: dict[str, Any],
    *,
    scale: float = 100.0,
    digits: int = 1,
    ci_digits: int | None = None,
    signed: bool = False,
    unit: str = "",
    sep: str = " ",
) -> str:
    """A :func:`mean_ci` result as text: ``"-"`` without a mean, the mean alone without an
    interval, else mean and half-width (both times ``scale``).

    Example:
        >>> format_mean_ci({"mean": 0.123, "ci95": 0.01}, unit="%")
        '12.3% ±1.0'
        >>> format_mean_ci({"mean": 0.5, "ci95": None}, digits=0, signed=True, unit="%")
        '+50%'
    """
    if stats["mean"] is None:
        return "-"
    mean = f"{scale * stats['mean']:{'+' if signed else ''}.{digits}f}{unit}"
    if stats["ci95"] is None:
        return mean
    half = digits if ci_digits is None else ci_digits
    return f"{mean}{sep}±{scale * stats['ci95']:.{half}f}"
