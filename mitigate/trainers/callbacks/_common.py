"""What both callbacks share: finding the classifier inside a LightningModule, copying it
without touching it, reading a batch, and checking options once at construction."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn

from mitigate.errors import MitigateError, unknown_choice

__all__ = [
    "ModelOption",
    "UnpackBatch",
    "check_model_option",
    "check_positive_int",
    "cpu_copy",
    "is_inputs",
    "resolve_model",
    "unpack_batch",
]

ModelOption = str | Callable[[pl.LightningModule], nn.Module] | None
"""Where the classifier is: an attribute name (dotted allowed), a function of the
LightningModule, or ``None`` for ``pl_module.model`` when that is a module, else
``pl_module`` itself."""

UnpackBatch = Callable[[Any], tuple[Tensor, Tensor | None]]
"""``batch -> (inputs [B, ...], labels [B] or None)``."""


def is_inputs(x: object) -> bool:
    """Whether ``x`` is a batch of model inputs ``[N, ...]``: float (images, features) or
    integer token ids (text models), never bool or complex."""
    import torch

    return (
        isinstance(x, Tensor)
        and x.ndim >= 2
        and (x.is_floating_point() or (not x.is_complex() and x.dtype != torch.bool))
    )


def check_model_option(model: object) -> ModelOption:
    if model is None or callable(model) or (isinstance(model, str) and model):
        return model  # type: ignore[return-value]
    raise MitigateError(
        "model must be None, an attribute name of the LightningModule (e.g. 'model') or a "
        f"function pl_module -> nn.Module, got {model!r}"
    )


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MitigateError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def resolve_model(pl_module: pl.LightningModule, model: ModelOption) -> nn.Module:
    """The classifier to measure or score, never a copy."""
    if model is None:
        inner = getattr(pl_module, "model", None)
        return inner if isinstance(inner, nn.Module) else pl_module
    if isinstance(model, str):
        found: object = pl_module
        for part in model.split("."):
            found = getattr(found, part, None)
        if not isinstance(found, nn.Module):
            children = [name for name, _ in pl_module.named_children()]
            raise unknown_choice("model attribute of the LightningModule", model, children)
        return found
    found = model(pl_module)
    if not isinstance(found, nn.Module):
        raise MitigateError(f"model function must return an nn.Module, got {type(found).__name__}")
    return found


def cpu_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy on the CPU in eval mode; ``model`` itself is left exactly as it was.

    A LightningModule drops its trainer when copied, so the copy is just the network.
    """
    twin = copy.deepcopy(model).cpu().eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """Inputs and labels from a batch that is ``x``, ``(x,)`` or ``(x, y, ...)``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], y
    raise MitigateError(
        f"cannot read inputs from a {type(batch).__name__} batch; pass unpack_batch= a function "
        "batch -> (inputs, labels or None)"
    )
