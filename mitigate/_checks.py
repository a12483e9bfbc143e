"""Shared checks for tensors handed to the public functions: what they are, in one line."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["describe", "is_integer_tensor"]


def is_integer_tensor(x: object, shape: Sequence[int] | None = None) -> bool:
    """Whether ``x`` is a tensor of integers (not float, complex or bool) of ``shape``."""
    return (
        isinstance(x, Tensor)
        and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
        and (shape is None or tuple(x.shape) == tuple(shape))
    )


def describe(x: object) -> str:
    """``"float32 of shape [3, 2]"`` for a tensor, the type's name for anything else.

    Example:
        >>> describe(torch.zeros(3, 2)), describe([1, 2])
        ('torch.float32 of shape [3, 2]', 'list')
    """
    if isinstance(x, Tensor):
        return f"{x.dtype} of shape {list(x.shape)}"
    return type(x).__name__
