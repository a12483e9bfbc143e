"""Disagreement between a reference model and a quantized copy: the functional core.

A disagreement is an input on which the two models' top-1 labels differ; ground truth is not
involved. Functions take logits ``[N, C]``, probabilities ``[N, C]`` or labels ``[N]`` for
either model (anything with a class axis is reduced with ``argmax``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mitigate.errors import MitigateError

__all__ = [
    "FLIP_DIRECTIONS",
    "disagreement_count",
    "disagreement_rate",
    "flip_directions",
    "to_labels",
]

FLIP_DIRECTIONS = ("correct_to_wrong", "wrong_to_correct", "wrong_to_other_wrong")


def to_labels(outputs: Tensor) -> Tensor:
    """``[N]`` labels from logits/probabilities ``[N, C]`` or labels ``[N]``."""
    if outputs.ndim == 2:
        return outputs.argmax(dim=1)
    if outputs.ndim == 1:
        return outputs.long()
    raise MitigateError(f"expected labels [N] or scores [N, C], got shape {tuple(outputs.shape)}")


def _disagreement_update(reference: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
    ref, oth = to_labels(reference), to_labels(other)
    if ref.shape != oth.shape:
        raise MitigateError(
            "the two models' outputs cover different inputs: "
            f"{tuple(ref.shape)} vs {tuple(oth.shape)}"
        )
    return (ref != oth).sum(), torch.tensor(ref.numel())


def _disagreement_compute(disagreements: Tensor, total: Tensor) -> Tensor:
    # An empty batch has no disagreements: rate 0, not NaN, so sums over groups stay finite.
    return disagreements.float() / total.clamp_min(1).float()


def disagreement_count(reference: Tensor, other: Tensor) -> int:
    """How many inputs the two models label differently."""
    return int(_disagreement_update(reference, other)[0])


def disagreement_rate(reference: Tensor, other: Tensor) -> Tensor:
    """Share of inputs the two models label differently, a scalar tensor in ``[0, 1]``.

    Example:
        >>> disagreement_rate(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 0]))
        tensor(0.2500)
    """
    return _disagreement_compute(*_disagreement_update(reference, other))


def flip_directions(reference: Tensor, other: Tensor, target: Tensor) -> dict[str, int]:
    """Count the disagreements by what they do to correctness against the true ``target``.

    ``correct_to_wrong``: the reference was right, the copy is wrong; ``wrong_to_correct``: the
    reverse; ``wrong_to_other_wrong``: both wrong, with different labels.
    """
    ref, oth, tgt = to_labels(reference), to_labels(other), target.long()
    flipped = ref != oth
    return {
        "correct_to_wrong": int((flipped & (ref == tgt)).sum()),
        "wrong_to_correct": int((flipped & (oth == tgt)).sum()),
        "wrong_to_other_wrong": int((flipped & (ref != tgt) & (oth != tgt)).sum()),
    }
