"""Find the inputs most likely to disagree: scores, budgeted selection, detector metrics.

Example:
    >>> import torch
    >>> from mitigate.selectors import compute_score, select
    >>> fp_logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [2.0, 1.5]])
    >>> select(compute_score("margin", fp_logits), 2)
    tensor([1, 2])
"""

from __future__ import annotations

from mitigate.selectors.detection import (
    PROTOCOLS,
    detection_metrics,
    evaluate_scores,
    paper_protocol,
)
from mitigate.selectors.scores import (
    SCORES,
    ScoreSpec,
    compute_score,
    compute_scores,
    entropy_score,
    gini_score,
    kl_score,
    least_confidence_score,
    margin_score,
    oracle_score,
    random_score,
    score_names,
    top1_diff_score,
)
from mitigate.selectors.selection import resolve_budget, select
from mitigate.selectors.streaming import StreamingTopK

__all__ = [
    "PROTOCOLS",
    "SCORES",
    "ScoreSpec",
    "StreamingTopK",
    "compute_score",
    "compute_scores",
    "detection_metrics",
    "entropy_score",
    "evaluate_scores",
    "gini_score",
    "kl_score",
    "least_confidence_score",
    "margin_score",
    "oracle_score",
    "paper_protocol",
    "random_score",
    "resolve_budget",
    "score_names",
    "select",
    "top1_diff_score",
]
