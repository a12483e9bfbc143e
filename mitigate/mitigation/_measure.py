"""What every analysis here shares: input checks at the public edge, and one measurement —
quantize with a scheme, count the probe inputs whose top-1 label differs from the FP model's.

Private: callers validate once with :func:`check_inputs`, then call the rest freely.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.quantization.schemes import Int8Static, OrtInt8
from mitigate.scanning import eval_mode

#: The schemes that can keep named layers in float (torch.ao static int8, ORT static int8).
LAYERED = (Int8Static, OrtInt8)

__all__ = [
    "LAYERED",
    "check_float_layers",
    "check_inputs",
    "count",
    "disagreeing",
    "labels",
    "leaf_modules",
    "weighted_layers",
]

_BATCH = 512


def check_inputs(
    model: object, scheme: object, calibration: object, probe: object
) -> Int8Static | OrtInt8:
    """The static int8 scheme (a name such as ``"int8:engine=qnnpack"`` or ``"ort-int8"``, as
    :func:`~mitigate.quantize` takes, or an :class:`Int8Static` / :class:`OrtInt8`);
    MitigateError unless the four arguments can be measured together."""
    from mitigate.quantization import parse_scheme, scheme_label

    if not isinstance(model, nn.Module):
        raise MitigateError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(scheme, str):
        scheme = parse_scheme(scheme)
    if not isinstance(scheme, LAYERED):
        got = scheme_label(scheme) if hasattr(scheme, "kind") else type(scheme).__name__
        raise MitigateError(
            "layer fallback and settings need a static int8 scheme (int8[:options] or "
            f"ort-int8[:options]), got {got}"
        )
    for what, x in (("calibration", calibration), ("probe", probe)):
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[0] == 0:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise MitigateError(f"{what} must be a non-empty float tensor [N, ...], got {got}")
        if not x.is_floating_point():
            raise MitigateError(f"{what} must be a float tensor, got dtype {x.dtype}")
    if calibration.shape[1:] != probe.shape[1:]:  # type: ignore[union-attr]
        raise MitigateError(
            f"calibration inputs {list(calibration.shape[1:])} and probe inputs "  # type: ignore[union-attr]
            f"{list(probe.shape[1:])} have different shapes"  # type: ignore[union-attr]
        )
    return scheme


def weighted_layers(model: nn.Module, probe: Tensor) -> list[dict[str, Any]]:
    """:func:`mitigate.models.layer_table` rows (Conv/Linear leaves) for the probe's input shape."""
    from mitigate.models import layer_table

    rows = layer_table(model, tuple(probe.shape[1:]))
    if not rows:
        raise MitigateError("the model has no Conv or Linear layer to quantize or keep in float")
    return rows


def leaf_modules(model: nn.Module) -> list[str]:
    """Names of the modules without children (layers, activations, pools), in module order.

    Keeping all of them but one in float is how "only this layer quantized" is measured: a
    pooling or activation *module* with the global qconfig would otherwise quantize its input
    and blame every layer for it.
    """
    return [name for name, m in model.named_modules() if name and not any(m.children())]


def check_float_layers(names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Every name kept in float must be a weighted layer: a fused-away BatchNorm or a ReLU
    would be accepted by the backend and silently change nothing."""
    valid = [r["name"] for r in rows]
    for name in names:
        if name not in valid:
            raise MitigateError(
                f"float layer {name!r} is not a Conv/Linear layer; layers: {', '.join(valid)}"
            )


@torch.no_grad()
def labels(model: nn.Module, x: Tensor) -> Tensor:
    """Top-1 labels ``int64 [N]`` of ``model`` on ``x``, in batches, in eval mode."""
    with eval_mode(model):
        return torch.cat([model(b).argmax(dim=1) for b in x.split(_BATCH)])


def disagreeing(
    model: nn.Module, scheme: Int8Static, calibration: Tensor, probe: Tensor, reference: Tensor
) -> Tensor:
    """``bool [N]``: the probe inputs on which ``model`` quantized with ``scheme`` answers
    otherwise than ``reference`` (FP labels ``[N]``)."""
    from mitigate.quantization import quantize

    q = quantize(model, scheme, calibration)
    return labels(q, probe) != reference


def count(
    model: nn.Module, scheme: Int8Static, calibration: Tensor, probe: Tensor, reference: Tensor
) -> int:
    """Disagreements on ``probe`` between ``reference`` (FP labels ``[N]``) and ``model``
    quantized with ``scheme``."""
    return int(disagreeing(model, scheme, calibration, probe, reference).sum())
