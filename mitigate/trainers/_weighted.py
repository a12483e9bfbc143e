"""Weighted means: a batch may carry per-sample weights ``w: [B]`` (e.g. to up-weight the
selected inputs); without them every loss is the plain mean."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["cross_entropy", "weighted_mean"]


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """``sum(w * v) / sum(w)`` over a batch, or ``v.mean()`` when ``weights`` is ``None``.

    Args:
        values: per-sample losses ``[B]``.
        weights: non-negative weights ``[B]`` with a positive sum, or ``None``.

    Example:
        >>> import torch
        >>> float(weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])))
        1.5
    """
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum()


def cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of ``logits: [B, C]`` against ``labels: [B]``, weighted by ``weights``."""
    if weights is None:
        return F.cross_entropy(logits, labels)  # one fused op; the same value as the mean
    return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), weights)
