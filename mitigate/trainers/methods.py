"""Training methods: what one optimisation step minimises.

Each method is a small function ``(module, x, y) -> loss`` registered by name, so the
LightningModule stays one class and ``mitigate train --method`` takes its choices from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

__all__ = ["METHODS", "Method", "method_names"]


@dataclass(frozen=True)
class Method:
    name: str
    loss: Callable[..., Tensor]
    uses_labels: bool
    description: str


def _standard(module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(module(x), y)


METHODS: dict[str, Method] = {
    "standard": Method("standard", _standard, True, "cross-entropy on the true labels"),
}


def method_names() -> list[str]:
    return list(METHODS)
