"""Small, fast pieces for trainer tests (fixtures, since conftest modules cannot be imported
under ``--import-mode=importlib``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and on a busy 2-core machine a second
    spinning thread slows every step many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bn_net(tiny_net_class) -> Callable[[int], torch.nn.Module]:
    """``bn_net(seed)`` -> a freshly initialised TinyNet (conv-BN-ReLU, residual, linear)."""

    def build(seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return tiny_net_class()

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
