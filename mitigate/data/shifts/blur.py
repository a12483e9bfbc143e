"""Blurs: gaussian, defocus, motion, glass and zoom.

Widths are given in pixels at 28x28 and scaled by :func:`~mitigate.data.shifts._ops.size_scale`
(a sigma of 1.5 px at 28x28 becomes 0.8 px on an 8x8 digit). The ranges sit between MNIST-C's
(strong, chosen for one severity each) and CIFAR-10-C's (mild, for 32x32 photographs).
"""

from __future__ import annotations

import math

from torch import Tensor

from mitigate.data.shifts import _ops
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]

_GAUSSIAN_SIGMA_28 = (0.8, 1.1, 1.5, 2.0, 2.8)
_DEFOCUS_RADIUS_28 = (1.2, 1.6, 2.0, 2.6, 3.2)
_MOTION_SIGMA_28 = (1.5, 2.2, 3.0, 4.0, 5.2)
_MOTION_MAX_ANGLE = math.radians(45.0)
# (blur sigma, largest pixel displacement, shuffle rounds), as in MNIST-C's glass_blur
_GLASS_28 = ((0.5, 0.7, 1), (0.6, 1.0, 1), (0.7, 1.3, 1), (0.8, 1.8, 2), (1.0, 2.5, 2))
_ZOOM_MAX = (1.1, 1.16, 1.22, 1.3, 1.4)
_ZOOM_STEPS = 8


def gaussian_blur(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Gaussian blur, sigma 0.8-2.8 px at 28x28."""
    return _ops.gaussian_blur(x, _GAUSSIAN_SIGMA_28[severity - 1] * _ops.size_scale(x))


def _disk(radius: float) -> list[list[float]]:
    # Anti-aliased disk: full weight inside, linear fall-off over the pixel on its rim.
    reach = math.ceil(radius + 0.5)
    rows = [
        [max(0.0, min(1.0, radius + 0.5 - math.hypot(i, j))) for j in range(-reach, reach + 1)]
        for i in range(-reach, reach + 1)
    ]
    total = sum(sum(row) for row in rows)
    return [[w / total for w in row] for row in rows]


def defocus_blur(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Out-of-focus blur: average over a disk of radius 1.2-3.2 px at 28x28."""
    return _ops.filter2d(x, _disk(_DEFOCUS_RADIUS_28[severity - 1] * _ops.size_scale(x)))


def motion_blur(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Smear to one side along a random direction within 45 degrees of horizontal."""
    angle = (2.0 * rnd.uniform("angle") - 1.0) * _MOTION_MAX_ANGLE
    return _ops.motion_blur(x, angle, _MOTION_SIGMA_28[severity - 1] * _ops.size_scale(x))


def glass_blur(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Blur, let every pixel read from a random nearby point, blur again (frosted glass).

    MNIST-C swaps random pixel pairs up to ``delta`` pixels apart in a sequential loop; reading
    every pixel from a random point at most ``delta`` away is the parallel version of the same
    look, and a fractional ``delta`` keeps it gentle on 8x8 images.
    """
    sigma_28, delta_28, rounds = _GLASS_28[severity - 1]
    scale = _ops.size_scale(x)
    delta = delta_28 * scale
    ys, xs = _ops.pixel_coords(x)
    out = _ops.gaussian_blur(x, sigma_28 * scale)
    for step in range(rounds):
        jitter = delta * (2.0 * rnd.uniform(f"shuffle{step}", (2, *x.shape[-2:])) - 1.0)
        out = _ops.sample(out, xs + jitter[:, 0], ys + jitter[:, 1], padding="border")
    return _ops.gaussian_blur(out, sigma_28 * scale)


def zoom_blur(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Average of the image zoomed into its centre by factors 1 up to 1.1-1.4."""
    top = _ZOOM_MAX[severity - 1]
    ys, xs = _ops.pixel_coords(x)
    ys, xs = ys.unsqueeze(0), xs.unsqueeze(0)
    out = x
    for step in range(1, _ZOOM_STEPS + 1):
        zoom = 1.0 + (top - 1.0) * step / _ZOOM_STEPS
        out = out + _ops.sample(x, xs / zoom, ys / zoom, padding="border")
    return out / (_ZOOM_STEPS + 1)


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily(
            "gaussian-blur", "blur", "Gaussian blur, sigma 0.8-2.8 px at 28x28", random=False
        ),
        gaussian_blur,
    ),
    (
        ShiftFamily(
            "defocus-blur",
            "blur",
            "disk (out-of-focus) blur, radius 1.2-3.2 px at 28x28",
            random=False,
        ),
        defocus_blur,
    ),
    (
        ShiftFamily(
            "motion-blur",
            "blur",
            "one-sided motion blur, sigma 1.5-5.2 px at 28x28, random angle within 45 degrees",
        ),
        motion_blur,
    ),
    (
        ShiftFamily(
            "glass-blur",
            "blur",
            "blur + local pixel shuffling (frosted glass), up to 1-4 px at 28x28",
        ),
        glass_blur,
    ),
    (
        ShiftFamily("zoom-blur", "blur", "average of centre zooms up to 1.1x-1.4x", random=False),
        zoom_blur,
    ),
)
