"""Per-layer parameter and compute shares, the raw material of layer sensitivity reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mitigate.errors import MitigateError

__all__ = ["WEIGHTED_LAYER_TYPES", "layer_table"]

# Layers that quantization schemes replace; their weights dominate storage and compute.
WEIGHTED_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.Embedding,
    nn.LSTM,
    nn.GRU,
)
_GATES = {nn.LSTM: 4, nn.GRU: 3}


def layer_table(model: nn.Module, input_shape: Sequence[int]) -> list[dict[str, Any]]:
    """Describe every Conv/Linear/Embedding/LSTM/GRU leaf: parameters and multiply-accumulates
    for one input.

    MACs are counted by forward hooks during one eval-mode forward pass on a zero input of
    shape ``[1, *input_shape]`` (token id 0 for text models, whose ``modality`` is
    ``"text"``): a conv costs ``out.numel() * in_channels / groups * kernel area``, a linear
    ``out.numel() * in_features``, an LSTM (GRU) layer ``4 (3) * hidden * (input + hidden)``
    per time step and direction, an embedding lookup nothing. A layer called twice counts
    twice; one never called counts 0. Parameter shares are of *all* parameters of the model,
    so they sum to less than 1 when a model also has batch-norm or other weights; MAC shares
    are of the listed layers' MACs (other ops are cheap in comparison).

    Args:
        model: any module taking one batch ``[N, *input_shape]``.
        input_shape: shape of one input, e.g. ``(C, H, W)`` or ``(L,)``.

    Returns:
        One dict per layer, in module order, with keys ``name`` (qualified name), ``type``
        (class name), ``params``, ``param_share``, ``macs``, ``mac_share``.

    Example:
        >>> table = layer_table(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (1, 2, 2))
        >>> table[0]["name"], table[0]["params"], table[0]["macs"]
        ('1', 15, 12)
    """
    shape = _check_shape(input_shape)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHTED_LAYER_TYPES)]
    macs = dict.fromkeys((n for n, _ in layers), 0)

    def hook(name: str):
        def count(module: nn.Module, inputs: tuple, output: Any) -> None:
            macs[name] += _macs(module, inputs, output)

        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if getattr(model, "modality", "image") == "text":
        dtype = torch.int64  # token ids
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), dtype=dtype, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    total_params = sum(p.numel() for p in model.parameters())
    total_macs = sum(macs.values())
    rows = []
    for name, module in layers:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(
            {
                "name": name,
                "type": type(module).__name__,
                "params": params,
                "param_share": params / total_params if total_params else 0.0,
                "macs": macs[name],
                "mac_share": macs[name] / total_macs if total_macs else 0.0,
            }
        )
    return rows


def _macs(module: nn.Module, inputs: tuple, output: Any) -> int:
    if isinstance(module, nn.Embedding):
        return 0  # a table lookup
    if isinstance(module, (nn.LSTM, nn.GRU)):
        return _recurrent_macs(module, inputs[0])
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel = math.prod(module.kernel_size)  # type: ignore[arg-type]
    return output.numel() * (module.in_channels // module.groups) * kernel  # type: ignore[operator]


def _recurrent_macs(module: nn.LSTM | nn.GRU, x: torch.Tensor) -> int:
    steps = x.numel() // module.input_size  # batch x time
    gates = _GATES[type(module)] * module.hidden_size
    directions = 2 if module.bidirectional else 1
    total, width = 0, module.input_size
    for _ in range(module.num_layers):
        total += steps * directions * gates * (width + module.hidden_size)
        width = module.hidden_size * directions
    return total


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or not input_shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)
    ):
        raise MitigateError(
            f"input_shape must be the positive sizes of one input, e.g. (1, 28, 28), "
            f"got {input_shape!r}"
        )
    return tuple(input_shape)
