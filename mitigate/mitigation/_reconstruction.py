"""What weight reconstruction (AdaRound, bias correction) shares: checking its arguments once,
the fused float copy of f0 whose weights the backend rounded, and each layer's inputs as the
quantized model and f0 see them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization.api import QuantizedModel

__all__ = ["layer_inputs", "prepare"]


def prepare(
    model: object,
    quantized: object,
    inputs: object,
    layers: Sequence[str] | None,
    what: str,
) -> tuple[nn.Module, list[str]]:
    """Validate the public arguments shared by :func:`adaround` and bias correction; return
    the fused float copy of ``model`` and the layer names to work on, in forward order."""
    from mitigate.quantization.int_weights import (
        check_static_int8,
        float_weight,
        fuse_float,
        quantized_layers,
    )

    if not isinstance(model, nn.Module):
        raise MitigateError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_static_int8(quantized, what)
    if not isinstance(inputs, Tensor) or inputs.ndim < 2 or inputs.shape[0] == 0:
        got = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise MitigateError(f"inputs must be a non-empty float tensor [N, ...], got {got}")
    if not inputs.is_floating_point():
        raise MitigateError(f"inputs must be a float tensor, got dtype {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise MitigateError("inputs hold NaN or infinite values")
    expected = getattr(model, "input_shape", None)
    if isinstance(expected, tuple) and tuple(inputs.shape[1:]) != expected:
        raise MitigateError(
            f"inputs have shape {list(inputs.shape[1:])} per item; the model takes {list(expected)}"
        )
    available = quantized_layers(quantized)  # type: ignore[arg-type]
    if layers is None:
        names = available
    else:
        if isinstance(layers, str):
            layers = [layers]
        for name in layers:
            if name not in available:
                raise MitigateError(
                    f"no quantized Conv/Linear layer named {name!r}; layers: "
                    + (", ".join(available) or "none")
                )
        names = [n for n in available if n in set(layers)]
    fused = fuse_float(model)
    for name in available:
        try:
            w_fp, _ = float_weight(fused, name)
        except AttributeError:
            w_fp = None
        if w_fp is None or w_fp.shape != _weight_shape(quantized, name):
            raise MitigateError(
                f"the quantized model does not come from this model: its layer {name!r} has "
                "no float counterpart of the same shape"
            )
    try:
        with torch.no_grad():
            fused(inputs[:1])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MitigateError(
            f"inputs of shape {list(inputs.shape[1:])} per item do not fit the model: {first}"
        ) from None
    return fused, names


def _weight_shape(quantized: QuantizedModel, name: str) -> torch.Size:
    from mitigate.quantization.int_weights import read_layer

    return read_layer(quantized, name).weight.shape


def layer_inputs(
    fused: nn.Module, current: QuantizedModel, inputs: Tensor, name: str
) -> tuple[Tensor, Tensor]:
    """Layer ``name``'s input in the quantized model ``current`` (dequantized int8, earlier
    layers as ``current`` has them) and in the FP model, over ``inputs``."""
    from mitigate.quantization.int_weights import layer_io

    return (
        layer_io(current, inputs, [name])[name].inputs,
        layer_io(fused, inputs, [name])[name].inputs,
    )
