"""Mixup (Zhang et al., 2018): train on convex combinations of pairs of inputs and labels.

One ``lam ~ Beta(alpha, alpha)`` per batch and a random pairing ``perm`` of the batch with
itself; both come from torch's global generator, which :func:`mitigate.trainers.fitting.fit` seeds,
so a run is repeatable under its seed.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["mix_inputs", "mixup_cross_entropy", "sample_mixup"]


def sample_mixup(batch_size: int, alpha: float) -> tuple[float, Tensor]:
    """Draw the mixing weight and pairing for one batch.

    Args:
        batch_size: ``B``.
        alpha: the Beta distribution's two (equal) shape parameters, ``> 0``; small values
            (the study used 0.2) keep most mixtures close to one of the two inputs.

    Returns:
        ``(lam, perm)``: ``lam`` in ``[0, 1]`` and ``perm: [B]`` a permutation of ``0..B-1``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> lam, perm = sample_mixup(4, 0.2)
        >>> 0.0 <= lam <= 1.0, sorted(perm.tolist())
        (True, [0, 1, 2, 3])
    """
    concentration = torch.tensor(float(alpha))
    lam = float(torch.distributions.Beta(concentration, concentration).sample())
    return lam, torch.randperm(batch_size)


def mix_inputs(x: Tensor, lam: float, perm: Tensor) -> Tensor:
    """``lam * x + (1 - lam) * x[perm]`` for inputs ``x: [B, ...]``."""
    return lam * x + (1.0 - lam) * x[perm]


def mixup_cross_entropy(
    logits: Tensor, labels: Tensor, lam: float, perm: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Cross-entropy of the mixed inputs' ``logits: [B, C]`` against the mixed labels.

    Each mixed input is ``lam`` parts sample ``i`` and ``1 - lam`` parts sample ``perm[i]``;
    with per-sample ``weights: [B]`` each part is weighted by its own sample's weight, so the
    weights keep their meaning (the total weight of the batch is unchanged, ``sum(w)``)::

        sum_i [lam w_i CE(logits_i, y_i) + (1 - lam) w_perm(i) CE(logits_i, y_perm(i))] / sum(w)
    """
    own = F.cross_entropy(logits, labels, reduction="none")
    partner = F.cross_entropy(logits, labels[perm], reduction="none")
    if weights is None:
        return lam * own.mean() + (1.0 - lam) * partner.mean()
    weights = weights.to(logits.dtype)
    total = lam * weights * own + (1.0 - lam) * weights[perm] * partner
    return total.sum() / weights.sum()
