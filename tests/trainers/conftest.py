"""Small, fast pieces for trainer tests (fixtures, since conftest modules cannot be imported
under ``--import-mode=importlib``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class BnNet(nn.Module):
    """Conv-BN-ReLU, a residual conv and a linear head (as tests/conftest.py's TinyNet)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = y + F.relu(self.conv2(y))
        return self.fc(torch.flatten(F.max_pool2d(y, 2), 1))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy 2-core machine a second
    spinning thread slows every step many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bn_net() -> Callable[[int], BnNet]:
    """``bn_net(seed)`` -> a freshly initialised :class:`BnNet`."""

    def build(seed: int = 0) -> BnNet:
        torch.manual_seed(seed)
        return BnNet()

    return build


@pytest.fixture(scope="session")
def digits_small(digits_xy) -> tuple[torch.Tensor, torch.Tensor]:
    """256 digits ``[256, 1, 8, 8]`` in ``[0, 1]`` and their labels."""
    x, y = digits_xy
    return x[:256].clone(), y[:256].clone()


@pytest.fixture
def make_loader() -> Callable[..., DataLoader]:
    """``make_loader(*tensors, batch_size=64, seed=0, shuffle=True)`` -> a seeded DataLoader."""

    def build(
        *tensors: torch.Tensor, batch_size: int = 64, seed: int = 0, shuffle: bool = True
    ) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=generator
        )

    return build
