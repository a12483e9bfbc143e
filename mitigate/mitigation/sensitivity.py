"""Layer sensitivity: which Conv/Linear layers cause a quantized model's disagreements.

Two measurements per weighted layer, both counted as top-1 disagreements with the FP model on
a small probe set (by default the pool inputs a selector picks, so no labels are needed):

- **alone**: only this layer quantized; every other module (layers, and activation or
  pooling *modules*) kept in float;
- **without**: every weighted layer quantized except this one, kept in float. What that
  removes from the all-int8 count (``removed_by_float``) is what layer fallback would gain.

The two differ because errors compound, and because keeping one layer in float does not
keep its *output* in float: the next int8 op quantizes it again.

Fused patterns: FX fuses conv-bn, conv-bn-relu, conv-relu and linear-relu into one module
that keeps the *conv's or linear's* name. Keeping ``conv1`` in float therefore keeps the whole
fused block (conv with batch norm folded in, plus its relu) in float; naming the BatchNorm or
the ReLU would change nothing, so only Conv/Linear names are accepted here.

Functional ops that torch quantizes on their own (``torch.flatten``, a residual ``+``,
``cat``) are not modules and cannot be kept in float by name: they keep the scheme's setting
in every measurement. :func:`unattributed_disagreements` counts what they cause
with every module in float — the floor under every "alone" count, which no layer choice
removes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mitigate.errors import unknown_choice
from mitigate.mitigation._measure import (
    check_float_layers,
    check_inputs,
    count,
    labels,
    leaf_modules,
    weighted_layers,
)
from mitigate.quantization.schemes import Int8Static

__all__ = [
    "MODES",
    "LayerSensitivity",
    "disagreements",
    "layer_sensitivity",
    "unattributed_disagreements",
]

MODES = ("both", "alone", "without")


@dataclass(frozen=True)
class LayerSensitivity:
    """One weighted layer's share of the model and the disagreements it accounts for.

    Attributes:
        name: qualified module name (as in ``model.named_modules()``).
        type: module class name, ``Conv2d`` or ``Linear``.
        params: the layer's parameters; ``param_share`` of all the model's parameters.
        macs: multiply-accumulates for one input; ``mac_share`` of all weighted layers' MACs.
        disagreements_alone: probe disagreements with only this layer quantized
            (``None`` when not measured).
        disagreements_without: probe disagreements with every layer quantized but this one.
        removed_by_float: the all-int8 count minus ``disagreements_without``; negative when
            keeping the layer in float makes things worse.
    """

    name: str
    type: str
    params: int
    param_share: float
    macs: int
    mac_share: float
    disagreements_alone: int | None = None
    disagreements_without: int | None = None
    removed_by_float: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def disagreements(
    model: nn.Module, scheme: Int8Static | str, calibration: Tensor, probe: Tensor
) -> int:
    """How many ``probe`` inputs the model quantized with ``scheme`` labels unlike the model.

    Args:
        model: the float32 classifier (not modified).
        scheme: an :class:`~mitigate.quantization.Int8Static`, ``float_layers`` included.
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.

    Example:
        >>> import torch
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> disagreements(net, Int8Static(float_layers=("1",)), torch.rand(8, 4), torch.rand(5, 4))
        0
    """
    scheme = check_inputs(model, scheme, calibration, probe)
    check_float_layers(scheme.float_layers, weighted_layers(model, probe))
    return count(model, scheme, calibration, probe, labels(model, probe))


def unattributed_disagreements(
    model: nn.Module, scheme: Int8Static | str, calibration: Tensor, probe: Tensor
) -> int:
    """Probe disagreements with every module kept in float: what the functional ops torch
    still quantizes (``torch.flatten``, ``+``, ``cat``) cause on their own.

    Args:
        model: the float32 classifier (not modified).
        scheme: an :class:`~mitigate.quantization.Int8Static` (its settings quantize those ops).
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.
    """
    scheme = check_inputs(model, scheme, calibration, probe)
    everything = dataclasses.replace(scheme, float_layers=tuple(leaf_modules(model)))
    return count(model, everything, calibration, probe, labels(model, probe))


def layer_sensitivity(
    model: nn.Module,
    scheme: Int8Static | str,
    calibration: Tensor,
    probe: Tensor,
    *,
    mode: str = "both",
) -> list[LayerSensitivity]:
    """Quantize one layer at a time, and keep one layer at a time in float; rank the layers.

    Layers the scheme already keeps in float are left out: the "all-int8" reference is the
    scheme as given, and "only this layer quantized" keeps every other weighted layer in
    float. Costs ``1 + 2 L`` quantizations (``L`` layers) for ``mode="both"``, each followed
    by one pass over the probe.

    Args:
        model: the float32 classifier (not modified).
        scheme: an :class:`~mitigate.quantization.Int8Static`.
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.
        mode: ``"both"``, ``"alone"`` (only this layer quantized) or ``"without"`` (only
            this layer in float); the other measurement's fields are ``None``.

    Returns:
        One row per measured layer, most harmful first: by ``removed_by_float`` (what keeping
        it in float removes), then by ``disagreements_alone``, then in module order.

    Raises:
        MitigateError: not a static int8 scheme, bad tensors, an unknown mode, or
            ``float_layers`` naming something that is not a Conv/Linear layer.

    Example:
        >>> import torch
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8),
        ...                           torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> rows = layer_sensitivity(net, Int8Static(), torch.rand(64, 4), torch.rand(16, 4))
        >>> sorted(r.name for r in rows), rows[0].params + rows[1].params
        (['1', '3'], 67)
    """
    scheme = check_inputs(model, scheme, calibration, probe)
    if mode not in MODES:
        raise unknown_choice("sensitivity mode", mode, MODES)
    table = weighted_layers(model, probe)
    check_float_layers(scheme.float_layers, table)
    order = [r["name"] for r in table]
    reference = labels(model, probe)
    kept = set(scheme.float_layers)

    def measure(float_layers: set[str]) -> int:
        names = tuple(n for n in order if n in float_layers)  # module order: canonical labels
        return count(
            model, dataclasses.replace(scheme, float_layers=names), calibration, probe, reference
        )

    leaves = leaf_modules(model)

    def measure_alone(name: str) -> int:
        others = tuple(n for n in leaves if n != name)
        return count(
            model, dataclasses.replace(scheme, float_layers=others), calibration, probe, reference
        )

    baseline = measure(kept) if mode != "alone" else None
    rows = []
    for row in table:
        if row["name"] in kept:
            continue
        alone = without = removed = None
        if mode in ("both", "alone"):
            alone = measure_alone(row["name"])
        if mode in ("both", "without"):
            without = measure(kept | {row["name"]})
            removed = baseline - without  # type: ignore[operator]
        rows.append(
            LayerSensitivity(
                **row,
                disagreements_alone=alone,
                disagreements_without=without,
                removed_by_float=removed,
            )
        )
    position = {name: i for i, name in enumerate(order)}
    return sorted(
        rows,
        key=lambda r: (
            -(r.removed_by_float or 0),
            -(r.disagreements_alone or 0),
            position[r.name],
        ),
    )
