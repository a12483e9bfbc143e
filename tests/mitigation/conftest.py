"""A small MLP on digits, and a copy with one pathological weight that ruins per-tensor int8
in exactly one layer while leaving the float model's outputs bit-for-bit unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

DEAD_UNIT = 0  # fc1 unit that never fires, so a weight reading it never changes fc2's output
HUGE = 1000.0


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@pytest.fixture(scope="session")
def healthy_mlp(digits_xy) -> nn.Module:
    """Trained on digits, with fc1's unit 0 dead (zero weights, negative bias)."""
    x, y = digits_xy
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: a second thread only adds waiting on a busy machine
    try:
        for _ in range(200):
            idx = torch.randint(0, 1200, (64,))
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        model.fc1.weight[DEAD_UNIT] = 0.0
        model.fc1.bias[DEAD_UNIT] = -1.0
    return model.eval()


@pytest.fixture(scope="session")
def broken_mlp(healthy_mlp) -> nn.Module:
    """``healthy_mlp`` plus one weight of 1000 in fc2 that reads the dead unit: the same float
    function, but a per-tensor int8 scale of about 8 that rounds every other fc2 weight to 0."""
    model = copy.deepcopy(healthy_mlp)
    with torch.no_grad():
        model.fc2.weight[5, DEAD_UNIT] = HUGE
    return model.eval()


@pytest.fixture(scope="session")
def calibration(digits_xy) -> torch.Tensor:
    return digits_xy[0][:200]


@pytest.fixture(scope="session")
def probe(digits_xy) -> torch.Tensor:
    """400 held-out digits with Gaussian noise, where int8 and FP sometimes disagree."""
    x = digits_xy[0][1300:1700]
    generator = torch.Generator().manual_seed(1)
    return (x + 0.25 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
