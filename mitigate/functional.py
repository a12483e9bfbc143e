"""Functional disagreement measures, the stateless twins of :class:`mitigate.DisagreementRate`.

Like ``torchmetrics.functional``: one call on one batch of outputs, no state.

Example:
    >>> import torch
    >>> from mitigate import functional as MF
    >>> MF.disagreement_rate(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]))
    tensor(0.2500)
"""

from __future__ import annotations

from mitigate.disagreement import (
    FLIP_DIRECTIONS,
    disagreement_count,
    disagreement_rate,
    find_disagreements,
    flip_directions,
    to_labels,
)

__all__ = [
    "FLIP_DIRECTIONS",
    "disagreement_count",
    "disagreement_rate",
    "find_disagreements",
    "flip_directions",
    "to_labels",
]
