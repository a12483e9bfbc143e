"""Weather-like overlays: fog, frost, snow and spatter, drawn procedurally in plain torch.

CIFAR-10-C's frost pastes crops of frost photographs and its snow and spatter go through
ImageMagick and OpenCV; here the same looks are built from fractal and smoothed noise, so no
image files or extra libraries are needed. Parameter tables follow CIFAR-10-C's shape.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import Tensor

from mitigate.data.shifts import _ops
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "fog", "frost", "snow", "spatter"]

# (fog strength, fractal decay): CIFAR-10-C's table with a stronger start
_FOG = ((0.3, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))
# (weight of the image, weight of the frost layer): between CIFAR-10-C's and MNIST-C's
_FROST = ((1.0, 0.35), (0.9, 0.45), (0.8, 0.55), (0.7, 0.62), (0.6, 0.7))
_FROST_SHARPNESS = 6.0
# (flake mean, flake threshold, streak sigma px at 28x28, weight of the unwhitened image)
_SNOW = (
    (0.1, 0.6, 1.5, 0.95),
    (0.15, 0.55, 2.0, 0.9),
    (0.2, 0.55, 2.5, 0.87),
    (0.25, 0.5, 3.0, 0.83),
    (0.3, 0.5, 4.0, 0.8),
)
_SNOW_SPREAD = 0.3
_SNOW_MAX_TILT = math.radians(45.0)
# fraction of the image the mud blobs touch
_SPATTER_COVER = (0.05, 0.08, 0.12, 0.16, 0.22)
_SPATTER_BLOB_SIGMA_28 = 1.5
_MUD_RGB = (63 / 255, 42 / 255, 20 / 255)  # CIFAR-10-C's mud brown; MNIST-C uses 63/255 grey


def fog(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Add a fractal haze and rescale so the brightest pixel keeps its value (CIFAR-10-C)."""
    strength, decay = _FOG[severity - 1]
    haze = _ops.fractal_field(rnd, "fog", x.shape[-2], x.shape[-1], decay)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * haze) * peak / (peak + strength)


def _ridges(rnd: ImageRandom, label: str, height: int, width: int) -> Tensor:
    # Thin bright veins where a fractal field crosses its middle value: ice-crystal edges.
    field = _ops.fractal_field(rnd, label, height, width, decay=1.6)
    return (1.0 - (2.0 * field - 1.0).abs()) ** _FROST_SHARPNESS


def frost(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Dim the image and overlay a network of bright ice veins."""
    keep, amount = _FROST[severity - 1]
    height, width = x.shape[-2:]
    ice = torch.maximum(
        _ridges(rnd, "veins0", height, width), _ridges(rnd, "veins1", height, width)
    )
    haze = _ops.fractal_field(rnd, "haze", height, width, decay=2.0)
    layer = torch.clamp(ice + 0.3 * haze, 0.0, 1.0)
    return keep * x + amount * layer


def snow(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Whiten the image and add falling flakes streaked by motion blur (CIFAR-10-C recipe)."""
    mean, threshold, sigma_28, keep = _SNOW[severity - 1]
    batch, _, height, width = x.shape
    scale = _ops.size_scale(x)
    # Flakes a little larger than a pixel on big images, one pixel on tiny ones.
    zoom = max(1.0, 1.5 * scale)
    coarse = (math.ceil(height / zoom), math.ceil(width / zoom))
    level = mean + _SNOW_SPREAD * rnd.normal("flakes", (1, *coarse))
    level = F.interpolate(level, size=(height, width), mode="bilinear", align_corners=False)
    # A steep ramp instead of a hard cut keeps the result continuous in its inputs.
    flakes = level.clamp(0.0, 1.0) * torch.clamp((level - threshold) / 0.05, 0.0, 1.0)
    angle = -0.5 * math.pi + (2.0 * rnd.uniform("angle") - 1.0) * _SNOW_MAX_TILT
    streaks = _ops.motion_blur(flakes, angle, sigma_28 * scale, padding="zeros")
    grey = _ops.luminance(x)
    whitened = keep * x + (1.0 - keep) * torch.maximum(x, 1.5 * grey + 0.5)
    return whitened + streaks + streaks.flip(-2, -1)


def spatter(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Cover random blobs with mud (grey for one channel, brown for RGB), as MNIST-C does."""
    cover = _SPATTER_COVER[severity - 1]
    height, width = x.shape[-2:]
    sigma = _SPATTER_BLOB_SIGMA_28 * _ops.size_scale(x)
    liquid = _ops.smooth_noise(rnd, "liquid", height, width, sigma)
    threshold = NormalDist().inv_cdf(1.0 - cover)
    mask = torch.clamp((liquid - threshold) / 0.25, 0.0, 1.0)
    if x.shape[1] == 3:
        mud = torch.tensor(_MUD_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    else:
        mud = torch.full((1, 1, 1, 1), _MUD_RGB[0], dtype=x.dtype, device=x.device)
    return x * (1.0 - mask) + mud * mask


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily("fog", "weather", "fractal haze of strength 0.3-1.5 (CIFAR-10-C fog)"),
        fog,
    ),
    (
        ShiftFamily(
            "frost", "weather", "dimmed image under a procedural ice-vein layer (weight 0.35-0.7)"
        ),
        frost,
    ),
    (
        ShiftFamily("snow", "weather", "whitened image with motion-streaked snowflakes"),
        snow,
    ),
    (
        ShiftFamily("spatter", "weather", "mud blobs covering 4%-20% of the image (MNIST-C)"),
        spatter,
    ),
)
