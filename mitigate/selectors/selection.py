"""Pick the inputs to label or retrain with: the top of a score, under a budget.

One order everywhere: highest score first, ties broken by the lower pool index, so the same
scores always give the same selection, and a smaller budget selects a prefix of a larger one.

Example:
    >>> import torch
    >>> scores = torch.tensor([0.2, 0.9, 0.5, 0.9])
    >>> select(scores, 3)
    tensor([1, 3, 2])
    >>> select(scores, 0.5, exclude=torch.tensor([1]))
    tensor([3, 2])
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from mitigate._checks import describe, is_integer_tensor
from mitigate.errors import MitigateError

__all__ = ["resolve_budget", "select"]


def resolve_budget(budget: int | float, n: int) -> int:
    """Turn a budget into a count of inputs, at most ``n``.

    Args:
        budget: an ``int >= 0`` (a count; larger than ``n`` means "all") or a ``float`` in
            ``(0, 1]`` (a fraction of ``n``, rounded to the nearest count, halves up).
        n: the pool size, ``>= 0``.

    Returns:
        The count, in ``[0, n]``.

    Raises:
        MitigateError: a negative count, a fraction outside ``(0, 1]``, or not a number.

    Example:
        >>> resolve_budget(100, 50), resolve_budget(0.25, 10), resolve_budget(1.0, 7)
        (50, 3, 7)
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise MitigateError(
            f"budget must be an int count or a float fraction in (0, 1], got {budget!r}"
        )
    if isinstance(budget, numbers.Integral):
        if budget < 0:
            raise MitigateError(f"budget count must be >= 0, got {budget}")
        return min(int(budget), n)
    fraction = float(budget)
    if not 0.0 < fraction <= 1.0:
        raise MitigateError(
            f"budget fraction must be in (0, 1], got {budget!r}; pass an int for a count"
        )
    # The small epsilon keeps 0.3 * 10 = 3.0000000000000004 and 0.15 * 10 = 1.4999999999999998
    # on the count a person would write down.
    return min(n, math.floor(fraction * n + 0.5 + 1e-9))


def _check_scores(scores: object, what: str = "scores") -> Tensor:
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        got = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise MitigateError(f"{what} must be a 1-D tensor of shape [N], got {got}")
    if scores.is_complex() or scores.dtype == torch.bool:
        raise MitigateError(f"{what} must be real numbers, got dtype {scores.dtype}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise MitigateError(f"{what} contain NaN; a NaN score has no place in the ranking")
    return scores


def _check_labels(labels: object, n: int, device: torch.device) -> Tensor:
    if not is_integer_tensor(labels, (n,)):
        raise MitigateError(
            f"labels must be an integer tensor of shape [{n}], got {describe(labels)}"
        )
    return labels.to(device)  # type: ignore[union-attr]


def _candidate_mask(exclude: object, n: int, device: torch.device) -> Tensor:
    keep = torch.ones(n, dtype=torch.bool, device=device)
    if exclude is None:
        return keep
    if not isinstance(exclude, Tensor) or exclude.ndim != 1:
        got = list(exclude.shape) if isinstance(exclude, Tensor) else type(exclude).__name__
        raise MitigateError(f"exclude must be a 1-D tensor of indices or a [N] mask, got {got}")
    if exclude.dtype == torch.bool:
        if exclude.shape[0] != n:
            raise MitigateError(f"exclude mask must have shape [{n}], got {list(exclude.shape)}")
        return ~exclude.to(device)
    if exclude.is_floating_point() or exclude.is_complex():
        raise MitigateError(f"exclude must hold integer indices, got dtype {exclude.dtype}")
    if exclude.numel() and (int(exclude.min()) < 0 or int(exclude.max()) >= n):
        raise MitigateError(
            f"exclude indices must be in [0, {n}), got {int(exclude.min())}..{int(exclude.max())}"
        )
    keep[exclude.to(device=device, dtype=torch.int64)] = False
    return keep


def _ranked(values: Tensor, positions: Tensor, k: int | None = None) -> Tensor:
    """``positions`` (ascending) ordered by value, highest first; the first ``k`` of them."""
    if k is not None and k < values.shape[0]:
        # Only values >= the k-th largest can be selected: sort just those.
        if k == 0:
            return positions[:0]
        kth = values.topk(k).values[-1]
        keep = values >= kth
        values, positions = values[keep], positions[keep]
    # A stable descending sort keeps ascending positions in order among ties.
    order = torch.sort(values, descending=True, stable=True).indices
    return positions[order][:k]


def _round_robin(values: Tensor, positions: Tensor, labels: Tensor, k: int) -> Tensor:
    """Round r takes the r-th best candidate of every class that still has one."""
    # Work on positions within the candidates, mapped back to pool indices at the end.
    by_score = _ranked(values, torch.arange(values.shape[0], device=values.device))
    labels = labels[by_score]
    # Group by class, keeping score order inside each class, to get each candidate's rank.
    by_class = torch.sort(labels, stable=True).indices
    _, counts = torch.unique_consecutive(labels[by_class], return_counts=True)
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    rank = torch.empty_like(by_class)
    rank[by_class] = torch.arange(by_class.shape[0], device=by_class.device) - starts
    # Stable sort by round keeps score order (then index order) inside a round.
    return positions[by_score[torch.sort(rank, stable=True).indices[:k]]]


def select(
    scores: Tensor,
    budget: int | float,
    *,
    labels: Tensor | None = None,
    class_balanced: bool = False,
    exclude: Tensor | None = None,
) -> Tensor:
    """Indices of the ``budget`` highest-scoring inputs, highest first, ties to the lower index.

    Args:
        scores: ``[N]`` scores, higher = more likely to disagree (NaN is refused).
        budget: a count, or a fraction of the whole pool ``N`` (see :func:`resolve_budget`).
            Capped by the candidates left after ``exclude``.
        labels: ``[N]`` integer class of each input (the FP model's argmax); needed by
            ``class_balanced``.
        class_balanced: take candidates round-robin over the classes: round ``r`` takes the
            ``r``-th best of every class that still has candidates, in score order inside the
            round. A class that runs out simply drops out of later rounds, so its unused share
            goes to the other classes and the selection always has
            ``min(budget, candidates)`` inputs. The result is in pick order (round by round), so
            any prefix is itself a balanced selection.
        exclude: already-labelled inputs never to select again: integer indices, or a ``[N]``
            boolean mask that is True where excluded.

    Returns:
        ``[k]`` int64 indices into ``scores``, on its device.

    Raises:
        MitigateError: bad shapes or dtypes, NaN scores, an invalid budget, out-of-range
            ``exclude`` indices, or ``class_balanced`` without ``labels``.

    Example:
        >>> scores = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2])
        >>> labels = torch.tensor([0, 0, 0, 1, 1])
        >>> select(scores, 4, labels=labels, class_balanced=True)
        tensor([0, 4, 1, 3])
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    device = scores.device
    k = resolve_budget(budget, n)
    keep = _candidate_mask(exclude, n, device)
    if class_balanced and labels is None:
        raise MitigateError("class_balanced=True needs labels (the FP model's predicted class)")
    if labels is not None:
        labels = _check_labels(labels, n, device)
    positions = torch.nonzero(keep).squeeze(1)
    values = scores[positions]
    k = min(k, positions.shape[0])
    if k == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if class_balanced:
        return _round_robin(values, positions, labels[positions], k)  # type: ignore[index]
    return _ranked(values, positions, k)
