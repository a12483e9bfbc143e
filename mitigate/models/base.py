"""What every zoo model shares: the build arguments it remembers, and size arithmetic.

A zoo model records its architecture name, input shape and class count so a checkpoint can
rebuild it without the caller repeating them.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

__all__ = ["ZooModel", "conv_out_size"]


class ZooModel(nn.Module):
    """Base class of the zoo models; holds the arguments :func:`build_model` was called with.

    Attributes:
        arch: registry name, e.g. ``"lenet5"`` (a class attribute of each subclass).
        modality: ``"image"`` (input ``[N, C, H, W]``) or ``"text"`` (token ids
            ``[N, L]``; see :class:`mitigate.models.recurrent.RecurrentClassifier`).
        input_shape: ``(C, H, W)`` of one input image (``(L,)`` for text models).
        num_classes: number of output logits.
    """

    arch: str = ""
    modality: ClassVar[str] = "image"

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        self.input_shape = (in_channels, image_size[0], image_size[1])
        self.num_classes = num_classes

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, num_classes={self.num_classes}"


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one spatial axis.

    Example:
        >>> conv_out_size(28, kernel=5)
        24
        >>> conv_out_size(8, kernel=5, padding=2)
        8
    """
    return (size + 2 * padding - kernel) // stride + 1
