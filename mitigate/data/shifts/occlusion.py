"""Line-pattern occlusions from MNIST-C: inverted stripes, dotted lines and zigzags.

MNIST-C has one fixed strength for these (about severity 2-3 here); here a higher severity
draws more lines (the first ones of the same per-image sequence, so severities nest) with a
wider brush, and widens the stripes. Lines are
drawn with MNIST-C's brush (:func:`~mitigate.data.shifts._ops.line_profile`) and added to
the image; each runs across the image, left to right or top to bottom at random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mitigate.data.shifts import _ops
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "dotted_line", "stripe", "zigzag"]

# Width of the inverted band on each side, as a fraction of the width: 1/8 to 3/8.
# Severity 3 is MNIST-C's stripe (7 of 28 columns on each side).
_STRIPE = (0.125, 0.1875, 0.25, 0.3125, 0.375)
# (lines drawn, brush width in pixels at 28x28); MNIST-C draws one line with a 2.3 px brush
_LINES = ((1, 1.6), (1, 2.3), (2, 2.3), (2, 2.8), (3, 2.8))
_DASH_PERIOD_28 = 4.0  # MNIST-C: 2 px on, 2 px off
_ZIGZAG_STEP_28 = 2.0  # MNIST-C: zigzag amplitude and half-period
_ZIGZAG_DRIFT_28 = 5.0  # MNIST-C: the end is up to 5 px off the start across the line
_ZIGZAG_MARGIN = 2.0 / 27.0  # MNIST-C draws from column 2 to 25 of 0..27


def stripe(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Invert a band on the left and right edges (anti-aliased for fractional widths)."""
    width = x.shape[-1]
    band = _STRIPE[severity - 1] * width
    cols = torch.arange(width, dtype=x.dtype, device=x.device)
    cover = torch.clamp(band - cols, 0.0, 1.0) + torch.clamp(cols + 1.0 - (width - band), 0.0, 1.0)
    return x + cover * (1.0 - 2.0 * x)


def _grid(x: Tensor) -> tuple[Tensor, Tensor]:
    # Absolute pixel coordinates: rows [1, H, 1], cols [1, 1, W].
    height, width = x.shape[-2:]
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, height, 1)
    cols = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, width)
    return rows, cols


def _line_frame(
    x: Tensor, u: Tensor, start: float, end: float, drift: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Local coordinates of every pixel relative to one random line per image.

    Args:
        x: the images, for size and device.
        u: ``[B, 2]`` uniforms: orientation (horizontal if ``< 0.5``) and cross position.
        start, end: where the line starts and ends along its main axis, as fractions.
        drift: ``[B]`` offset in pixels of the end across the main axis.

    Returns:
        ``along [B, H, W]`` distance from the start along the line, ``across [B, H, W]``
        signed distance from the line, ``length [B, 1, 1]`` of the line, and ``axis
        [B, H, W]`` the pixel's coordinate on the main axis (for dashes).
    """
    height, width = x.shape[-2:]
    rows, cols = _grid(x)
    horizontal = (u[:, 0] < 0.5).view(-1, 1, 1)
    span = torch.where(horizontal, float(width - 1), float(height - 1))
    cross_span = torch.where(horizontal, float(height - 1), float(width - 1))
    cross0 = u[:, 1].view(-1, 1, 1) * cross_span
    main0, main1 = start * span, end * span
    cross1 = cross0 + drift.view(-1, 1, 1)
    # (main, cross) coordinates of every pixel in the line's own axes.
    main = torch.where(horizontal, cols, rows)
    cross = torch.where(horizontal, rows, cols)
    d_main, d_cross = main1 - main0, cross1 - cross0
    length = torch.sqrt(d_main * d_main + d_cross * d_cross)
    e_main, e_cross = d_main / length, d_cross / length
    rel_main, rel_cross = main - main0, cross - cross0
    along = rel_main * e_main + rel_cross * e_cross
    across = rel_cross * e_main - rel_main * e_cross
    return along, across, length, main.expand_as(along)


def dotted_line(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Add 1-3 dashed lines from edge to edge (MNIST-C draws one)."""
    count, brush_28 = _LINES[severity - 1]
    size = _ops.size_scale(x)
    half_period = 0.5 * _DASH_PERIOD_28 * size
    height, width = x.shape[-2:]
    out = x
    for line in range(count):
        u = rnd.uniform(f"line{line}", (4,))
        # Both ends at random positions on opposite edges.
        cross_span = torch.where(u[:, 0] < 0.5, float(height - 1), float(width - 1))
        drift = (u[:, 2] - u[:, 1]) * cross_span
        _, across, _, axis = _line_frame(x, u[:, :2], 0.0, 1.0, drift)
        dashes = torch.remainder(
            torch.floor(axis / half_period + 2.0 * u[:, 3].view(-1, 1, 1)), 2.0
        )
        ink = _ops.line_profile(across.abs(), brush_28 * size) * (dashes == 0).to(x.dtype)
        out = out + ink.unsqueeze(1)
    return out


def zigzag(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Add 1-3 zigzag lines (MNIST-C draws one): 45-degree teeth along a random line."""
    count, brush_28 = _LINES[severity - 1]
    size = _ops.size_scale(x)
    # Teeth scale with the side itself: at 8x8 a sqrt-scaled tooth would fill a 3 px band.
    step = _ZIGZAG_STEP_28 * size * size
    out = x
    for line in range(count):
        u = rnd.uniform(f"zigzag{line}", (3,))
        drift = (2.0 * u[:, 2] - 1.0) * _ZIGZAG_DRIFT_28 * size
        along, across, length, _ = _line_frame(
            x, u[:, :2], _ZIGZAG_MARGIN, 1.0 - _ZIGZAG_MARGIN, drift
        )
        # Triangle wave through (0, 0), (step, +step), (3 step, -step), ...: MNIST-C's corners.
        phase = torch.remainder(along / step - 1.0, 4.0)
        tooth = step * ((phase - 2.0).abs() - 1.0)
        # MNIST-C measures the offset across the main line, not the distance to the tooth.
        distance = (across - tooth).abs()
        inside = ((along >= 0) & (along <= length)).to(x.dtype)
        out = out + (_ops.line_profile(distance, brush_28 * size) * inside).unsqueeze(1)
    return out


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily(
            "dotted-line", "occlusion", "1-3 dashed lines drawn across the image (MNIST-C)"
        ),
        dotted_line,
    ),
    (
        ShiftFamily(
            "stripe",
            "occlusion",
            "left and right bands inverted, 1/8-3/8 of the width each (MNIST-C at severity 3)",
            random=False,
        ),
        stripe,
    ),
    (
        ShiftFamily("zigzag", "occlusion", "1-3 zigzag lines drawn across the image (MNIST-C)"),
        zigzag,
    ),
)
