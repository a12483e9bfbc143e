"""Empirical bias correction (Nagel et al., 2019, arXiv 1906.04721, section 4.2): shift each
quantized layer's bias by the mean error its output makes against the FP model's, measured on
unlabelled inputs; the integers, scales and the FP model stay as they are.

For each quantized Conv/Linear layer, in forward order::

    error[c] = mean over inputs (and positions) of  (W~ x~ + b)[c] - (W x + b)[c]
    b[c]    <- b[c] - error[c]

``x~`` is the layer's input in the quantized model *with every earlier layer already
corrected* (so later layers correct what is left), ``W~`` its dequantized integers; ``x`` and
``W`` are the FP model's input and (BatchNorm-folded) weight. Both sides are taken
*before* the activation:

- A fused ReLU kernel only returns ``relu(...)``, requantized to its output grid; there the
  ReLU hides every negative error and the output grid adds rounding and clipping, so the mean
  error measured after it is not the shift a bias can undo. The pre-activation is what the
  kernel accumulates exactly (int32) before requantizing; it is computed in float from the
  hooked dequantized input and the dequantized integers (float summation order aside, the
  same numbers), and the FP side likewise from the FP input.
- The correction makes the mean pre-activation error zero on ``inputs``; the paper corrects
  the same quantity. It removes a systematic shift only: per-input errors stay.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mitigate.mitigation._reconstruction import layer_inputs, prepare
from mitigate.quantization.api import QuantizedModel

__all__ = ["BiasCorrectionLayer", "BiasCorrectionResult", "bias_correction"]


@dataclass(frozen=True)
class BiasCorrectionLayer:
    """What :func:`bias_correction` did to one layer.

    Attributes:
        name: the layer's module name in the FP model.
        shift: ``float32 [out]``, the mean pre-activation error per output channel that was
            subtracted from the bias (new bias = old bias - shift).
        error_before: mean over channels of ``|mean error|`` before the correction (with
            earlier layers already corrected); after it, the mean error is 0 on ``inputs``
            by construction.
        seconds: wall time for this layer.
    """

    name: str
    shift: Tensor
    error_before: float
    seconds: float


@dataclass(frozen=True)
class BiasCorrectionResult:
    """What :func:`bias_correction` returns.

    Attributes:
        quantized: the corrected :class:`~mitigate.quantization.QuantizedModel` (same scheme,
            integers and scales as the input one; only biases differ).
        layers: one :class:`BiasCorrectionLayer` per corrected layer, in forward order.
    """

    quantized: QuantizedModel
    layers: tuple[BiasCorrectionLayer, ...]

    def as_dict(self) -> dict[str, Any]:
        from mitigate.quantization import scheme_label

        return {
            "scheme": scheme_label(self.quantized.scheme),
            "layers": [
                {
                    "name": layer.name,
                    "shift_abs_mean": float(layer.shift.abs().mean()),
                    "shift_abs_max": float(layer.shift.abs().max()),
                    "error_before": layer.error_before,
                    "seconds": layer.seconds,
                }
                for layer in self.layers
            ],
        }


def bias_correction(
    model: nn.Module,
    quantized: nn.Module,
    inputs: Tensor,
    *,
    layers: Sequence[str] | None = None,
) -> BiasCorrectionResult:
    """Correct the biases of a static-int8 model, layer by layer, so the mean pre-activation
    output of each quantized layer equals the FP model's on ``inputs``.

    Args:
        model: the FP model ``f0`` that ``quantized`` was made from (not modified).
        quantized: ``q0``, a static-int8 :class:`~mitigate.quantization.QuantizedModel` of
            ``model`` (not modified); layers its scheme keeps in float are skipped.
        inputs: ``float [N, ...]`` unlabelled model inputs; a few hundred suffice.
        layers: names of the layers to correct (default all quantized Conv/Linear layers).

    Returns:
        A :class:`BiasCorrectionResult`.

    Example:
        >>> from mitigate.quantization import quantize
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> x = torch.rand(128, 1, 8, 8)
        >>> result = bias_correction(net, quantize(net, "int8", x), x)
        >>> [(row.name, tuple(row.shift.shape)) for row in result.layers]
        [('1', (16,)), ('3', (4,))]
    """
    fused, names = prepare(model, quantized, inputs, layers, "bias_correction")
    from mitigate.quantization.int_weights import float_weight, read_layer, with_weights

    current = quantized
    rows = []
    for name in names:
        start = time.perf_counter()
        layer = read_layer(current, name)
        x_q, x_fp = layer_inputs(fused, current, inputs, name)
        w_fp, b_fp = float_weight(fused, name)
        with torch.no_grad():
            error = _channel_mean(
                layer.forward_float(x_q, layer.dequantize(layer.weight), layer.bias)
                - layer.forward_float(x_fp, w_fp, b_fp),
                layer.channel_dim,
            )
        bias = torch.zeros_like(error) if layer.bias is None else layer.bias
        current = with_weights(current, biases={name: bias - error})
        rows.append(
            BiasCorrectionLayer(
                name=name,
                shift=error,
                error_before=float(error.abs().mean()),
                seconds=time.perf_counter() - start,
            )
        )
    if current is quantized:
        current = with_weights(quantized)  # always a copy: callers may modify the result
    return BiasCorrectionResult(quantized=current, layers=tuple(rows))


def _channel_mean(t: Tensor, channel_dim: int) -> Tensor:
    """Mean of ``t`` over every dimension but ``channel_dim``: ``[out]``."""
    return t.movedim(channel_dim, 0).reshape(t.shape[channel_dim], -1).mean(dim=1)
