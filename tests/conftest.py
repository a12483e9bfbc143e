"""Shared fixtures: a tiny classifier trained on real digits, and an isolated model cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F


class TinyNet(nn.Module):
    """Conv-BN-ReLU, a residual conv, and a linear head: every pattern FX must handle."""

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


@pytest.fixture(scope="session")
def tiny_net_class() -> type[nn.Module]:
    """The class itself, for tests that build fresh copies (conftest cannot be imported)."""
    return TinyNet


@pytest.fixture(scope="session")
def digits_xy() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    return x, torch.tensor(d.target)


@pytest.fixture(scope="session")
def trained_tiny(digits_xy) -> nn.Module:
    """TinyNet after 150 Adam steps on digits (about 95% training accuracy)."""
    x, y = digits_xy
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        idx = torch.randint(0, len(x), (64,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("MITIGATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


# A small retrain/compare setup on digits: small splits, an MLP, two shifts (one held out).
TINY_RETRAIN = dict(
    data__train=300,
    data__val=50,
    data__calibration=50,
    data__pool=100,
    data__test=100,
    model__arch="mlp",
    train__epochs=3,
    shifts__families=["gaussian-noise", "rotate"],
    shifts__severities=[3],
    shifts__held_out=["rotate"],
    quantization__calibration_size=50,
    retrain__epochs=1,
    retrain__probe_size=150,
)


@pytest.fixture(scope="session")
def tiny_retrain() -> dict:
    """Config overrides (``override(Config(), **tiny_retrain)``) for a seconds-long run."""
    return dict(TINY_RETRAIN)
