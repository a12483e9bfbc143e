"""ResNet-20 for small images (He et al. 2016, section 4.2, the CIFAR-10 network).

A 3x3 conv with 16 channels, three stages of three basic blocks with 16, 32 and 64
channels (the second and third stages halve the resolution), global average pooling and a
linear classifier: 6n+2 = 20 weighted layers for n = 3. Shortcuts that change shape use a
1x1 conv + batch norm projection (the paper's option B) rather than zero-padded identity
(option A): it adds ~2.6k parameters and keeps every op a standard quantizable module.
Residual sums are plain ``+`` followed by ``F.relu``, which FX quantization fuses into one
quantized add-relu.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mitigate.models.base import ZooModel

__all__ = ["BasicBlock", "ResNet20"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers with a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))``.

    Shapes:
        ``x: [N, cin, H, W]`` -> ``[N, cout, ceil(H / stride), ceil(W / stride)]``.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(ZooModel):
    """ResNet-20: 3 stages x 3 basic blocks, 16/32/64 channels, batch norm.

    Args:
        in_channels: image channels ``C``.
        image_size: ``(H, W)``; any size works (global average pooling at the end).
        num_classes: number of logits.
        blocks_per_stage: ``n`` in the paper's 6n+2 layers (3 gives ResNet-20).

    Shapes:
        ``x: [N, C, H, W]`` in ``[0, 1]`` -> ``logits: [N, num_classes]``.

    Example:
        >>> model = ResNet20(1, (8, 8), 10)
        >>> model(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    arch = "resnet20"

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_classes: int,
        blocks_per_stage: int = 3,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        stages: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init for convs, as in the paper; BN starts at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
