"""The registry of shift families and the one validated entry point, :func:`apply_shift`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor

from mitigate.data.shifts import (
    blur,
    compression,
    edges,
    geometric,
    noise,
    occlusion,
    photometric,
    weather,
)
from mitigate.data.shifts._rng import ImageRandom
from mitigate.data.shifts.family import ShiftFamily, ShiftFn
from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "CHANNELS",
    "MIN_SIZE",
    "SEVERITIES",
    "SHIFTS",
    "apply_shift",
    "describe_shift",
    "shift_names",
    "shifts_for",
]

SEVERITIES = (1, 2, 3, 4, 5)
CHANNELS = (1, 3)
MIN_SIZE = 8
# The documented order: by kind (noise, blur, weather, digital, geometric, occlusion), and
# within a kind roughly as CIFAR-10-C and MNIST-C list them.
_ENTRIES: tuple[tuple[ShiftFamily, ShiftFn], ...] = (
    *noise.FAMILIES,
    *blur.FAMILIES,
    *weather.FAMILIES,
    *photometric.FAMILIES,
    *compression.FAMILIES,
    *edges.FAMILIES,
    *geometric.FAMILIES,
    *occlusion.FAMILIES,
)
SHIFTS: Mapping[str, ShiftFamily] = MappingProxyType({f.name: f for f, _ in _ENTRIES})
_APPLY: Mapping[str, ShiftFn] = MappingProxyType({f.name: fn for f, fn in _ENTRIES})


def _check_channels(channels: object) -> None:
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise unknown_choice("channel count", channels, CHANNELS)


def shift_names(channels: int | None = None) -> list[str]:
    """Names of the registered shift families, in the documented order.

    Args:
        channels: if given (1 or 3), only the families that make sense for that many
            channels (``"saturate"`` needs colour).

    Example:
        >>> shift_names()[:3]
        ['gaussian-noise', 'shot-noise', 'impulse-noise']
        >>> "saturate" in shift_names(1), "saturate" in shift_names(3)
        (False, True)
    """
    if channels is None:
        return list(SHIFTS)
    _check_channels(channels)
    return [name for name, family in SHIFTS.items() if channels in family.channels]


def shifts_for(shape: tuple[int, ...]) -> tuple[list[str], dict[str, str]]:
    """The families that apply to images of ``shape`` ``(C, H, W)``, and for every other
    family the reason it does not (its channel counts, or the smallest size).

    Example:
        >>> names, skipped = shifts_for((1, 28, 28))
        >>> "saturate" in names, skipped["saturate"]
        (False, 'needs 3 channels')
        >>> len(shifts_for((3, 4, 4))[0])
        0
    """
    channels, height, width = shape
    names, skipped = [], {}
    for name, family in SHIFTS.items():
        if channels not in family.channels:
            skipped[name] = f"needs {' or '.join(map(str, family.channels))} channels"
        elif height < MIN_SIZE or width < MIN_SIZE:
            skipped[name] = f"needs images of at least {MIN_SIZE}x{MIN_SIZE}"
        else:
            names.append(name)
    return names, skipped


def _family(name: object) -> ShiftFamily:
    if not isinstance(name, str) or name not in SHIFTS:
        raise unknown_choice("shift", name, SHIFTS)
    return SHIFTS[name]


def describe_shift(name: str) -> str:
    """One line for CLI help: ``"name (kind): description"``.

    Example:
        >>> describe_shift("stripe").startswith("stripe (occlusion): ")
        True
    """
    family = _family(name)
    return f"{family.name} ({family.kind}): {family.description}"


def _what(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_images(x: object, family: ShiftFamily) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise MitigateError(f"images must be a float tensor [B, C, H, W], got {_what(x)}")
    _, channels, height, width = x.shape
    if channels not in CHANNELS:
        raise MitigateError(f"images must have 1 or 3 channels, got {channels}: {_what(x)}")
    if channels not in family.channels:
        allowed = " or ".join(str(c) for c in family.channels)
        raise MitigateError(f"shift {family.name!r} needs {allowed} channels, got {channels}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise MitigateError(f"images must be at least {MIN_SIZE}x{MIN_SIZE}, got {height}x{width}")
    if x.numel() and (x.amin() < 0.0 or x.amax() > 1.0):
        low, high = float(x.amin()), float(x.amax())
        raise MitigateError(f"images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")


def _check_index(index: object, batch: int) -> None:
    integer = (
        isinstance(index, Tensor)
        and index.dtype != torch.bool
        and not index.is_floating_point()
        and not index.is_complex()
    )
    if not integer or tuple(index.shape) != (batch,):  # type: ignore[union-attr]
        raise MitigateError(
            f"index must be an integer tensor of shape [{batch}] (the dataset index of each "
            f"image), got {_what(index)}"
        )


def _check_scalars(severity: object, seed: object) -> None:
    if not isinstance(severity, int) or isinstance(severity, bool) or severity not in SEVERITIES:
        raise unknown_choice("severity", severity, SEVERITIES)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise MitigateError(f"seed must be an int, got {type(seed).__name__}")


def apply_shift(x: Tensor, name: str, severity: int, *, seed: int, index: Tensor) -> Tensor:
    """Corrupt a batch of images with one shift family at one severity.

    Output row ``i`` depends only on ``(x[i], seed, name, severity, index[i])``: not on the
    batch it is in nor on its position there (up to float rounding of a few 1e-7 in the
    resampling families). The random draws do not depend on ``severity``, so a higher severity
    is a stronger version of the same corruption of the same image.

    Args:
        x: ``float [B, C, H, W]`` in ``[0, 1]``, ``C`` in ``{1, 3}``, ``H, W >= 8``.
        name: a family from :func:`shift_names`.
        severity: 1 (mild) to 5 (strong).
        seed: the experiment seed.
        index: ``int [B]``, the dataset index of each image.

    Returns:
        A new tensor, same shape and dtype as ``x``, clipped to ``[0, 1]``.

    Raises:
        MitigateError: unknown name, severity outside 1..5, a shift that does not fit the
            channel count, or a badly shaped ``x`` or ``index``.

    Example:
        >>> x = torch.rand(4, 1, 8, 8)
        >>> y = apply_shift(x, "gaussian-noise", 3, seed=0, index=torch.arange(4))
        >>> y.shape, bool(((y >= 0) & (y <= 1)).all())
        (torch.Size([4, 1, 8, 8]), True)
        >>> alone = apply_shift(x[1:2], "gaussian-noise", 3, seed=0, index=torch.tensor([1]))
        >>> torch.equal(y[1:2], alone)
        True
    """
    family = _family(name)
    _check_scalars(severity, seed)
    _check_images(x, family)
    _check_index(index, x.shape[0])
    if x.shape[0] == 0:
        return x.clone()
    images = x.to(torch.float32)
    rnd = ImageRandom(seed, family.name, index.to(device=x.device, dtype=torch.int64))
    out = _APPLY[family.name](images, severity, rnd)
    return out.clamp(0.0, 1.0).to(x.dtype)
