"""What keeps a state dict from loading into a model, in words an error line can carry:
shared by checkpoints and ``--weights`` files."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["non_finite", "some", "state_problems"]

_SHOWN = 3  # how many offending state-dict keys an error names


def state_problems(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly into ``model``: ``"missing: a, b"``,
    ``"unexpected: ..."``, ``"wrong shape: w [3] vs [4]"``; empty when it fits."""
    expected = model.state_dict()
    found = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [
            f"{k} {list(state[k].shape)} vs {list(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    return [f"{label}: {some(keys)}" for label, keys in found.items() if keys]


def non_finite(state: Mapping[str, Tensor]) -> list[str]:
    """The float entries of ``state`` holding NaN or infinity."""
    return [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def some(keys: list[str]) -> str:
    """The first few of ``keys``, and how many more there are."""
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more
