"""Search the static-int8 settings the backend offers, scored by disagreements on a probe.

The grid is engine x activation range (reduced 7-bit or full 8-bit) x per-channel or
per-tensor weights x activation observer. Every combination is valid in torch 2.13, including
two worth knowing about:

- **x86 with full-range activations** is allowed but may *saturate*: fbgemm multiplies u8
  activations by s8 weights and adds pairs into int16 (``vpmaddubsw``) on CPUs without VNNI
  instructions, and 8-bit activations can overflow that; torch's reduced range (7 bits) is
  the guard. The search measures whatever this machine does, so the result is honest for
  this CPU; a deployment CPU without VNNI can behave differently.
- **qnnpack's default is the full range**; reduced range there only loses resolution.

Settings equal to an engine default are written the canonical way (``reduce_range=None``),
so the winner's :func:`~mitigate.quantization.scheme_label` reads like a name a user would
type. Ties are broken toward the base scheme: fewest disagreements, then fewest settings
changed from the base, then grid order (engines, ranges, granularity, observers as given).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from mitigate.errors import MitigateError, unknown_choice
from mitigate.mitigation._measure import (
    check_float_layers,
    check_inputs,
    count,
    labels,
    weighted_layers,
)
from mitigate.quantization.schemes import ENGINES, OBSERVERS, Int8Static

__all__ = ["SettingsResult", "search_settings"]

_SETTINGS = ("engine", "reduce_range", "per_channel", "observer")


@dataclass(frozen=True)
class SettingsResult:
    """What :func:`search_settings` found.

    Attributes:
        best: the winning scheme (the base's ``float_layers`` kept).
        table: one row per setting, best first: ``label``, ``engine``, ``reduce_range``
            (effective), ``per_channel``, ``observer``, ``changed`` (settings that differ
            from the base) and ``disagreements`` on the probe.
        base_disagreements: the base scheme's count on the probe.
    """

    best: Int8Static
    table: list[dict[str, Any]]
    base_disagreements: int

    @property
    def best_label(self) -> str:
        return self.table[0]["label"]

    @property
    def best_disagreements(self) -> int:
        return self.table[0]["disagreements"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "best": self.best_label,
            "best_disagreements": self.best_disagreements,
            "base_disagreements": self.base_disagreements,
            "table": [dict(r) for r in self.table],
        }


def search_settings(
    model: nn.Module,
    base: Int8Static,
    calibration: Tensor,
    probe: Tensor,
    *,
    engines: Sequence[str] = ENGINES,
    reduce_range: Sequence[bool] = (True, False),
    per_channel: Sequence[bool] = (True, False),
    observers: Sequence[str] = OBSERVERS,
) -> SettingsResult:
    """Quantize with every combination of settings and keep the one that disagrees least.

    The base scheme is always measured (first in grid order), even when its settings are not
    on the grid, so the search never returns something worse than what it started from.
    Costs one quantization and one probe pass per combination (24 for the full grid).

    Args:
        model: the float32 classifier (not modified).
        base: the :class:`~mitigate.quantization.Int8Static` to improve; its
            ``float_layers`` are kept in every combination.
        calibration: ``float [N, ...]`` calibration inputs.
        probe: ``float [K, ...]`` inputs to count disagreements on.
        engines: from :data:`~mitigate.quantization.ENGINES`.
        reduce_range: ``True`` (7-bit activations), ``False`` (8-bit), or both.
        per_channel: ``True`` (one weight scale per output channel), ``False``, or both.
        observers: from :data:`~mitigate.quantization.OBSERVERS`.

    Returns:
        A :class:`SettingsResult`; ``result.best`` is the winner, named by
        ``result.best_label``.

    Raises:
        MitigateError: an unknown engine or observer, an empty or non-bool option list, or
            the inputs :func:`~mitigate.mitigation.layer_sensitivity` refuses.

    Example:
        >>> import torch
        >>> from mitigate.quantization import Int8Static
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> r = search_settings(net, Int8Static(), torch.rand(32, 4), torch.rand(8, 4),
        ...                     engines=("qnnpack",), observers=("minmax",))
        >>> len(r.table), r.best_disagreements <= r.base_disagreements
        (5, True)
    """
    check_inputs(model, base, calibration, probe)
    check_float_layers(base.float_layers, weighted_layers(model, probe))
    grid = _grid(base, engines, reduce_range, per_channel, observers)
    reference = labels(model, probe)
    rows = []
    for position, scheme in enumerate(grid):
        changed = [s for s in _SETTINGS if _effective(scheme, s) != _effective(base, s)]
        rows.append(
            {
                "label": _label(scheme),
                "engine": scheme.engine,
                "reduce_range": scheme.effective_reduce_range,
                "per_channel": scheme.per_channel,
                "observer": scheme.observer,
                "changed": changed,
                "disagreements": count(model, scheme, calibration, probe, reference),
                "_key": (len(changed), position),
                "_scheme": scheme,
            }
        )
    base_count = rows[0]["disagreements"]  # the base is first in the grid
    rows.sort(key=lambda r: (r["disagreements"], *r["_key"]))
    best = rows[0]["_scheme"]
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return SettingsResult(best, table, base_count)


def _grid(
    base: Int8Static,
    engines: Sequence[str],
    reduce_range: Sequence[bool],
    per_channel: Sequence[bool],
    observers: Sequence[str],
) -> list[Any]:
    """The base, then every combination in grid order; duplicates of the base dropped."""
    engines = _names(engines, ENGINES, "engine")
    observers = _names(observers, OBSERVERS, "observer")
    reduce_range = _bools(reduce_range, "reduce_range")
    per_channel = _bools(per_channel, "per_channel")
    grid = [_canonical(base)]
    for engine, reduce, channel, observer in itertools.product(
        engines, reduce_range, per_channel, observers
    ):
        scheme = _canonical(
            replace(
                base, engine=engine, reduce_range=reduce, per_channel=channel, observer=observer
            )
        )
        if scheme not in grid:
            grid.append(scheme)
    return grid


def _canonical(scheme: Int8Static) -> Int8Static:
    # reduce_range equal to the engine default is spelled None, so equal settings compare equal
    # and the label is the short one a user would type.
    if scheme.reduce_range is not None and scheme.reduce_range == (scheme.engine == "x86"):
        return replace(scheme, reduce_range=None)
    return scheme


def _effective(scheme: Int8Static, setting: str) -> object:
    return scheme.effective_reduce_range if setting == "reduce_range" else getattr(scheme, setting)


def _label(scheme: Int8Static) -> str:
    from mitigate.quantization import scheme_label

    return scheme_label(scheme)


def _names(values: Sequence[str], valid: Sequence[str], kind: str) -> list[str]:
    if isinstance(values, str) or not values:
        raise MitigateError(f"{kind}s must be a non-empty list; valid choices: {', '.join(valid)}")
    for value in values:
        if value not in valid:
            raise unknown_choice(f"int8 {kind}", value, valid)
    return list(dict.fromkeys(values))


def _bools(values: Sequence[bool], name: str) -> list[bool]:
    if (
        isinstance(values, (str, bool))
        or not values
        or not all(isinstance(v, bool) for v in values)
    ):
        raise MitigateError(f"{name} must be a non-empty list of True/False, got {values!r}")
    return list(dict.fromkeys(values))
