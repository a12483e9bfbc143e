"""Which calibration settings ``mitigate calibrate`` runs.

The seven factors have 3 x 4 x 3 x 3 x 3 x 2 x 3 = 1,944 combinations by default: too many
to run over seeds. The default design (``grid = "oat"``) is **one factor at a time** around a
baseline — the calibration ``evaluate`` uses (``[quantization] calibration_*`` and
``[calibration] scheme``) — so every factor's effect is measured against the same reference:

- the baseline, then each listed level of each factor with every other factor at baseline;
- ``extra``: a few named interactions (partial preset names over the baseline, e.g.
  ``shifted-qnnpack``: does the shifted source still matter once the engine is fixed?);
- ``combine``: after those finish, the setting that takes, for every factor, the level that
  lowered mean worst-group disagreement most (if any did): do the one-factor gains add up?

``grid = "full"`` runs the full factorial of the listed levels instead (plus ``extra``).
Sizes above what a source can give are clipped to it (and the report says so); settings that
coincide after clipping run once, and so does a sampling that would draw every candidate (it
only reorders the same inputs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from mitigate.calibration.settings import (
    ENGINES,
    FACTORS,
    GRANULARITIES,
    OBSERVERS,
    SAMPLINGS,
    SOURCES,
    Setting,
    check_setting,
    parse_setting,
    setting_of_scheme,
)
from mitigate.config import Config
from mitigate.errors import MitigateError, unknown_choice

__all__ = ["GRIDS", "Planned", "baseline_setting", "check_sweep", "plan_settings"]

GRIDS = ("oat", "full")
_LEVELS = {  # factor -> [calibration] list naming its levels
    "source": "sources",
    "size": "sizes",
    "sampling": "samplings",
    "augment": "augmentations",
    "observer": "observers",
    "granularity": "granularities",
    "engine": "engines",
}
_CHOICES = {
    "sources": SOURCES,
    "samplings": SAMPLINGS,
    "observers": OBSERVERS,
    "granularities": GRANULARITIES,
    "engines": ENGINES,
}


@dataclass(frozen=True)
class Planned:
    """One row of the sweep.

    Attributes:
        setting: what runs.
        factor: ``baseline``, the factor varied (``source``, ``size``, ...), ``extra``,
            ``combined`` or ``grid``.
        level: the varied factor's value as written in the config (``-`` for the baseline).
        notes: what changed on the way (a clipped size, a merged duplicate).
    """

    setting: Setting
    factor: str
    level: str
    notes: tuple[str, ...] = ()


def baseline_setting(config: Config) -> Setting:
    """The calibration ``evaluate`` uses by default: ``[quantization] calibration_*`` with the
    observer, granularity and engine of ``[calibration] scheme``."""
    from mitigate.quantization import Int8Static, parse_scheme

    scheme = parse_scheme(config.calibration.scheme)
    if not isinstance(scheme, Int8Static):
        raise MitigateError(
            f"calibration.scheme must be a static int8 scheme (int8[:options]), "
            f"got {config.calibration.scheme!r}"
        )
    q = config.quantization
    return setting_of_scheme(
        scheme,
        source=q.calibration_source,
        size=q.calibration_size,
        sampling=q.calibration_sampling,
    )


def check_sweep(config: Config) -> Setting:
    """Validate ``[calibration]`` before any work; return the baseline setting."""
    from mitigate.models import model_modality
    from mitigate.selectors import score_names

    if model_modality(config.model.arch) == "text":
        # static int8 has no calibration for LSTM / GRU layers (they quantize dynamically)
        raise MitigateError(
            f"calibrate sweeps static int8 calibration, which does not apply to "
            f"{config.model.arch!r}; its schemes (int8-dynamic, fp16, bf16, int4-weight) need "
            f"no calibration data: measure them with mitigate evaluate"
        )
    c = config.calibration
    if c.seeds < 1:
        raise MitigateError(f"calibration.seeds must be >= 1, got {c.seeds}")
    if c.grid not in GRIDS:
        raise unknown_choice("calibration grid", c.grid, GRIDS)
    fp_only = score_names(fp_only=True)
    if c.selector not in fp_only:
        raise unknown_choice(
            "calibration selector (scores of the FP model only)", c.selector, fp_only
        )
    for key, choices in _CHOICES.items():
        for value in getattr(c, key):
            if value not in choices:
                raise unknown_choice(f"calibration {key[:-1]}", value, choices)
    for size in c.sizes:
        if size < 1:
            raise MitigateError(f"calibration sizes must be >= 1, got {size}")
    for copies in c.augmentations:
        if copies < 0:
            raise MitigateError(f"calibration augmentations are copies >= 0, got {copies}")
    baseline = baseline_setting(config)
    for name in c.extra:
        parse_setting(name, baseline)
    return baseline


def plan_settings(config: Config, data: Any) -> list[Planned]:
    """The settings to run, baseline first, sizes clipped to what ``data`` allows."""
    from mitigate.calibration.inputs import available_inputs, candidates_hold

    c = config.calibration
    baseline = check_sweep(config)
    candidates: list[Planned] = [Planned(baseline, "baseline", "-")]
    if c.grid == "oat":
        for factor in FACTORS:
            for level in getattr(c, _LEVELS[factor]):
                if level != getattr(baseline, factor):
                    setting = check_setting(replace(baseline, **{factor: level}))
                    candidates.append(Planned(setting, factor, _shown(factor, level)))
    else:
        for values in itertools.product(*(getattr(c, _LEVELS[f]) for f in FACTORS)):
            setting = check_setting(Setting(**dict(zip(FACTORS, values, strict=True))))
            candidates.append(Planned(setting, "grid", "-"))
    candidates += [Planned(parse_setting(name, baseline), "extra", name) for name in c.extra]

    planned: dict[str, Planned] = {}
    merged: dict[str, list[str]] = {}
    for item in candidates:
        notes = []
        most = available_inputs(config, data, item.setting.source)
        setting = item.setting
        hold = candidates_hold(setting.source)
        clipped = setting.size > most
        if clipped:
            setting = replace(setting, size=most)
        why = f" (clipped to {most})" if clipped else ""
        if setting.size == most and setting.sampling != "random" and setting.source != "selected":
            # every candidate is used: sampling only reorders the same calibration inputs
            setting = replace(setting, sampling="random")
            why = f" (same inputs: all {most} that {hold})"
        if setting.name in planned:
            merged.setdefault(setting.name, []).append(f"{item.factor} {item.level}{why}")
            continue
        if clipped:
            notes.append(f"size {item.setting.size} clipped to {most}: {hold} {most}")
        planned[setting.name] = Planned(setting, item.factor, item.level, tuple(notes))
    for name, labels in merged.items():
        note = "also stands for " + ", ".join(labels)
        planned[name] = replace(planned[name], notes=(*planned[name].notes, note))
    return list(planned.values())


def _shown(factor: str, level: object) -> str:
    return f"aug{level}" if factor == "augment" else str(level)
