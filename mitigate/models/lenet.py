"""LeNet-1 and LeNet-5 (LeCun et al. 1998), adapted to any input size.

Deviations from the paper, all common in modern re-implementations and kinder to
quantization: ReLU instead of scaled tanh, 2x2 max pooling instead of trainable average
subsampling, full connectivity between the conv layers (no C3 connection table) and a plain
linear output instead of RBF units.

Padding rule (per spatial axis), so small inputs never collapse:
- LeNet-5 pads its first conv by 2 when the axis is shorter than 32, as the paper padded
  28x28 MNIST to 32x32; LeNet-1 reads 28x28 unpadded, as in the paper.
- Any conv whose input axis is shorter than 12 pads by 2 ("same"), so 8x8 digits go
  8 -> 4 -> 2 through the two conv+pool stages instead of shrinking below zero.
The flatten size is computed from these numbers, so the classic layouts come out exactly:
LeNet-1 on 28x28 flattens 12x4x4, LeNet-5 on 28x28 or 32x32 flattens 16x5x5.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mitigate.models.base import ZooModel, conv_out_size

__all__ = ["LeNet1", "LeNet5"]

_KERNEL = 5
_SAME_PAD = _KERNEL // 2
_PAD_BELOW = 12  # a conv input axis shorter than this is padded "same"


def _plan_axis(size: int, first_pad_below: int) -> tuple[int, int, int]:
    """Padding of both convs and the final length along one axis.

    Example:
        >>> _plan_axis(8, _PAD_BELOW)  # 8 -> 8 -> 4 -> 4 -> 2
        (2, 2, 2)
        >>> _plan_axis(28, _PAD_BELOW)  # 28 -> 24 -> 12 -> 8 -> 4
        (0, 0, 4)
    """
    pad1 = _SAME_PAD if size < first_pad_below else 0
    mid = _stage_out(size, pad1)
    pad2 = _SAME_PAD if mid < _PAD_BELOW else 0
    return pad1, pad2, _stage_out(mid, pad2)


def _stage_out(size: int, padding: int) -> int:
    """Axis length after a 5x5 conv with ``padding`` and a 2x2 max pool."""
    return conv_out_size(conv_out_size(size, _KERNEL, padding=padding), 2, stride=2)


class _LeNet(ZooModel):
    """Two conv(5x5)+ReLU+maxpool(2x2) stages, then fully connected layers.

    Shapes:
        ``x: [N, C, H, W]`` in ``[0, 1]`` -> ``logits: [N, num_classes]``.
    """

    _channels: tuple[int, int] = (0, 0)
    _hidden: tuple[int, ...] = ()
    _first_pad_below: int = _PAD_BELOW

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int) -> None:
        super().__init__(in_channels, image_size, num_classes)
        c1, c2 = self._channels
        (h1, h2, h_out), (w1, w2, w_out) = (
            _plan_axis(s, self._first_pad_below) for s in image_size
        )
        pad1, pad2 = (h1, w1), (h2, w2)

        self.conv1 = nn.Conv2d(in_channels, c1, _KERNEL, padding=pad1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, _KERNEL, padding=pad2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)

        layers: dict[str, nn.Module] = {}
        width = c2 * h_out * w_out
        for i, h in enumerate(self._hidden, start=1):
            layers[f"fc{i}"], layers[f"relu{i}"] = nn.Linear(width, h), nn.ReLU()
            width = h
        layers[f"fc{len(self._hidden) + 1}"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.classifier(torch.flatten(x, 1))


class LeNet1(_LeNet):
    """LeNet-1: conv 4@5x5 -> pool -> conv 12@5x5 -> pool -> linear.

    Example:
        >>> model = LeNet1(1, (28, 28), 10)
        >>> model.classifier.fc1.in_features  # 12 x 4 x 4, as in the paper
        192
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    arch = "lenet1"
    _channels = (4, 12)
    _hidden = ()


class LeNet5(_LeNet):
    """LeNet-5: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> classes.

    Example:
        >>> model = LeNet5(1, (28, 28), 10)
        >>> model.classifier.fc1.in_features  # 16 x 5 x 5, as in the paper
        400
        >>> LeNet5(1, (8, 8), 10)(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    arch = "lenet5"
    _channels = (6, 16)
    _hidden = (120, 84)
    _first_pad_below = 32
