"""Range checks of a configuration's numbers and lists, where a config enters.

Names (schemes, strategies, selectors, shift families) are checked against their registries by
the code that owns them; this module checks what no registry can: a seed numpy cannot take, a
batch size of 0, an empty list that would run nothing, a share above 1. Each failure is one
:class:`~mitigate.errors.MitigateError` line naming the key, the value and what is allowed, so
``mitigate`` exits 2 before any work instead of failing (or silently doing less) later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from mitigate.errors import MitigateError

if TYPE_CHECKING:
    from mitigate.config import Config

__all__ = ["MAX_SEED", "check_config"]

# numpy's generators take seeds in [0, 2**32); every seed a run derives must fit.
MAX_SEED = 2**32 - 1


def check_config(config: Config, where: str) -> Config:
    """``config`` unchanged if every number and list in it is usable, else a one-line error
    naming the first key that is not (``where``: the file or "command line")."""
    c = config
    last_seed = c.seed + max(c.compare.seeds, c.calibration.seeds, 1) - 1
    checks: list[tuple[str, object, Callable[[object], bool], str]] = [
        ("seed", c.seed, lambda v: 0 <= v <= MAX_SEED, f"an integer in 0..{MAX_SEED}"),
        (
            "seed",
            last_seed,
            lambda v: v <= MAX_SEED,
            f"such that seed + seeds - 1 <= {MAX_SEED} (the last seed of compare or calibrate)",
        ),
        ("eval.batch_size", c.eval.batch_size, _at_least(1), "an integer >= 1"),
        *(
            (f"data.{k}", getattr(c.data, k), _at_least(0), "an integer >= 0")
            for k in ("train", "val", "calibration", "pool", "natural_size")
        ),
        ("data.test", c.data.test, _at_least(1), "an integer >= 1"),
        ("data.max_len", c.data.max_len, _at_least(1), "an integer >= 1"),
        ("data.min_freq", c.data.min_freq, _at_least(1), "an integer >= 1"),
        ("data.channels", c.data.channels, lambda v: v in (0, 1, 3), "0 (as stored), 1 or 3"),
        (
            "data.image_size",
            c.data.image_size,
            lambda v: len(v) in (0, 1, 2) and all(1 <= n <= 65536 for n in v),
            "[] or [H, W] (or one size for both) with sizes in 1..65536",
        ),
        (
            "data.mean",
            c.data.mean,
            lambda v: len(v) == len(c.data.std) and all(math.isfinite(m) for m in v),
            "as many finite numbers as data.std (one, or one per channel)",
        ),
        ("data.std", c.data.std, lambda v: all(_positive(s) for s in v), "numbers > 0"),
        ("shifts.families", c.shifts.families, bool, 'one or more family names, or ["all"]'),
        ("shifts.severities", c.shifts.severities, bool, "one or more of 1, 2, 3, 4, 5"),
        ("quantization.schemes", c.quantization.schemes, bool, "one or more scheme names"),
        ("quantization.calibration_size", c.quantization.calibration_size, _at_least(1), ">= 1"),
        ("train.epochs", c.train.epochs, _at_least(1), "an integer >= 1"),
        ("train.batch_size", c.train.batch_size, _at_least(1), "an integer >= 1"),
        ("train.lr", c.train.lr, _positive, "a number > 0"),
        ("retrain.epochs", c.retrain.epochs, _at_least(1), "an integer >= 1"),
        ("retrain.lr", c.retrain.lr, _positive, "a number > 0"),
        ("retrain.probe_size", c.retrain.probe_size, _at_least(0), "an integer >= 0"),
        ("retrain.anchor_epochs", c.retrain.anchor_epochs, _at_least(0), "an integer >= 0"),
        ("retrain.anchor_lr", c.retrain.anchor_lr, _positive, "a number > 0"),
        ("retrain.max_float_layers", c.retrain.max_float_layers, _at_least(0), ">= 0 (0: none)"),
        *(
            (f"retrain.{k}", getattr(c.retrain, k), _share, "a share in [0, 1] (0: no limit)")
            for k in ("max_float_params", "max_float_macs")
        ),
        ("retrain.guard_catch", c.retrain.guard_catch, _open_share, "a share in (0, 1]"),
        ("retrain.guard_rate", c.retrain.guard_rate, _share, "a share in [0, 1] (0: use catch)"),
        ("compare.selectors", c.compare.selectors, bool, "one or more selector names"),
        ("compare.strategies", c.compare.strategies, bool, "one or more strategy names"),
        ("compare.budgets", c.compare.budgets, bool, "one or more counts or fractions"),
        (
            "compare.budgets",
            c.compare.budgets,
            lambda v: all(_positive(b) for b in v),
            "counts >= 1 or fractions in (0, 1]",
        ),
        ("compare.seeds", c.compare.seeds, _at_least(1), "an integer >= 1"),
        ("calibration.seeds", c.calibration.seeds, _at_least(1), "an integer >= 1"),
    ]
    for key, value, ok, allowed in checks:
        if not ok(value):
            shown = list(value) if isinstance(value, tuple) else value
            raise MitigateError(f"config key {key!r} in {where} must be {allowed}, got {shown!r}")
    return config


def _at_least(low: int) -> Callable[[object], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _positive(v: object) -> bool:
    # a finite number above 0 (NaN and inf compare false or fail the bound)
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf")


def _share(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1


def _open_share(v: object) -> bool:
    return _share(v) and v > 0  # type: ignore[operator]
