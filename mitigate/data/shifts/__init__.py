"""Synthetic distribution shifts: image corruptions in the spirit of MNIST-C and CIFAR-10-C.

Every family has severities 1..5 and is applied lazily to a batch with :func:`apply_shift`,
deterministically from ``(seed, name, severity, dataset index)``, so a shifted data set is
never materialized. Families, in this order (``shift_names()``):

- noise: gaussian-noise, shot-noise, impulse-noise, speckle-noise
- blur: gaussian-blur, defocus-blur, motion-blur, glass-blur, zoom-blur
- weather: fog, frost, snow, spatter
- digital: brightness, contrast, saturate (RGB only), pixelate, jpeg, canny-edges
- geometric: rotate, scale, shear, translate, elastic
- occlusion: dotted-line, stripe, zigzag

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 28, 28)
    >>> apply_shift(x, "rotate", 2, seed=0, index=torch.tensor([10, 11])).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

from mitigate.data.shifts.family import KINDS, ShiftFamily
from mitigate.data.shifts.registry import (
    SEVERITIES,
    SHIFTS,
    apply_shift,
    describe_shift,
    shift_names,
    shifts_for,
)

__all__ = [
    "KINDS",
    "SEVERITIES",
    "SHIFTS",
    "ShiftFamily",
    "apply_shift",
    "describe_shift",
    "shift_names",
    "shifts_for",
]
