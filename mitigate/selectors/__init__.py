"""Find the inputs most likely to disagree: scores, budgeted selection, detector metrics.

Example:
    >>> import torch
    >>> from mitigate.selectors import compute_score, select
    >>> fp_logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [2.0, 1.5]])
    >>> select(compute_score("margin", fp_logits), 2)
    tensor([1, 2])
"""

from mitigate._lazy import lazy_exports

_EXPORTS = {
    **{name: ".detection" for name in ("PROTOCOLS", "detection_metrics", "evaluate_scores")},
    "paper_protocol": ".detection",
    **{
        name: ".scores"
        for name in (
            "SCORES",
            "ScoreSpec",
            "compute_score",
            "compute_scores",
            "entropy_score",
            "gini_score",
            "kl_score",
            "least_confidence_score",
            "margin_score",
            "oracle_score",
            "random_score",
            "score_logits",
            "score_names",
            "top1_diff_score",
        )
    },
    "resolve_budget": ".selection",
    "select": ".selection",
    "StreamingTopK": ".streaming",
    "Selected": ".pool",
    "check_selector": ".pool",
    "pool_size": ".pool",
    "select_from_pool": ".pool",
    "top_of_pool": ".pool",
    "tops_of_pool": ".pool",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
