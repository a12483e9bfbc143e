"""Layer fallback: keep the few layers that cause most disagreements in float.

Two searches share one measurement (quantize with a set of layers in float, count probe
disagreements against the FP labels):

- :func:`greedy_fallback` adds one layer at a time, the one that removes most, and
  re-measures from there, because layers interact: the second-best layer on its own is not
  always the best second step. It is cheap in measurements and blind to cost: on a real model
  it kept a layer holding 78% of all parameters in float.
- :func:`search_fallback` finds the best set of float layers *within a budget* of parameters,
  MACs and layers: every subset within the budget when there are few candidate layers, a beam
  search over set size otherwise. Greedy by removal is neither cheap nor optimal: the best
  single layer need not belong to the best pair.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from mitigate.quantization.schemes import Int8Static

__all__ = [
    "FallbackResult",
    "FallbackSearchResult",
    "greedy_fallback",
    "parse_share",
    "search_fallback",
]

# A tiny tolerance so a layer whose share equals the limit exactly is allowed.
_TOLERANCE = 1e-12


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
    scheme: Int8Static
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


@dataclass(frozen=True)
class FallbackSearchResult:
    """What :func:`search_fallback` found.

    Attributes:
        scheme: the input scheme with ``float_layers`` set.
        float_layers: every layer the final scheme keeps in float, in module order (those the
            input scheme already kept, plus ``added``).
        added: the layers the search put in float, in module order (may be empty).
        candidates: the layers that fit the budget on their own (with the input scheme's float
            layers), in module order; only these were searched.
        disagreements_before: probe disagreements of the input scheme.
        disagreements_after: probe disagreements of ``scheme``; never more than ``before``.
        float_param_share: share of all parameters in ``float_layers``.
        float_mac_share: share of the weighted layers' MACs in ``float_layers``.
        measured: how many layer sets were quantized and counted (each once).
        method: ``"exhaustive"`` (every set within the budget) or ``"beam"``.
        max_float_params: the parameter-share budget (``None``: no limit).
        max_float_macs: the MAC-share budget (``None``: no limit).
        max_float_layers: the layer-count budget (``None``: no limit).
        exhaustive_up_to: the most candidates searched exhaustively.
        beam_width: sets kept per size by the beam search.
    """

    scheme: Int8Static
    float_layers: tuple[str, ...]
    added: tuple[str, ...]
    candidates: tuple[str, ...]
    disagreements_before: int
    disagreements_after: int
    float_param_share: float
    float_mac_share: float
    measured: int
    method: str
    max_float_params: float | None
    max_float_macs: float | None
    max_float_layers: int | None
    exhaustive_up_to: int
    beam_width: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the scheme as its label, tuples as lists."""
        from mitigate.quantization import scheme_label

        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["scheme"] = scheme_label(self.scheme)
        for key in ("float_layers", "added", "candidates"):
            out[key] = list(out[key])
        return out


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
    scheme: Int8Static | str,
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
    :func:`search_fallback` looks for the best set within a budget instead.

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
    scheme = check_inputs(model, scheme, calibration, probe)
    _check_limits(max_float_layers, max_float_params, target_disagreements)
    table = _layer_rows(model, scheme, probe)
    order = [r["name"] for r in table]
    share = {r["name"]: r["param_share"] for r in table}
    measure = _counter(model, scheme, calibration, probe, order)
    chosen, steps, before, stopped = _greedy(
        order,
        share,
        measure,
        set(scheme.float_layers),
        max_float_layers=max_float_layers,
        max_float_params=max_float_params,
        target_disagreements=target_disagreements,
    )
    final = _with_float(scheme, order, chosen)
    return FallbackResult(final.float_layers, steps, final, before, stopped)


