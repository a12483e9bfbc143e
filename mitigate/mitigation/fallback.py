"""Layer fallback: keep the few layers that cause most disagreements in float, greedily.

Each step tries every weighted layer still in int8, keeps the one whose fallback leaves the
fewest disagreements on the probe, and re-measures from there, because layers interact: the
second-best layer on its own is not always the best second step.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mitigate.errors import MitigateError
from mitigate.mitigation._measure import (
    check_float_layers,
    check_inputs,
    count,
    labels,
    weighted_layers,
)

__all__ = ["FallbackResult", "greedy_fallback", "parse_share"]


@dataclass(frozen=True)
class FallbackResult:
    """What :func:`greedy_fallback` chose.

    Attributes:
        float_layers: every layer the final scheme keeps in float, in module order (those the
            input scheme already kept, plus the chosen ones).
        steps: one dict per chosen layer, in choice order: ``layer``,
            ``disagreements_after`` (on the probe, after keeping it in float), and
            ``params_in_float_share`` (share of all parameters then held in float layers).
        scheme: the input scheme with ``float_layers`` set.
        disagreements_before: probe disagreements of the input scheme.
        stopped: why the search ended: ``"target met"``, ``"max_float_layers reached"``,
            ``"max_float_params reached"``, ``"no layer helps"`` or ``"all layers in float"``.
    """

    float_layers: tuple[str, ...]
    steps: list[dict[str, Any]]
    scheme: Any  # Int8Static
    disagreements_before: int
    stopped: str

    @property
    def disagreements_after(self) -> int:
        return self.steps[-1]["disagreements_after"] if self.steps else self.disagreements_before

    def as_dict(self) -> dict[str, Any]:
        from mitigate.quantization import scheme_label

        return {
            "float_layers": list(self.float_layers),
            "steps": [dict(s) for s in self.steps],
            "scheme": scheme_label(self.scheme),
            "disagreements_before": self.disagreements_before,
            "disagreements_after": self.disagreements_after,
            "stopped": self.stopped,
        }


def parse_share(text: str | float) -> float:
    """A parameter share from ``"10%"``, ``"0.1"`` or ``0.1``; must be in ``(0, 1]``.

    Example:
        >>> parse_share("10%"), parse_share("0.25"), parse_share(1)
        (0.1, 0.25, 1.0)
    """
    raw = text.strip() if isinstance(text, str) else text
    try:
        if isinstance(raw, str) and raw.endswith("%"):
            value = float(raw[:-1]) / 100
        elif isinstance(raw, bool):
            raise ValueError
        else:
            value = float(raw)
    except ValueError:
        raise MitigateError(
            f"a parameter share is a fraction or a percentage such as 0.1 or 10%, got {text!r}"
        ) from None
    if not 0.0 < value <= 1.0:
        raise MitigateError(f"a parameter share must be in (0, 1] (0%-100%), got {text!r}")
    return value


def greedy_fallback(
    model: nn.Module,
    scheme: Any,
    calibration: Tensor,
    probe: Tensor,
    *,
    max_float_layers: int | None = None,
    max_float_params: float | None = None,
    target_disagreements: int | None = None,
) -> FallbackResult:
    """Keep layers in float one at a time, most helpful first, until a limit or target is met.

    A step keeps the candidate that leaves the fewest probe disagreements (ties: the smaller
    layer, then module order) and only if it strictly lowers the count, so the search stops by
    itself once no layer helps. Each step costs one quantization per remaining layer.

    Args:
        model: the float32 classifier (not modified).
        scheme: an :class:`~mitigate.quantization.Int8Static`; layers it already keeps in
            float stay there and count toward the limits.
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.
        max_float_layers: at most this many layers in float in the result (``>= 0``).
        max_float_params: at most this share of all parameters in float layers, in ``(0, 1]``
            (:func:`parse_share` reads ``"10%"``); a layer that would exceed it is skipped.
        target_disagreements: stop once the probe count is at most this (``>= 0``).

    Returns:
        A :class:`FallbackResult`; ``result.scheme`` quantizes with the chosen layers in float.

    Raises:
        MitigateError: none of the three limits given, a limit out of range, or the inputs
            that :func:`~mitigate.mitigation.layer_sensitivity` refuses.

    Example:
        >>> import torch
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> r = greedy_fallback(net, Int8Static(), torch.rand(8, 4), torch.rand(8, 4),
        ...                     target_disagreements=0)
        >>> r.disagreements_after
        0
    """
    check_inputs(model, scheme, calibration, probe)
    _check_limits(max_float_layers, max_float_params, target_disagreements)
    table = weighted_layers(model, probe)
    check_float_layers(scheme.float_layers, table)
    order = [r["name"] for r in table]
    share = {r["name"]: r["param_share"] for r in table}
    reference = labels(model, probe)
    chosen = set(scheme.float_layers)

    def with_float(names: set[str]) -> Any:
        return dataclasses.replace(scheme, float_layers=tuple(n for n in order if n in names))

    def measure(names: set[str]) -> int:
        return count(model, with_float(names), calibration, probe, reference)

    current = before = measure(chosen)
    steps: list[dict[str, Any]] = []
    while True:
        if target_disagreements is not None and current <= target_disagreements:
            stopped = "target met"
            break
        if max_float_layers is not None and len(chosen) >= max_float_layers:
            stopped = "max_float_layers reached"
            break
        in_float = sum(share[n] for n in chosen)
        candidates = [n for n in order if n not in chosen]
        if not candidates:
            stopped = "all layers in float"
            break
        if max_float_params is not None:
            # A tiny tolerance so a layer whose share equals the limit exactly is allowed.
            candidates = [n for n in candidates if in_float + share[n] <= max_float_params + 1e-12]
            if not candidates:
                stopped = "max_float_params reached"
                break
        counts = {n: measure(chosen | {n}) for n in candidates}
        best = min(candidates, key=lambda n: (counts[n], share[n], order.index(n)))
        if counts[best] >= current:
            stopped = "no layer helps"
            break
        chosen.add(best)
        current = counts[best]
        steps.append(
            {
                "layer": best,
                "disagreements_after": current,
                "params_in_float_share": in_float + share[best],
            }
        )
    final = with_float(chosen)
    return FallbackResult(final.float_layers, steps, final, before, stopped)


def _check_limits(
    max_float_layers: object, max_float_params: object, target_disagreements: object
) -> None:
    if max_float_layers is None and max_float_params is None and target_disagreements is None:
        raise MitigateError(
            "layer fallback needs a limit: max_float_layers, max_float_params or "
            "target_disagreements"
        )
    for name, value in (
        ("max_float_layers", max_float_layers),
        ("target_disagreements", target_disagreements),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0
        ):
            raise MitigateError(f"{name} must be an int >= 0, got {value!r}")
    if max_float_params is not None and (
        isinstance(max_float_params, bool)
        or not isinstance(max_float_params, numbers.Real)
        or not 0.0 < float(max_float_params) <= 1.0
    ):
        raise MitigateError(
            f"max_float_params must be a share in (0, 1] such as 0.1, got {max_float_params!r}"
        )
