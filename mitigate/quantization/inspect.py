"""Read what calibration decided in a quantized model: its activation scales and zero points."""

from __future__ import annotations

from torch import nn

__all__ = ["activation_qparams"]


def activation_qparams(quantized: nn.Module) -> dict[str, list[float]]:
    """``[scale, zero_point]`` of every quantized activation of a static int8 copy.

    These are what calibration decides (weight scales come from the weights alone): the
    input quantizer's buffers and every quantized module's output ``scale``/``zero_point``.
    Names are module paths (``conv1``) or the graph's buffer prefix (``conv1_input``).
    """
    inner = getattr(quantized, "inner", quantized)
    params: dict[str, list[float]] = {}
    buffers = dict(inner.named_buffers())
    for name, value in buffers.items():
        if name.endswith("_scale_0"):
            prefix = name[: -len("_scale_0")]
            zero = buffers.get(f"{prefix}_zero_point_0")
            params[prefix] = [float(value), float(zero) if zero is not None else 0.0]
    for name, module in inner.named_modules():
        scale, zero = getattr(module, "scale", None), getattr(module, "zero_point", None)
        if name and scale is not None and zero is not None and not callable(scale):
            params[name] = [float(scale), float(zero)]
    return params