def search_fallback(
    model: nn.Module,
    scheme: Int8Static | str,
    calibration: Tensor,
    probe: Tensor,
    *,
    max_float_params: float | None = 0.1,
    max_float_macs: float | None = 0.1,
    max_float_layers: int | None = None,
    exhaustive_up_to: int = 10,
    beam_width: int = 4,
) -> FallbackSearchResult:
    """Find the set of layers to keep in float that leaves the fewest probe disagreements
    within a budget of parameters, MACs and layers.

    Only layers that fit the budget on their own are candidates. With at most
    ``exhaustive_up_to`` of them every subset within the budget is measured (by increasing
    size; a set over budget is never extended, since its supersets cannot fit). With more, a
    beam search over set size keeps the ``beam_width`` best sets of each size, extends each by
    one candidate, and stops when no extension fits or no set of the new size beats the best
    so far. The empty set (the input scheme as is) is always measured, so the result never has
    more disagreements than the input scheme. Each set costs one quantization.

    The best set has the fewest disagreements; ties go to the smaller parameter share, then
    the smaller MAC share, then fewer layers, then the set that comes first in module order.
    The result is deterministic for one machine (int8 kernels differ across CPUs).

    Args:
        model: the float32 classifier (not modified).
        scheme: an :class:`~mitigate.quantization.Int8Static`; layers it already keeps in
            float stay there and count toward the budget.
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.
        max_float_params: at most this share of all parameters in float layers, in ``(0, 1]``,
            or ``None`` for no limit (``param_share`` of :func:`mitigate.models.layer_table`).
        max_float_macs: at most this share of the weighted layers' MACs in float layers, in
            ``(0, 1]``, or ``None`` for no limit (``mac_share``).
        max_float_layers: at most this many layers in float (``>= 0``), or ``None``.
        exhaustive_up_to: search exhaustively up to this many candidate layers (``>= 0``).
        beam_width: sets of each size the beam search keeps (``>= 1``).

    Returns:
        A :class:`FallbackSearchResult`; ``result.scheme`` quantizes with the set in float.

    Raises:
        MitigateError: every budget ``None``, a budget or search setting out of range, a
            scheme that already keeps more in float than the budget allows, or the inputs
            that :func:`~mitigate.mitigation.layer_sensitivity` refuses.

    Example:
        >>> import torch
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> r = search_fallback(net, Int8Static(), torch.rand(8, 4), torch.rand(8, 4),
        ...                     max_float_params=None, max_float_macs=None, max_float_layers=1)
        >>> r.method, r.measured, r.disagreements_after <= r.disagreements_before
        ('exhaustive', 2, True)
    """
    scheme = check_inputs(model, scheme, calibration, probe)
    _check_budget(max_float_params, max_float_macs, max_float_layers, exhaustive_up_to, beam_width)
    table = _layer_rows(model, scheme, probe)
    order = [r["name"] for r in table]
    params = {r["name"]: r["param_share"] for r in table}
    macs = {r["name"]: r["mac_share"] for r in table}
    base = frozenset(scheme.float_layers)
    _check_base_fits(order, params, macs, base, max_float_params, max_float_macs, max_float_layers)
    measure = _counter(model, scheme, calibration, probe, order)
    found = _best_subset(
        order,
        params,
        macs,
        lambda added: measure(base | added),
        base=base,
        max_float_params=max_float_params,
        max_float_macs=max_float_macs,
        max_float_layers=max_float_layers,
        exhaustive_up_to=exhaustive_up_to,
        beam_width=beam_width,
    )
    final = _with_float(scheme, order, base | found.chosen)
    return FallbackSearchResult(
        scheme=final,
        float_layers=final.float_layers,
        added=tuple(n for n in order if n in found.chosen),
        candidates=found.candidates,
        disagreements_before=found.counts[frozenset()],
        disagreements_after=found.counts[found.chosen],
        float_param_share=_share(params, base | found.chosen),
        float_mac_share=_share(macs, base | found.chosen),
        measured=len(found.counts),
        method=found.method,
        max_float_params=max_float_params,
        max_float_macs=max_float_macs,
        max_float_layers=max_float_layers,
        exhaustive_up_to=exhaustive_up_to,
        beam_width=beam_width,
    )


# --- shared by both searches ---------------------------------------------------------------


def _layer_rows(model: nn.Module, scheme: Int8Static, probe: Tensor) -> list[dict[str, Any]]:
    """The weighted layers' table rows, after checking the scheme's float layers are among them."""
    table = weighted_layers(model, probe)
    check_float_layers(scheme.float_layers, table)
    return table


def _with_float(scheme: Int8Static, order: Sequence[str], names: Iterable[str]) -> Int8Static:
    """``scheme`` keeping exactly ``names`` in float, in module order."""
    names = set(names)
    return dataclasses.replace(scheme, float_layers=tuple(n for n in order if n in names))


def _counter(
    model: nn.Module, scheme: Int8Static, calibration: Tensor, probe: Tensor, order: Sequence[str]
) -> Callable[[Iterable[str]], int]:
    """A function: layer names kept in float -> probe disagreements against the FP labels
    (computed once, here)."""
    reference = labels(model, probe)

    def measure(names: Iterable[str]) -> int:
        return count(model, _with_float(scheme, order, names), calibration, probe, reference)

    return measure


def _share(shares: Mapping[str, float], names: Iterable[str]) -> float:
    """Sum of the layers' shares, exactly rounded, so it does not depend on set order."""
    return math.fsum(shares[n] for n in names)


# --- greedy --------------------------------------------------------------------------------


def _greedy(
    order: Sequence[str],
    share: Mapping[str, float],
    measure: Callable[[set[str]], int],
    chosen: set[str],
    *,
    max_float_layers: int | None,
    max_float_params: float | None,
    target_disagreements: int | None,
) -> tuple[set[str], list[dict[str, Any]], int, str]:
    """The greedy loop on layer names: (float layers, steps, count before, why it stopped)."""
    chosen = set(chosen)
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
            candidates = [
                n for n in candidates if in_float + share[n] <= max_float_params + _TOLERANCE
            ]
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
    return chosen, steps, before, stopped


# --- search within a budget ----------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    chosen: frozenset[str]  # layers added to the base
    counts: dict[frozenset[str], int]  # every set measured, once
    candidates: tuple[str, ...]
    method: str


