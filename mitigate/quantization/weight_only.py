"""Simulated weight-only int4: weights rounded to 16 symmetric levels, compute in float.

CPU has no int4 kernels, so we store the de-quantized weights. The predictions equal those of
a real int4-weight kernel up to float rounding of the accumulation, which is what a
disagreement count needs.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mitigate.quantization.schemes import Int4Weight

__all__ = ["fake_quantize_weight", "quantize_weights"]

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


@torch.no_grad()
def quantize_weights(model: nn.Module, scheme: Int4Weight) -> nn.Module:
    """A deep copy of ``model`` whose Conv/Linear weights are int4-rounded."""
    quantized = copy.deepcopy(model).eval()
    for module in quantized.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            module.weight.copy_(fake_quantize_weight(module.weight, scheme.group_size))
    return quantized
