"""MNIST-C's ``canny_edges``: the image replaced by (here: blended towards) its edge map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mitigate.data.shifts import _ops
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "canny_edges", "edge_map"]

_BLEND = (0.3, 0.45, 0.6, 0.8, 1.0)  # severity 5 is MNIST-C's pure edge map
_SIGMA_28 = 1.0  # scikit-image's default Canny smoothing
_LOW, _HIGH = 0.1, 0.2  # hysteresis thresholds, as fractions of the strongest gradient
_TAN_22_5 = 0.41421356


def _neighbours(padded: Tensor, di: int, dj: int, height: int, width: int) -> Tensor:
    return padded[..., 1 + di : 1 + di + height, 1 + dj : 1 + dj + width]


def edge_map(grey: Tensor, sigma: float) -> Tensor:
    """Canny-like binary edges of ``grey [B, 1, H, W]``: ``float32 [B, 1, H, W]`` of 0 and 1.

    Gaussian smoothing, Sobel gradients, non-maximum suppression across the edge, and
    hysteresis reduced to one step: a weak edge pixel survives when it touches a strong one.
    """
    height, width = grey.shape[-2:]
    smooth = F.pad(_ops.gaussian_blur(grey, sigma), (1, 1, 1, 1), mode="replicate")

    def at(di: int, dj: int) -> Tensor:
        return _neighbours(smooth, di, dj, height, width)

    gx = (at(-1, 1) + 2.0 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2.0 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2.0 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2.0 * at(-1, 0) + at(-1, 1))
    magnitude = torch.sqrt(gx * gx + gy * gy)
    padded = F.pad(magnitude, (1, 1, 1, 1))

    def mag(di: int, dj: int) -> Tensor:
        return _neighbours(padded, di, dj, height, width)

    ax, ay = gx.abs(), gy.abs()
    along_x = ay <= _TAN_22_5 * ax
    along_y = ax <= _TAN_22_5 * ay
    same_sign = gx * gy > 0
    # The two neighbours in the gradient direction (x is the column, y the row).
    first = torch.where(
        along_x,
        mag(0, -1),
        torch.where(along_y, mag(-1, 0), torch.where(same_sign, mag(-1, -1), mag(-1, 1))),
    )
    second = torch.where(
        along_x,
        mag(0, 1),
        torch.where(along_y, mag(1, 0), torch.where(same_sign, mag(1, 1), mag(1, -1))),
    )
    peak = magnitude.amax(dim=(1, 2, 3), keepdim=True)
    ridge = (magnitude >= first) & (magnitude >= second) & (magnitude > 0)
    strong = ridge & (magnitude > _HIGH * peak)
    weak = ridge & (magnitude > _LOW * peak)
    near_strong = F.max_pool2d(strong.to(grey.dtype), 3, stride=1, padding=1) > 0
    return (strong | (weak & near_strong)).to(grey.dtype)


def canny_edges(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Blend the image towards its white-on-black edge map (weight 0.3 up to 1)."""
    edges = edge_map(_ops.luminance(x), _SIGMA_28 * _ops.size_scale(x))
    weight = _BLEND[severity - 1]
    return (1.0 - weight) * x + weight * edges.expand_as(x)


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily(
            "canny-edges",
            "digital",
            "blended towards its Canny-like edge map, weight 0.3-1",
            random=False,
        ),
        canny_edges,
    ),
)
