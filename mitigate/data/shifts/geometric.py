"""Geometric warps: rotate, scale, shear, translate (MNIST-C) and elastic (CIFAR-10-C).

Each warp maps every output pixel to a source position about the image centre and reads it
with bilinear interpolation; what falls outside the image is black, as in MNIST-C.
"""

from __future__ import annotations

import math

from torch import Tensor

from mitigate.data.shifts import _ops
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "elastic", "rotate", "scale", "shear", "translate"]

_ROTATE_RADIANS = (0.2, 0.4, 0.6, 0.8, 1.0)  # MNIST-C: 11 to 57 degrees, random direction
_SHRINK = (0.9, 0.8, 0.7, 0.6, 0.5)  # MNIST-C: the digit shrinks to this fraction
_SHEAR_RADIANS = (0.2, 0.4, 0.6, 0.8, 1.0)  # MNIST-C, random direction
# Pixels in x and in y at 28x28, random signs: MNIST-C uses 1-5; capped at 4 so an 8x8 digit
# (2.1 px) is not pushed so far out that the distance to the original starts falling again.
_TRANSLATE_28 = (1.0, 1.75, 2.5, 3.25, 4.0)
_ELASTIC_AMPLITUDE_28 = (0.5, 0.8, 1.1, 1.5, 2.0)  # RMS displacement in pixels at 28x28
_ELASTIC_SMOOTHNESS_28 = 3.5  # sigma of the displacement field in pixels at 28x28


def _affine(
    x: Tensor,
    matrix: tuple[Tensor | float, Tensor | float, Tensor | float, Tensor | float],
    shift: tuple[Tensor | float, Tensor | float] = (0.0, 0.0),
) -> Tensor:
    # Source = matrix @ output + shift, in pixel coordinates about the centre. Entries are
    # floats or [B, 1, 1] tensors (one value per image).
    ys, xs = _ops.pixel_coords(x)
    a, b, c, d = matrix
    src_x = a * xs + b * ys + shift[0]
    src_y = c * xs + d * ys + shift[1]
    return _ops.sample(x, src_x, src_y, padding="zeros")


def _per_image(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1)


def rotate(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Rotate about the centre by 0.2-1.0 rad (11-57 degrees), direction random per image."""
    angle = _ROTATE_RADIANS[severity - 1]
    sign = _per_image(rnd.sign("direction"))
    cos, sin = math.cos(angle), math.sin(angle)
    return _affine(x, (cos, -sin * sign, sin * sign, cos))


def scale(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Shrink about the centre to 0.9-0.5 of the size."""
    inverse = 1.0 / _SHRINK[severity - 1]
    return _affine(x, (inverse, 0.0, 0.0, inverse))


def shear(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Horizontal shear by 0.2-1.0 rad (scikit-image's convention), direction random."""
    angle = _SHEAR_RADIANS[severity - 1] * _per_image(rnd.sign("direction"))
    return _affine(x, (1.0, -angle.sin(), 0.0, angle.cos()))


def translate(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Move by 1-4 px at 28x28 along x and along y, random signs per image."""
    step = _TRANSLATE_28[severity - 1] * _ops.size_scale(x)
    signs = rnd.sign("direction", (2,))
    return _affine(
        x, (1.0, 0.0, 0.0, 1.0), (step * _per_image(signs[:, 0]), step * _per_image(signs[:, 1]))
    )


def elastic(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Displace pixels along a smooth random field, RMS 0.5-2.0 px at 28x28."""
    height, width = x.shape[-2:]
    size = _ops.size_scale(x)
    amplitude = _ELASTIC_AMPLITUDE_28[severity - 1] * size
    smoothness = _ELASTIC_SMOOTHNESS_28 * size
    dx = _ops.smooth_noise(rnd, "dx", height, width, smoothness)[:, 0]
    dy = _ops.smooth_noise(rnd, "dy", height, width, smoothness)[:, 0]
    ys, xs = _ops.pixel_coords(x)
    return _ops.sample(x, xs + amplitude * dx, ys + amplitude * dy, padding="border")


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily("rotate", "geometric", "rotation by 11-57 degrees, random direction"),
        rotate,
    ),
    (
        ShiftFamily(
            "scale", "geometric", "shrunk about the centre to 90%-50% of the size", random=False
        ),
        scale,
    ),
    (
        ShiftFamily("shear", "geometric", "horizontal shear by 0.2-1.0 rad, random direction"),
        shear,
    ),
    (
        ShiftFamily("translate", "geometric", "moved 1-4 px at 28x28 in x and y, random signs"),
        translate,
    ),
    (
        ShiftFamily("elastic", "geometric", "smooth random warp, RMS 0.5-2.0 px at 28x28"),
        elastic,
    ),
)
