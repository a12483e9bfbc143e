"""Top-k selection over a pool scored in batches, in memory O(k) rather than O(pool).

Example:
    >>> import torch
    >>> top = StreamingTopK(2)
    >>> top.update(torch.tensor([0.1, 0.7]), torch.tensor([0, 1]))
    >>> top.update(torch.tensor([0.7, 0.9]), torch.tensor([2, 3]))
    >>> top.result(), top.values
    (tensor([3, 1]), tensor([0.9000, 0.7000], dtype=torch.float64))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mitigate._checks import describe, is_integer_tensor
from mitigate.errors import MitigateError
from mitigate.selectors.selection import _check_scores

__all__ = ["StreamingTopK"]


class StreamingTopK:
    """Running top-``k`` of ``(score, index)`` pairs fed batch by batch.

    Keeps at most ``k`` pairs, sorted highest score first with ties to the lower index: the
    same order as :func:`~mitigate.selectors.select`, so after the whole pool has passed,
    ``result()`` equals ``select(all_scores, k)`` however the pool was batched or shuffled.
    Each update costs ``O((k + batch) log(k + batch))`` time and ``O(k + batch)`` memory.

    Indices must be unique across batches (the pool position of each input); duplicates are
    not detected, since that would need memory O(pool).

    Args:
        k: how many to keep, an int ``>= 0``.

    Example:
        >>> top = StreamingTopK(1)
        >>> top.update(torch.tensor([0.5, 0.5]), torch.tensor([9, 4]))
        >>> top.result()
        tensor([4])
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise MitigateError(f"k must be an int >= 0, got {k!r}")
        self.k = k
        self.n_seen = 0
        self._values = torch.empty(0, dtype=torch.float64)
        self._index = torch.empty(0, dtype=torch.int64)

    def update(self, scores: Tensor, index: Tensor) -> None:
        """Offer a batch.

        Args:
            scores: ``[B]`` scores, higher = more likely to disagree (NaN is refused).
            index: ``[B]`` integer pool positions of those inputs.
        """
        scores = _check_scores(scores)
        if not is_integer_tensor(index, scores.shape):
            raise MitigateError(
                f"index must be an integer tensor of shape {list(scores.shape)}, "
                f"got {describe(index)}"
            )
        if self.n_seen == 0:
            # The buffer lives where the first batch lives.
            self._values = self._values.to(scores.device)
            self._index = self._index.to(scores.device)
        self.n_seen += scores.shape[0]
        if self.k == 0 or scores.shape[0] == 0:
            return
        values = scores.to(device=self._values.device, dtype=torch.float64)
        index = index.to(device=self._index.device, dtype=torch.int64)
        if self._values.shape[0] == self.k:
            # Only scores >= the smallest kept one can enter (an equal one may win on index).
            enter = values >= self._values[-1]
            values, index = values[enter], index[enter]
            if values.shape[0] == 0:
                return
        values = torch.cat([self._values, values])
        index = torch.cat([self._index, index])
        # Sort by index, then stably by score: (score desc, index asc) order.
        by_index = torch.sort(index).indices
        values, index = values[by_index], index[by_index]
        order = torch.sort(values, descending=True, stable=True).indices[: self.k]
        self._values, self._index = values[order], index[order]

    def result(self) -> Tensor:
        """``[min(k, n_seen)]`` int64 indices kept so far, highest score first."""
        return self._index.clone()

    @property
    def values(self) -> Tensor:
        """``[min(k, n_seen)]`` float64 scores of :meth:`result`, in the same order."""
        return self._values.clone()

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to resume an interrupted scan."""
        return {
            "k": self.k,
            "n_seen": self.n_seen,
            "values": self._values.clone(),
            "index": self._index.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; its ``k`` must match."""
        if state.get("k") != self.k:
            raise MitigateError(
                f"state has k={state.get('k')!r} but this StreamingTopK has {self.k}"
            )
        self.n_seen = int(state["n_seen"])
        self._values = state["values"].to(torch.float64)
        self._index = state["index"].to(torch.int64)
