from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mitigate.stats import mean_ci


def test_mean_ci_matches_scipys_t_interval():
    values = [0.1, 0.4, 0.35, 0.2, 0.15]
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    s = mean_ci(values)
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["ci95"] == pytest.approx((high - low) / 2)
    assert s["n"] == 5


def test_mean_ci_skips_missing_values_and_needs_two_for_an_interval():
    assert mean_ci([None, 0.5])["mean"] == 0.5 and mean_ci([None, 0.5])["ci95"] is None
    assert mean_ci([None])["mean"] is None
    assert mean_ci([1.0, 1.0])["ci95"] == 0.0
