"""Small image operations shared by the shift families, written with elementwise tensor ops.

Filters are sums of shifted copies rather than ``conv2d`` calls: every output pixel is then
computed by the same sequence of float operations whatever the batch size, which keeps a
shifted image independent of the batch it was shifted in. All functions take and return
``float32 [B, C, H, W]`` unless stated and trust their inputs (validation happens in
:func:`mitigate.data.shifts.apply_shift`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom

__all__ = [
    "filter2d",
    "fractal_field",
    "gaussian_blur",
    "gaussian_weights",
    "line_profile",
    "luminance",
    "motion_blur",
    "pixel_coords",
    "sample",
    "size_scale",
    "smooth_noise",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights JPEG and PIL use


def size_scale(x: Tensor) -> float:
    """Factor that turns a length in pixels at 28x28 (MNIST-C's size) into one at ``x``'s size.

    Lengths scale with the square root of the side, not linearly: an 8x8 scikit-learn digit is
    a 32x32 bitmap averaged down, so its strokes are about one pixel wide and a linearly scaled
    blur of a third of a pixel would leave it unchanged. 8 px -> 0.53, 28 px -> 1, 32 px -> 1.07.
    """
    return math.sqrt(min(x.shape[-2], x.shape[-1]) / 28.0)


def gaussian_weights(sigma: float) -> list[float]:
    """Normalized 1-D Gaussian taps ``[2r + 1]`` with ``r = ceil(3 sigma)``, at least 1."""
    radius = max(1, math.ceil(3.0 * sigma))
    raw = [math.exp(-(k * k) / (2.0 * sigma * sigma)) for k in range(-radius, radius + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def _filter_axis(x: Tensor, weights: list[float], dim: int) -> Tensor:
    radius = len(weights) // 2
    pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
    padded = F.pad(x, pad, mode="replicate")
    size = x.shape[dim]
    out = weights[0] * padded.narrow(dim, 0, size)
    for k in range(1, len(weights)):
        out = out + weights[k] * padded.narrow(dim, k, size)
    return out


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with ``sigma`` in pixels; edges replicated."""
    weights = gaussian_weights(sigma)
    return _filter_axis(_filter_axis(x, weights, 3), weights, 2)


def filter2d(x: Tensor, kernel: list[list[float]]) -> Tensor:
    """Correlate every channel with a square ``[k, k]`` kernel (``k`` odd); edges replicated."""
    radius = len(kernel) // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = torch.zeros_like(x)
    for i, row in enumerate(kernel):
        for j, weight in enumerate(row):
            if weight != 0.0:
                out = out + weight * padded[..., i : i + height, j : j + width]
    return out


def pixel_coords(x: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates relative to the image centre: ``ys [H, 1]``, ``xs [1, W]``."""
    height, width = x.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32, device=x.device) - (height - 1) / 2.0
    xs = torch.arange(width, dtype=torch.float32, device=x.device) - (width - 1) / 2.0
    return ys.unsqueeze(1), xs.unsqueeze(0)


def sample(x: Tensor, src_x: Tensor, src_y: Tensor, padding: str = "zeros") -> Tensor:
    """Bilinear resampling: output pixel ``(i, j)`` reads ``x`` at ``(src_y, src_x)[:, i, j]``.

    Args:
        x: ``[B, C, H, W]``.
        src_x, src_y: ``[B, H, W]`` (or broadcastable) source positions in centred pixel
            coordinates, as returned by :func:`pixel_coords`.
        padding: ``grid_sample`` padding mode for positions outside the image.
    """
    batch, _, height, width = x.shape
    gx = (src_x * (2.0 / width)).expand(batch, height, width)
    gy = (src_y * (2.0 / height)).expand(batch, height, width)
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def motion_blur(x: Tensor, angle: Tensor, sigma: float, padding: str = "border") -> Tensor:
    """One-sided motion blur: a half-Gaussian of ``sigma`` pixels along ``angle`` (radians).

    Like ImageMagick's ``-motion-blur`` that MNIST-C and CIFAR-10-C call: the image is smeared
    to one side, taps at 0, 1, ..., ceil(3 sigma) pixels along the direction.

    Args:
        x: ``[B, C, H, W]``.
        angle: ``[B]`` direction of the smear per image.
        sigma: spread in pixels.
    """
    taps = max(1, math.ceil(3.0 * sigma))
    raw = [math.exp(-(t * t) / (2.0 * sigma * sigma)) for t in range(taps + 1)]
    total = sum(raw)
    ys, xs = pixel_coords(x)
    dx = torch.cos(angle).view(-1, 1, 1)
    dy = torch.sin(angle).view(-1, 1, 1)
    out = (raw[0] / total) * x
    for t in range(1, taps + 1):
        out = out + (raw[t] / total) * sample(x, xs + t * dx, ys + t * dy, padding)
    return out


def luminance(x: Tensor) -> Tensor:
    """``[B, 1, H, W]`` grey level: the image itself for one channel, BT.601 luma for RGB."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def smooth_noise(rnd: ImageRandom, label: str, height: int, width: int, sigma: float) -> Tensor:
    """``[B, 1, H, W]`` Gaussian-blurred white noise, rescaled to mean 0 and std 1 per image."""
    noise = rnd.normal(label, (1, height, width))
    field = gaussian_blur(noise, sigma)
    field = field - field.mean(dim=(1, 2, 3), keepdim=True)
    std = field.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return field / std.clamp_min(1e-6)


def fractal_field(rnd: ImageRandom, label: str, height: int, width: int, decay: float) -> Tensor:
    """``[B, 1, H, W]`` fractal (plasma-like) noise, min-max scaled to ``[0, 1]`` per image.

    A sum of octaves of bilinearly upsampled random grids (3x3, 5x5, 9x9, ... up to the image
    size) whose amplitude falls by ``decay`` per octave, the role ``wibbledecay`` plays in
    the diamond-square plasma fractal of CIFAR-10-C: a smaller decay gives finer structure.
    """
    field = 2.0 * rnd.uniform(f"{label}/octave0", (1, 3, 3)) - 1.0
    field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)
    octave, grid = 1, 5
    while grid <= max(height, width) + 1:
        coarse = 2.0 * rnd.uniform(f"{label}/octave{octave}", (1, grid, grid)) - 1.0
        layer = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
        field = field + layer * decay ** (-octave)
        octave, grid = octave + 1, 2 * grid - 1
    low = field.amin(dim=(1, 2, 3), keepdim=True)
    high = field.amax(dim=(1, 2, 3), keepdim=True)
    return (field - low) / (high - low).clamp_min(1e-6)


def line_profile(distance: Tensor, width: float) -> Tensor:
    """MNIST-C's line brush: ``log(1 - d / width) + 1`` clipped to ``[0, 1]``.

    Intensity 1 on the line, 0 beyond ``0.63 * width`` pixels from it.
    """
    inside = torch.clamp(1.0 - distance / width, min=1e-6)
    return torch.clamp(torch.log(inside) + 1.0, 0.0, 1.0)
