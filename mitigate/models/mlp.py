"""Multi-layer perceptron: the simplest baseline, flattens the image."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mitigate.models.base import ZooModel

__all__ = ["MLP"]


class MLP(ZooModel):
    """Flatten -> 256 -> ReLU -> 128 -> ReLU -> classes.

    Args:
        in_channels: image channels ``C``.
        image_size: ``(H, W)``.
        num_classes: number of logits.
        hidden: widths of the hidden layers.

    Shapes:
        ``x: [N, C, H, W]`` in ``[0, 1]`` -> ``logits: [N, num_classes]``.

    Example:
        >>> model = MLP(1, (8, 8), 10)
        >>> model(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    arch = "mlp"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        hidden: tuple[int, ...] = (256, 128),
    ) -> None:
        super().__init__(in_channels, image_size, num_classes)
        layers: dict[str, nn.Module] = {}
        width = in_channels * image_size[0] * image_size[1]
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"], layers[f"relu{i}"] = nn.Linear(width, h), nn.ReLU()
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.flatten(x, 1))
