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
type.

**A change must earn its place.** The probe is a sample, and a setting can cost what
quantization bought: on an x86 server, qnnpack's kernels ran several times slower than
fbgemm's at the same probe count. So the winner is not simply the lowest count: it is the
setting with the fewest changes from the base among those whose disagreements are *not
significantly more* than the lowest count's (a one-sided paired McNemar test at 95% on the
probe inputs where the two differ), then the lower count, then grid order (engines, ranges,
granularity, observers as given). ``significance=None`` keeps the plain lowest count.

For ``ort-int8`` the grid is ONNX Runtime's own settings: calibration method x activation
type (u8 / s8) x 7-bit weights x per-channel weights, so the winner is a setting that runtime
ships.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from mitigate.errors import MitigateError, unknown_choice
from mitigate.mitigation._measure import (
    check_float_layers,
    check_inputs,
    disagreeing,
    labels,
    weighted_layers,
)
from mitigate.quantization.schemes import (
    ENGINES,
    OBSERVERS,
    ORT_ACTIVATIONS,
    ORT_CALIBRATIONS,
    Int8Static,
    OrtInt8,
)

__all__ = ["SettingsResult", "search_settings"]

_SETTINGS = ("engine", "reduce_range", "per_channel", "observer")
_ORT_SETTINGS = ("calibration", "activations", "reduce_range", "per_channel")
# One-sided normal quantiles of the paired test, for the significance levels one would pick.
_Z = {0.1: 1.2816, 0.05: 1.6449, 0.01: 2.3263}


@dataclass(frozen=True)
class SettingsResult:
    """What :func:`search_settings` found.

    Attributes:
        best: the winning scheme (the base's ``float_layers`` kept).
        table: one row per setting, the winner first, then by disagreements: ``label``,
            ``engine``, ``reduce_range`` (effective), ``per_channel``, ``observer``,
            ``changed`` (settings that differ from the base), ``disagreements`` on the probe
            and ``tied`` (not significantly worse than the lowest count; see the module
            docstring).
        base_disagreements: the base scheme's count on the probe.
    """

    best: Int8Static | OrtInt8
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
    base: Int8Static | OrtInt8 | str,
    calibration: Tensor,
    probe: Tensor,
    *,
    engines: Sequence[str] = ENGINES,
    reduce_range: Sequence[bool] = (True, False),
    per_channel: Sequence[bool] = (True, False),
    observers: Sequence[str] = OBSERVERS,
    calibrations: Sequence[str] = ORT_CALIBRATIONS,
    activations: Sequence[str] = ORT_ACTIVATIONS,
    significance: float | None = 0.05,
) -> SettingsResult:
    """Quantize with every combination of settings and keep the one that disagrees least,
    changing no more settings than the probe can justify.

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
        calibrations: for an ``ort-int8`` base (instead of engines and observers), from
            :data:`~mitigate.quantization.ORT_CALIBRATIONS`.
        activations: for an ``ort-int8`` base, ``u8``, ``s8`` or both.
        significance: the paired test's level (0.1, 0.05 or 0.01) below which a count
            higher than the lowest is a real difference; among settings within it the one
            with the fewest changes wins. ``None``: the lowest count wins outright.

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
    base = check_inputs(model, base, calibration, probe)
    if significance is not None and significance not in _Z:
        raise MitigateError(
            f"significance must be one of {', '.join(map(str, _Z))} or None, got {significance!r}"
        )
    check_float_layers(base.float_layers, weighted_layers(model, probe))
    if isinstance(base, OrtInt8):
        grid = _ort_grid(base, calibrations, activations, reduce_range, per_channel)
        settings = _ORT_SETTINGS
    else:
        grid, settings = _grid(base, engines, reduce_range, per_channel, observers), _SETTINGS
    reference = labels(model, probe)
    rows = []
    for position, scheme in enumerate(grid):
        changed = [s for s in settings if _effective(scheme, s) != _effective(base, s)]
        flags = disagreeing(model, scheme, calibration, probe, reference)
        rows.append(
            {
                "label": _label(scheme),
                **{s: _effective(scheme, s) for s in settings},
                "changed": changed,
                "disagreements": int(flags.sum()),
                "_flags": flags,
                "_key": (len(changed), position),
                "_scheme": scheme,
            }
        )
    base_count = rows[0]["disagreements"]  # the base is first in the grid
    rows.sort(key=lambda r: (r["disagreements"], *r["_key"]))
    lowest = rows[0]["_flags"]
    for row in rows:
        row["tied"] = row is rows[0] or (
            significance is not None
            and _not_significantly_more(row["_flags"], lowest, _Z[significance])
        )
    # the fewest changes among the tied, then the lowest count, then grid order
    winner = min((r for r in rows if r["tied"]), key=lambda r: (r["_key"][0], r["disagreements"]))
    rows.remove(winner)
    rows.insert(0, winner)
    best = winner["_scheme"]
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return SettingsResult(best, table, base_count)


def _grid(
    base: Int8Static,
    engines: Sequence[str],
    reduce_range: Sequence[bool],
    per_channel: Sequence[bool],
    observers: Sequence[str],
) -> list[Int8Static]:
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


def _ort_grid(
    base: OrtInt8,
    calibrations: Sequence[str],
    activations: Sequence[str],
    reduce_range: Sequence[bool],
    per_channel: Sequence[bool],
) -> list[OrtInt8]:
    """ORT's settings: the base, then every combination; duplicates of the base dropped."""
    calibrations = _names(calibrations, ORT_CALIBRATIONS, "calibration")
    activations = _names(activations, ORT_ACTIVATIONS, "activation")
    grid = [base]
    for method, act, reduce, channel in itertools.product(
        calibrations,
        activations,
        _bools(reduce_range, "reduce_range"),
        _bools(per_channel, "per_channel"),
    ):
        scheme = replace(
            base, calibration=method, activations=act, reduce_range=reduce, per_channel=channel
        )
        if scheme not in grid:
            grid.append(scheme)
    return grid


def _not_significantly_more(flags: Tensor, lowest: Tensor, z: float) -> bool:
    """One-sided paired McNemar (normal form): are the extra disagreements of ``flags`` over
    ``lowest`` (both ``bool [N]`` on one probe) within chance at quantile ``z``?"""
    worse = int((flags & ~lowest).sum())  # inputs only this setting gets wrong
    better = int((~flags & lowest).sum())
    return worse - better <= z * math.sqrt(worse + better)


def _canonical(scheme: Int8Static) -> Int8Static:
    # reduce_range equal to the engine default is spelled None, so equal settings compare equal
    # and the label is the short one a user would type.
    if scheme.reduce_range is not None and scheme.reduce_range == (scheme.engine == "x86"):
        return replace(scheme, reduce_range=None)
    return scheme


def _effective(scheme: Int8Static | OrtInt8, setting: str) -> object:
    if setting == "reduce_range" and isinstance(scheme, Int8Static):
        return scheme.effective_reduce_range
    return getattr(scheme, setting)


def _label(scheme: Int8Static | OrtInt8) -> str:
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
