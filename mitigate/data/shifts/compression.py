"""Lossy-storage artefacts: pixelation and JPEG-like block quantization."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "jpeg", "pixelate"]

# Side of the coarse image as a fraction of the original: 8 px -> 7, 6, 5, 4, 3 px.
_PIXELATE = (0.875, 0.75, 0.625, 0.5, 0.375)
_JPEG_QUALITY = (30, 20, 15, 10, 7)  # MNIST-C's range (25-7), a notch milder at severity 1

# The example tables of the JPEG standard (ITU-T T.81, Annex K), row-major 8x8.
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip
_BLOCK = 8


def _area_matrix(fine: int, coarse: int) -> Tensor:
    # [coarse, fine]: row i averages the fine pixels under coarse cell i, weighted by overlap.
    ratio = fine / coarse
    rows = []
    for i in range(coarse):
        low, high = i * ratio, (i + 1) * ratio
        rows.append([max(0.0, min(high, j + 1) - max(low, j)) / ratio for j in range(fine)])
    return torch.tensor(rows, dtype=torch.float64)


def _pixelate_matrix(size: int, ratio: float, device: torch.device) -> Tensor:
    # [size, size]: average down to the coarse grid, then give each fine pixel the
    # overlap-weighted mean of the coarse cells under it. At whole-number block sizes this is
    # the usual blocky pixelation; at others it avoids the half-pixel jumps that enlarging by
    # nearest neighbour makes (which made 8 -> 7 -> 8 px look worse than 8 -> 4 -> 8 px).
    coarse = max(2, int(size * ratio + 0.5))
    down = _area_matrix(size, coarse)
    up = down.T * (size / coarse)  # row j: overlaps of fine pixel j, which sum to 1
    return (up @ down).to(device=device, dtype=torch.float32)


def pixelate(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Average down to 7/8 ... 3/8 of the side and back up, both ways by area overlap."""
    ratio = _PIXELATE[severity - 1]
    rows = _pixelate_matrix(x.shape[-2], ratio, x.device)
    cols = _pixelate_matrix(x.shape[-1], ratio, x.device)
    # matmul is fine here: no rounding follows that could magnify a last-bit difference.
    return torch.matmul(torch.matmul(rows, x), cols.T)


def _scaled_table(table: tuple[int, ...], quality: int) -> list[float]:
    # The IJG (libjpeg) quality scaling that PIL uses.
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return [float(min(255, max(1, (q * scale + 50) // 100))) for q in table]


def _dct_matrix(device: torch.device) -> Tensor:
    rows = []
    for u in range(_BLOCK):
        norm = math.sqrt((1 if u == 0 else 2) / _BLOCK)
        rows.append([norm * math.cos((2 * k + 1) * u * math.pi / (2 * _BLOCK)) for k in range(8)])
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _apply_both_sides(blocks: Tensor, matrix: Tensor) -> Tensor:
    # matrix @ blocks @ matrix.T over the last two dims, as plain multiply-adds in a fixed
    # order: a matmul may block its sums differently for different batch sizes, and the
    # rounding that follows would turn a last-bit difference into a whole quantization step.
    half = blocks[..., 0:1] * matrix[:, 0]
    for k in range(1, _BLOCK):
        half = half + blocks[..., k : k + 1] * matrix[:, k]
    out = matrix[:, 0:1] * half[..., 0:1, :]
    for k in range(1, _BLOCK):
        out = out + matrix[:, k : k + 1] * half[..., k : k + 1, :]
    return out


def _to_ycbcr(x: Tensor) -> Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
    return torch.cat((y, cb, cr), dim=1)


def _from_ycbcr(x: Tensor) -> Tensor:
    y, cb, cr = x[:, 0:1], x[:, 1:2] - 128.0, x[:, 2:3] - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return torch.cat((r, g, b), dim=1)


def jpeg(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """JPEG's lossy core: 8x8 block DCT, quantization with the standard tables, inverse DCT.

    RGB goes through YCbCr with the chrominance table on Cb and Cr (no chroma subsampling);
    edges are padded by replication to whole blocks and cropped back; no entropy coding,
    which is lossless anyway.
    """
    quality = _JPEG_QUALITY[severity - 1]
    batch, channels, height, width = x.shape
    levels = x * 255.0
    if channels == 3:
        levels = _to_ycbcr(levels)
    pad_h, pad_w = -height % _BLOCK, -width % _BLOCK
    levels = F.pad(levels, (0, pad_w, 0, pad_h), mode="replicate") - 128.0
    rows, cols = levels.shape[2] // _BLOCK, levels.shape[3] // _BLOCK
    blocks = levels.view(batch, channels, rows, _BLOCK, cols, _BLOCK).permute(0, 1, 2, 4, 3, 5)
    tables = [_scaled_table(_LUMA_TABLE, quality)]
    tables += [_scaled_table(_CHROMA_TABLE, quality)] * (channels - 1)
    step = torch.tensor(tables, dtype=x.dtype, device=x.device)
    step = step.view(1, channels, 1, 1, _BLOCK, _BLOCK)
    dct = _dct_matrix(x.device)
    coefficients = torch.round(_apply_both_sides(blocks, dct) / step) * step
    blocks = _apply_both_sides(coefficients, dct.T.contiguous())
    levels = blocks.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, rows * _BLOCK, -1) + 128.0
    levels = levels[:, :, :height, :width]
    if channels == 3:
        levels = _from_ycbcr(levels)
    return torch.round(levels.clamp(0.0, 255.0)) / 255.0


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily(
            "pixelate",
            "digital",
            "box-averaged to 7/8 down to 3/8 of the side, then enlarged",
            random=False,
        ),
        pixelate,
    ),
    (
        ShiftFamily(
            "jpeg",
            "digital",
            "JPEG-like 8x8 DCT quantization, quality 30 down to 7",
            random=False,
        ),
        jpeg,
    ),
)