def _best_subset(
    order: Sequence[str],
    params: Mapping[str, float],
    macs: Mapping[str, float],
    measure: Callable[[frozenset[str]], int],
    *,
    base: frozenset[str] = frozenset(),
    max_float_params: float | None = None,
    max_float_macs: float | None = None,
    max_float_layers: int | None = None,
    exhaustive_up_to: int = 10,
    beam_width: int = 4,
) -> _Found:
    """The search itself, on layer names: ``measure`` maps a set of layers added to ``base``
    to its disagreement count; each set is measured at most once. Trusts its inputs."""
    index = {n: i for i, n in enumerate(order)}
    counts: dict[frozenset[str], int] = {}

    def fits(added: frozenset[str]) -> bool:
        names = base | added
        return (
            (max_float_layers is None or len(names) <= max_float_layers)
            and (max_float_params is None or _share(params, names) <= max_float_params + _TOLERANCE)
            and (max_float_macs is None or _share(macs, names) <= max_float_macs + _TOLERANCE)
        )

    def key(added: frozenset[str]) -> tuple:  # measures a set the first time it is ranked
        if added not in counts:
            counts[added] = measure(added)
        names = base | added
        positions = tuple(sorted(index[n] for n in added))
        return (counts[added], _share(params, names), _share(macs, names), len(added), positions)

    candidates = tuple(n for n in order if n not in base and fits(frozenset({n})))
    best = frozenset()
    key(best)
    if len(candidates) <= exhaustive_up_to:
        method = "exhaustive"
        level = [best]
        while level:  # sets of size k within budget -> those of size k + 1
            level = [
                s | {n}
                for s in level
                for n in candidates
                if index[n] > max((index[m] for m in s), default=-1) and fits(s | {n})
            ]
            for s in level:
                best = min(best, s, key=key)
    else:
        method = "beam"
        beam = [best]
        while True:
            # Deduped in a fixed order (a dict, not a set), so sets are measured in module order.
            extended = dict.fromkeys(s | {n} for s in beam for n in candidates if n not in s)
            grown = sorted((s for s in extended if fits(s)), key=key)
            if not grown or key(grown[0]) >= key(best):
                break
            best, beam = grown[0], grown[:beam_width]
    return _Found(best, counts, candidates, method)


# --- validation ----------------------------------------------------------------------------


def _check_count(name: str, value: object, *, minimum: int = 0) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
    ):
        raise MitigateError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_share(name: str, value: object) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 < float(value) <= 1.0
    ):
        raise MitigateError(f"{name} must be a share in (0, 1] such as 0.1, got {value!r}")


def _check_limits(
    max_float_layers: object, max_float_params: object, target_disagreements: object
) -> None:
    if max_float_layers is None and max_float_params is None and target_disagreements is None:
        raise MitigateError(
            "layer fallback needs a limit: max_float_layers, max_float_params or "
            "target_disagreements"
        )
    _check_count("max_float_layers", max_float_layers)
    _check_count("target_disagreements", target_disagreements)
    _check_share("max_float_params", max_float_params)


def _check_budget(
    max_float_params: object,
    max_float_macs: object,
    max_float_layers: object,
    exhaustive_up_to: object,
    beam_width: object,
) -> None:
    if max_float_params is None and max_float_macs is None and max_float_layers is None:
        raise MitigateError(
            "the fallback search needs a budget: max_float_params, max_float_macs or "
            "max_float_layers"
        )
    _check_share("max_float_params", max_float_params)
    _check_share("max_float_macs", max_float_macs)
    _check_count("max_float_layers", max_float_layers)
    for name, value, minimum in (
        ("exhaustive_up_to", exhaustive_up_to, 0),
        ("beam_width", beam_width, 1),
    ):
        if value is None:
            raise MitigateError(f"{name} must be an int >= {minimum}, got None")
        _check_count(name, value, minimum=minimum)


def _check_base_fits(
    order: Sequence[str],
    params: Mapping[str, float],
    macs: Mapping[str, float],
    base: frozenset[str],
    max_float_params: float | None,
    max_float_macs: float | None,
    max_float_layers: int | None,
) -> None:
    """The scheme's own float layers must fit the budget: the search only adds layers."""
    names = ", ".join(n for n in order if n in base)
    for what, used, limit in (
        ("parameters", _share(params, base), max_float_params),
        ("MACs", _share(macs, base), max_float_macs),
    ):
        if limit is not None and used > limit + _TOLERANCE:
            raise MitigateError(
                f"the scheme already keeps {used:.1%} of {what} in float ({names}), over the "
                f"budget of {limit:.1%}; raise the budget or keep fewer layers in float"
            )
    if max_float_layers is not None and len(base) > max_float_layers:
        raise MitigateError(
            f"the scheme already keeps {len(base)} layers in float ({names}), over "
            f"max_float_layers={max_float_layers}; raise it or keep fewer layers in float"
        )
