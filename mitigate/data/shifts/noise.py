"""Pixel noise: gaussian, shot, impulse and speckle (MNIST-C's parameter tables).

Noise is drawn independently per pixel and per channel, as in CIFAR-10-C. The same draws
are reused at every severity, so a stronger severity moves every pixel further the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn

__all__ = ["FAMILIES", "gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]

_GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_SIGMA = (0.15, 0.2, 0.35, 0.45, 0.6)


def gaussian_noise(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Add ``N(0, sigma^2)`` to every pixel."""
    return x + _GAUSSIAN_SIGMA[severity - 1] * rnd.normal("noise", x.shape[1:])


def shot_noise(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Photon noise ``Poisson(c x) / c``, drawn as its normal approximation ``x + sqrt(x/c) z``.

    The normal approximation keeps black pixels black (like Poisson) and needs one draw per
    pixel, where an exact Poisson sampler for ``c x`` up to 60 would need a loop.
    """
    photons = _SHOT_PHOTONS[severity - 1]
    return x + torch.sqrt(x / photons) * rnd.normal("noise", x.shape[1:])


def impulse_noise(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Salt and pepper: a fraction ``amount`` of pixels set to 0 or 1 (half each)."""
    hit = rnd.uniform("where", x.shape[1:]) < _IMPULSE_AMOUNT[severity - 1]
    salt = (rnd.uniform("salt", x.shape[1:]) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def speckle_noise(x: Tensor, severity: int, rnd: ImageRandom) -> Tensor:
    """Multiplicative noise ``x + x * N(0, sigma^2)``: bright pixels get noisier."""
    return x + x * (_SPECKLE_SIGMA[severity - 1] * rnd.normal("noise", x.shape[1:]))


FAMILIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    (
        ShiftFamily("gaussian-noise", "noise", "additive Gaussian noise, sigma 0.08-0.38"),
        gaussian_noise,
    ),
    (
        ShiftFamily("shot-noise", "noise", "photon (Poisson-like) noise, 60 down to 3 photons"),
        shot_noise,
    ),
    (
        ShiftFamily("impulse-noise", "noise", "salt-and-pepper noise on 3%-27% of the pixels"),
        impulse_noise,
    ),
    (
        ShiftFamily("speckle-noise", "noise", "multiplicative Gaussian noise, sigma 0.15-0.6"),
        speckle_noise,
    ),
)
