"""Simulated weight-only int4, and the weight rounding that weight-quantized QAT trains through.

CPU has no int4 kernels, so we store the de-quantized weights. The predictions equal those of
a real int4-weight kernel up to float rounding of the accumulation, which is what a
disagreement count needs.

:func:`weight_rounding` gives, for ``int8-dynamic`` and ``int4-weight``, the weights a scheme
rounds and how: QAT for those schemes (:mod:`mitigate.trainers.qat`) trains the float weights
through that rounding with a straight-through gradient. It works for any layer the scheme
quantizes, LSTM and GRU included, where torch.ao's fake-quant QAT has no recurrent modules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mitigate.quantization.schemes import Int4Weight, Int8Dynamic

__all__ = [
    "fake_quantize_int8",
    "fake_quantize_weight",
    "quantize_weights",
    "recurrent_weight_names",
    "weight_rounding",
]

_QMAX = 7  # symmetric int4: levels -8..7, we use -7..7 so that zero stays exact and symmetric


def fake_quantize_weight(weight: Tensor, group_size: int) -> Tensor:
    """Round ``weight`` ``[out, in, ...]`` to int4 levels and back.

    One scale per output channel (``group_size == 0``) or per ``group_size`` consecutive input
    elements of each output channel (the last group may be shorter).
    """
    flat = weight.detach().reshape(weight.shape[0], -1)
    if group_size and group_size < flat.shape[1]:
        pad = (-flat.shape[1]) % group_size
        padded = torch.nn.functional.pad(flat, (0, pad))
        groups = padded.reshape(flat.shape[0], -1, group_size)
        scale = groups.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / _QMAX
        rounded = (groups / scale).round().clamp(-_QMAX, _QMAX) * scale
        flat = rounded.reshape(flat.shape[0], -1)[:, : flat.shape[1]]
    else:
        scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / _QMAX
        flat = (flat / scale).round().clamp(-_QMAX, _QMAX) * scale
    return flat.reshape(weight.shape).to(weight.dtype)


def fake_quantize_int8(weight: Tensor) -> Tensor:
    """Round ``weight`` to symmetric per-tensor int8 and back, as ``int8-dynamic`` stores its
    Linear, LSTM and GRU weights (torch's default dynamic weight observer: scale
    ``max|w| / 127.5``, levels ``-128..127``, zero point 0).

    Example:
        >>> w = torch.tensor([[-1.0, 0.5], [0.25, 1.0]])
        >>> bool(((fake_quantize_int8(w) - w).abs() <= 1.0 / 255 + 1e-7).all())
        True
    """
    scale = weight.detach().abs().amax().clamp_min(1e-12) / 127.5
    return ((weight / scale).round().clamp(-128, 127) * scale).to(weight.dtype)


def weight_rounding(
    model: nn.Module, scheme: Int8Dynamic | Int4Weight
) -> tuple[list[str], Callable[[Tensor], Tensor]]:
    """The qualified names of the weights ``scheme`` rounds in ``model``, and the rounding.

    ``int8-dynamic``: Linear, LSTM and GRU weights, per tensor (what ``quantize_dynamic``
    packs); ``int4-weight``: Conv, Linear, LSTM and GRU weights, per output row or group.
    Biases and embeddings stay float in both.
    """
    if isinstance(scheme, Int8Dynamic):
        linear: tuple[type[nn.Module], ...] = (nn.Linear,)
        recurrent: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU)
        rounding: Callable[[Tensor], Tensor] = fake_quantize_int8
    else:
        linear = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        recurrent = (nn.RNNBase,)
        group_size = scheme.group_size

        def rounding(weight: Tensor) -> Tensor:
            return fake_quantize_weight(weight, group_size)

    names = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, linear):
            names.append(f"{dot}weight")
        elif isinstance(module, recurrent):
            names += [f"{dot}{n}" for n in recurrent_weight_names(module)]  # type: ignore[arg-type]
    return names, rounding


def recurrent_weight_names(module: nn.RNNBase) -> list[str]:
    """The weight matrices of an LSTM/GRU/RNN (``weight_ih_l0``, ``weight_hh_l0``, ...).

    Each is ``[gates * hidden, in]``: one int4 scale per row is one per gate unit, the
    recurrent analogue of a linear layer's output channel. Biases stay float, as in
    every weight-only scheme.
    """
    return [n for n in module._flat_weights_names if n.startswith("weight_")]


@torch.no_grad()
def quantize_weights(model: nn.Module, scheme: Int4Weight) -> nn.Module:
    """A deep copy of ``model`` whose Conv/Linear/LSTM/GRU weights are int4-rounded
    (embeddings stay float, as in ``int8-dynamic``)."""
    quantized = copy.deepcopy(model).eval()
    for module in quantized.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            module.weight.copy_(fake_quantize_weight(module.weight, scheme.group_size))
        elif isinstance(module, nn.RNNBase):
            for name in recurrent_weight_names(module):
                weight = getattr(module, name)  # in place: the RNN's flat weights see it
                weight.copy_(fake_quantize_weight(weight, scheme.group_size))
    return quantized
