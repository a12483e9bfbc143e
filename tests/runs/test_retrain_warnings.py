"""The lines a retrain user must not miss, from the accounting and the measured cost."""

from __future__ import annotations

import pytest

from mitigate.runs.retrain import warnings


def _cost(q1_vs_fp: float, q0_vs_fp: float, size: float = 0.4, noise: float = 0.05) -> dict:
    return {
        "latency_noise": noise,
        "models": {
            "q0": {"latency_vs_fp": q0_vs_fp, "size_vs_fp": 0.4},
            "q1": {"latency_vs_fp": q1_vs_fp, "size_vs_fp": size},
        },
    }


def _accounting(before: int, after: int) -> dict:
    return {"totals": {"all": {"before": before, "after": after}}}


@pytest.mark.parametrize(
    ("before", "after", "cost", "expected"),
    [
        (100, 40, _cost(0.9, 0.9), []),
        (100, 40, _cost(1.04, 0.9), []),  # within the noise
        (100, 140, _cost(0.9, 0.9), ["made things worse"]),
        (100, 40, _cost(1.5, 0.9), ["q1 is slower than the FP model (1.50x its latency; noise"]),
        (100, 40, _cost(1.5, 1.4), ["q0 itself is 1.40x: int8 does not speed this model up"]),
        (100, 40, _cost(0.9, 0.9, size=0.7), ["more than half the FP model's size (0.70x)"]),
    ],
)
def test_warnings_name_what_was_given_back(before, after, cost, expected):
    lines = warnings(_accounting(before, after), cost)
    assert len(lines) == len(expected)
    for line, words in zip(lines, expected, strict=True):
        assert words in line


def test_a_budget_larger_than_the_pool_is_said_not_clipped_silently():
    from mitigate.runs.retrain import _clipped

    assert _clipped(100, 40400) == [] and _clipped(0.5, 10) == []
    (line,) = _clipped(50000, 40400)
    assert line == "budget 50000 is larger than the pool (40400 inputs): all were selected"
