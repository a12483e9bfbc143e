"""The record that describes one shift family, and the signature of its implementation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom

__all__ = ["KINDS", "ShiftFamily", "ShiftFn"]

KINDS = ("noise", "blur", "weather", "digital", "geometric", "occlusion")

# (x [B, C, H, W] in [0, 1], severity 1..5, per-image randomness) -> unclipped [B, C, H, W]
ShiftFn = Callable[[Tensor, int, ImageRandom], Tensor]


@dataclass(frozen=True)
class ShiftFamily:
    """One synthetic corruption family.

    Attributes:
        name: kebab-case registry name, e.g. ``"gaussian-noise"``.
        kind: one of :data:`KINDS`.
        description: one line for CLI help, with the severity 1..5 parameter range.
        channels: channel counts the family makes sense for, ``(1, 3)`` or ``(3,)``.
        random: whether the output depends on ``seed`` and ``index`` (``False`` for
            deterministic families such as ``contrast`` or ``zoom-blur``).
    """

    name: str
    kind: str
    description: str
    channels: tuple[int, ...] = (1, 3)
    random: bool = True
