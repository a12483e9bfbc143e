"""Colour and tone changes: brightness, contrast and (RGB only) saturation.

Brightness and saturation are changed in HSV space like MNIST-C and CIFAR-10-C, but in closed
form on RGB: with hue fixed, each channel is ``V * (1 - S * g(hue))``, so changing ``V`` or
``S`` is a per-pixel affine map and no HSV round trip is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "brightness", "contrast", "saturate"]

_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # MNIST-C: added to the HSV value
_CONTRAST = (0.6, 0.45, 0.3, 0.2, 0.1)  # between CIFAR-10-C (0.75-0.15) and MNIST-C (0.4-0.05)
# (factor, offset) on the HSV saturation; CIFAR-10-C's table, always increasing the saturation
_SATURATE = ((1.3, 0.0), (1.6, 0.0), (2.0, 0.03), (2.6, 0.06), (3.5, 0.1))


def brightness(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Add ``c`` to the HSV value; for one channel that is ``x + c``."""
    value = x.amax(dim=1, keepdim=True)
    brighter = torch.clamp(value + _BRIGHTNESS[severity - 1], 0.0, 1.0)
    # Hue and saturation stay, so every channel scales by new/old value; black becomes grey.
    return torch.where(value > 0, x * (brighter / value.clamp_min(1e-12)), brighter)


def contrast(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Pull every pixel towards its image's per-channel mean by the factor ``c``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * _CONTRAST[severity - 1] + mean


def saturate(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Raise the HSV saturation to ``S * a + b`` (RGB only)."""
    factor, offset = _SATURATE[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    low = x.amin(dim=1, keepdim=True)
    sat = (value - low) / value.clamp_min(1e-12)
    new_sat = torch.clamp(sat * factor + offset, 0.0, 1.0)
    coloured = value - (new_sat / sat.clamp_min(1e-12)) * (value - x)
    # Grey pixels have hue 0 (red) by convention, as in scikit-image's rgb2hsv.
    red_hue = torch.cat((value, value * (1.0 - new_sat), value * (1.0 - new_sat)), dim=1)
    return torch.where(sat > 0, coloured, red_hue)


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily("brightness", "digital", "HSV value raised by 0.1-0.5 (MNIST-C)", random=False),
        brightness,
    ),
    (
        ShiftFamily(
            "contrast",
            "digital",
            "contrast scaled to 0.6-0.1 around the image mean",
            random=False,
        ),
        contrast,
    ),
    (
        ShiftFamily(
            "saturate",
            "digital",
            "HSV saturation scaled by 1.3-3.5 (RGB only)",
            channels=(3,),
            random=False,
        ),
        saturate,
    ),
)
