"""The model registry: names to builders, and the one validated entry point."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mitigate.errors import MitigateError, unknown_choice
from mitigate.models.base import ZooModel
from mitigate.models.lenet import LeNet1, LeNet5
from mitigate.models.mlp import MLP
from mitigate.models.nin import NIN
from mitigate.models.recurrent import GRUClassifier, LSTMClassifier
from mitigate.models.resnet import ResNet20

__all__ = ["MIN_IMAGE_SIZE", "build_model", "model_modality", "model_names"]

_REGISTRY: dict[str, type[ZooModel]] = {
    cls.arch: cls for cls in (MLP, LeNet1, LeNet5, NIN, ResNet20, LSTMClassifier, GRUClassifier)
}

# LeNets need 4 pixels per axis to keep one after two conv+pool stages; the other models
# accept less, but nothing smaller than 8x8 digits is a sensible image.
MIN_IMAGE_SIZE = 4


def model_names(modality: str | None = None) -> list[str]:
    """Names accepted by :func:`build_model`, in registry order; only those taking
    ``modality`` (``"image"`` or ``"text"``) inputs when given.

    Example:
        >>> model_names()
        ['mlp', 'lenet1', 'lenet5', 'nin', 'resnet20', 'lstm', 'gru']
        >>> model_names("text")
        ['lstm', 'gru']
    """
    return [n for n, cls in _REGISTRY.items() if modality is None or cls.modality == modality]


def model_modality(name: str) -> str:
    """``"image"`` or ``"text"``: what the model ``name`` takes as input.

    Example:
        >>> model_modality("gru")
        'text'
    """
    if name not in _REGISTRY:
        raise unknown_choice("model", name, model_names())
    return _REGISTRY[name].modality


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int | None = None,
    image_size: int | Sequence[int] | None = None,
    vocab_size: int | None = None,
    seq_len: int | None = None,
) -> nn.Module:
    """Build a freshly initialised zoo model for inputs of the given shape.

    Image models take ``in_channels`` and ``image_size``; text models (``lstm``, ``gru``)
    take ``vocab_size`` and ``seq_len``. Initialisation draws from torch's global RNG: call
    ``torch.manual_seed`` first for repeatable weights.

    Args:
        name: one of :func:`model_names`.
        num_classes: number of logits, at least 2.
        in_channels: image channels ``C`` (1 for grey, 3 for colour).
        image_size: ``H`` for square images, or ``(H, W)``; at least 4 per axis.
        vocab_size: text models: number of token ids (at least 3: ``<pad>``, ``<unk>``, one
            word).
        seq_len: text models: tokens per input ``L``.

    Returns:
        A float32 module mapping ``x: [N, C, H, W]`` with values in ``[0, 1]`` (or token ids
        ``int64 [N, L]``) to ``logits: [N, num_classes]``; it remembers ``arch``,
        ``input_shape`` and ``num_classes`` (and ``vocab_size``) for
        :func:`mitigate.models.save_checkpoint`.

    Raises:
        MitigateError: unknown name, a size out of range, or the arguments of the other
            modality.

    Example:
        >>> import torch
        >>> model = build_model("lenet5", in_channels=1, image_size=8, num_classes=10)
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
        >>> lstm = build_model("lstm", vocab_size=50, seq_len=16, num_classes=2)
        >>> lstm(torch.randint(0, 50, (4, 16))).shape
        torch.Size([4, 2])
    """
    modality = model_modality(name)
    _check_int("num_classes", num_classes, minimum=2)
    if modality == "text":
        if vocab_size is None or seq_len is None or in_channels is not None:
            raise MitigateError(
                f"model {name!r} reads token ids: pass vocab_size and seq_len (not in_channels "
                "or image_size)"
            )
        _check_int("vocab_size", vocab_size, minimum=3)
        _check_int("seq_len", seq_len, minimum=1)
        return _REGISTRY[name](vocab_size, seq_len, num_classes)  # type: ignore[call-arg]
    if in_channels is None or image_size is None or vocab_size is not None:
        raise MitigateError(
            f"model {name!r} reads images: pass in_channels and image_size (not vocab_size "
            f"or seq_len); text models: {', '.join(model_names('text'))}"
        )
    size = _image_size(image_size)
    _check_int("in_channels", in_channels, minimum=1)
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
