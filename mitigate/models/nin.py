"""Network-in-Network (Lin et al. 2014), CIFAR layout, slimmed and with batch norm.

The paper's CIFAR-10 net has three "mlpconv" blocks (a spatial conv followed by two 1x1
convs), 3x3/2 max and average pooling with dropout between them, and global average pooling
over a last 1x1 conv that has one channel per class (no fully connected layer). This version
keeps that layout, uses a third of the paper's widths by default (192 -> 64) so it trains on
a CPU, and puts batch norm after each hidden conv (conv-bn-relu, which quantizers fold).
All convs and pools pad "same"-style, so any input size from 1x1 up works: 32 -> 16 -> 8,
28 -> 14 -> 7, 8 -> 4 -> 2.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mitigate.models.base import ZooModel

__all__ = ["NIN", "PAPER_WIDTHS", "SLIM_WIDTHS"]

# Per block: widths of the spatial conv (5x5, 5x5, 3x3) and its 1x1 convs. The last block's
# final 1x1 conv (one channel per class) is the model's head and is not listed.
PAPER_WIDTHS = ((192, 160, 96), (192, 192, 192), (192, 192))
SLIM_WIDTHS = ((64, 48, 32), (64, 64, 64), (64, 64))
_KERNELS = (5, 5, 3)


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(),
        )
    )


def _mlpconv(
    cin: int, widths: tuple[int, ...], kernel: int, pool: nn.Module | None, dropout: float
) -> nn.Sequential:
    """A spatial conv, then 1x1 convs ("cccp" in the paper's Caffe model), then pool+dropout."""
    layers: dict[str, nn.Module] = {"conv": _conv_bn_relu(cin, widths[0], kernel)}
    for i in range(1, len(widths)):
        layers[f"cccp{i}"] = _conv_bn_relu(widths[i - 1], widths[i], 1)
    if pool is not None:
        layers["pool"], layers["drop"] = pool, nn.Dropout(dropout)
    return nn.Sequential(OrderedDict(layers))


class NIN(ZooModel):
    """Three mlpconv blocks and global average pooling over per-class maps.

    Args:
        in_channels: image channels ``C``.
        image_size: ``(H, W)``.
        num_classes: number of logits.
        widths: per block, the widths of the spatial conv and the 1x1 convs; the last block
            names two widths, the head adds a 1x1 conv with ``num_classes`` channels.
            ``PAPER_WIDTHS`` gives the paper's widths, ``SLIM_WIDTHS`` (default) a third.
        dropout: dropout probability after the first two blocks (0.5 in the paper).

    Shapes:
        ``x: [N, C, H, W]`` in ``[0, 1]`` -> ``logits: [N, num_classes]``.

    Example:
        >>> model = NIN(3, (32, 32), 10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    arch = "nin"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        widths: tuple[tuple[int, ...], ...] = SLIM_WIDTHS,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes)
        k1, k2, k3 = _KERNELS
        self.block1 = _mlpconv(
            in_channels, widths[0], k1, nn.MaxPool2d(3, stride=2, padding=1), dropout
        )
        self.block2 = _mlpconv(
            widths[0][-1], widths[1], k2, nn.AvgPool2d(3, stride=2, padding=1), dropout
        )
        self.block3 = _mlpconv(widths[1][-1], widths[2], k3, None, dropout)
        # One map per class, averaged to a logit; no ReLU so logits can be negative.
        self.head = nn.Conv2d(widths[2][-1], num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return torch.flatten(self.pool(self.head(x)), 1)
