"""Summary statistics over seeds, shared by the grids (``compare``, ``calibrate``).

Example:
    >>> s = mean_ci([1.0, 2.0, 3.0])
    >>> s["mean"], round(s["ci95"], 3), s["n"]
    (2.0, 2.484, 3)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["mean_ci"]


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
