"""The model registry: names to builders, and the one validated entry point."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mitigate.errors import MitigateError, unknown_choice
from mitigate.models.base import ZooModel
from mitigate.models.lenet import LeNet1, LeNet5
from mitigate.models.mlp import MLP
from mitigate.models.nin import NIN
from mitigate.models.resnet import ResNet20

__all__ = ["MIN_IMAGE_SIZE", "build_model", "model_names"]

_REGISTRY: dict[str, type[ZooModel]] = {
    cls.arch: cls for cls in (MLP, LeNet1, LeNet5, NIN, ResNet20)
}

# LeNets need 4 pixels per axis to keep one after two conv+pool stages; the other models
# accept less, but nothing smaller than 8x8 digits is a sensible image.
MIN_IMAGE_SIZE = 4


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, in registry order.

    Example:
        >>> model_names()
        ['mlp', 'lenet1', 'lenet5', 'nin', 'resnet20']
    """
    return list(_REGISTRY)


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int | Sequence[int],
    num_classes: int,
) -> nn.Module:
    """Build a freshly initialised zoo model for images of the given shape.

    Initialisation draws from torch's global RNG: call ``torch.manual_seed`` first for
    repeatable weights.

    Args:
        name: one of :func:`model_names`.
        in_channels: image channels ``C`` (1 for grey, 3 for colour).
        image_size: ``H`` for square images, or ``(H, W)``; at least 4 per axis.
        num_classes: number of logits, at least 2.

    Returns:
        A float32 module mapping ``x: [N, C, H, W]`` with values in ``[0, 1]`` to
        ``logits: [N, num_classes]``; it remembers ``arch``, ``input_shape`` and
        ``num_classes`` for :func:`mitigate.models.save_checkpoint`.

    Raises:
        MitigateError: unknown name or a size out of range.

    Example:
        >>> import torch
        >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """
    if name not in _REGISTRY:
        raise unknown_choice("model", name, model_names())
    size = _image_size(image_size)
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("num_classes", num_classes, minimum=2)
    return _REGISTRY[name](in_channels, size, num_classes)


def _image_size(image_size: object) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size: tuple[object, ...] = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str):
        size = tuple(image_size)
    else:
        raise MitigateError(f"image_size must be an int or (height, width), got {image_size!r}")
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= MIN_IMAGE_SIZE for s in size
    ):
        raise MitigateError(
            f"image_size must be (height, width) with each at least {MIN_IMAGE_SIZE}, "
            f"got {image_size!r}"
        )
    return size  # type: ignore[return-value]


def _check_int(what: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise MitigateError(f"{what} must be an integer >= {minimum}, got {value!r}")
