"""``mitigate calibrate``: how the calibration data and method change worst-group disagreement.

**The plan.** The seven factors of a calibration :class:`~mitigate.calibration.settings.Setting`
have 3 x 4 x 3 x 3 x 3 x 2 x 3 = 1,944 combinations by default: too many to run over seeds.
The default design (``grid = "oat"``) is **one factor at a time** around a baseline — the
calibration ``evaluate`` uses (``[quantization] calibration_*`` and ``[calibration] scheme``)
— so every factor's effect is measured against the same reference:

- the baseline, then each listed level of each factor with every other factor at baseline;
- ``extra``: a few named interactions (partial preset names over the baseline, e.g.
  ``shifted-qnnpack``: does the shifted source still matter once the engine is fixed?);
- ``combine``: after those finish, the setting that takes, for every factor, the level that
  lowered mean worst-group disagreement most (if any did): do the one-factor gains add up?

``grid = "full"`` runs the full factorial of the listed levels instead (plus ``extra``).
Sizes above what a source can give are clipped to it (and the report says so); settings that
coincide after clipping run once, and so does a sampling that would draw every candidate (it
only reorders the same inputs).

**The cells.** Every cell (one setting on one seed) is saved as soon as it finishes under
``<out>/cells/<digest>/`` (:mod:`mitigate.runs.cells`): ``seed<S>__<setting>.json`` (its
numbers) and ``seed<S>__<setting>.npz`` (the quantized model's label for every test input),
next to one ``seed<S>__reference.npz`` per seed (a :class:`~mitigate.scanning.Predictions`
with the groups, true labels and the FP model's labels). A rerun loads finished cells instead
of recomputing them; a different configuration gets a different folder.

Per seed, the base model comes from the session (cached) and the measurement is
``evaluate``'s: the test split, clean and under every shift family (held-out ones included)
at every configured severity, plus any natural shift. ``[calibration] preset`` is ignored.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mitigate.atomic import write_npz
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
)
from mitigate.config import Config, config_digest
from mitigate.data.dataset import Data
from mitigate.data.evalset import Batch, Group
from mitigate.errors import MitigateError, unknown_choice
from mitigate.runs.calibration import (
    available_inputs,
    baseline_setting,
    calibration_set,
    candidates_hold,
)
from mitigate.runs.cells import CellStore, run_cells
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import Report, RunResult, run_header
from mitigate.runs.session import Session
from mitigate.scanning import Predictions, scan
from mitigate.stats import format_mean_ci, mean_ci

__all__ = [
    "GRIDS",
    "CalibrateResult",
    "Planned",
    "calibrate",
    "cell_predictions",
    "check_sweep",
    "combined_setting",
    "plan_settings",
    "summarize_cells",
]

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


def check_sweep(config: Config) -> Setting:
    """Validate ``[calibration]`` before any work; return the baseline setting."""
    from mitigate.models import model_modality
    from mitigate.selectors import score_names

    if not config.model.factory and model_modality(config.model.arch) == "text":
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


def plan_settings(config: Config, data: Data) -> list[Planned]:
    """The settings to run, baseline first, sizes clipped to what ``data`` allows."""
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


# ---- the sweep -------------------------------------------------------------------------------

# Materialize a seed's shifted test inputs once when they fit in this many floats (256 MB);
# larger test sets are re-shifted batch by batch for every cell.
_MATERIALIZE_FLOATS = 1 << 26
_CHUNK = 8192

# Bumped when what a setting name means changes, so older cells are not reused for it
# (2: calibration candidates continue from the calibration split into the training images).
_CELL_FORMAT = 2


@dataclass(frozen=True)
class CalibrateResult(RunResult):
    """The report, every cell's record, and the recommended setting's ``best.json`` record
    (``None`` when nothing was recommended)."""

    cells: list[Report]
    best: Report | None = None

    def write_data(self, folder: Path) -> list[Path]:
        """``best.json``, the record ``--calibration`` reads, when a setting was recommended."""
        from mitigate.atomic import write_json

        if self.best is None:
            return []
        write_json(folder / "best.json", self.best)
        return [folder / "best.json"]


def _digest(config: Config, checkpoint: str | Path | None) -> str:
    """What a cell depends on besides its seed and setting (both in its file name)."""
    c = config.calibration
    return config_digest(
        _CELL_FORMAT,
        config.data,
        config.model,
        config.train,
        config.shifts,
        c.scheme,
        c.selector,
        c.families,
        str(checkpoint) if checkpoint else "",
    )


def _key(seed: int, setting: Setting) -> str:
    return f"seed{seed}__{setting.name}"


@accepts_objects
def calibrate(
    config: Config,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    on_cell: Callable[[int, int, Planned, int, bool], None] | None = None,
    progress: bool = False,
) -> CalibrateResult:
    """Run (or resume) the calibration sweep and summarize it.

    Args:
        config: ``[calibration]`` holds the sweep; ``[quantization] calibration_*`` and
            ``[calibration] scheme`` the baseline. ``[calibration] preset`` is ignored here.
        out: directory for ``cells/``.
        checkpoint: FP model to use for every seed instead of the per-seed base model.
        on_cell: called after each cell with ``(done, total, planned, seed, was_cached)``.
        progress: show training progress bars.
    """
    from mitigate.runs.calibration import best_record
    from mitigate.runs.data import load_data

    started = time.perf_counter()
    check_sweep(config)  # fail on bad names before loading or training anything
    seeds = list(range(config.seed, config.seed + config.calibration.seeds))
    store = CellStore(Path(out) / "cells" / _digest(config, checkpoint))
    planned = plan_settings(config, load_data(config))
    counter = {"done": 0, "total": len(planned) * len(seeds)}
    kept: dict[int, _SeedRun] = {}  # small seeds stay loaded for the combined pass
    selected_budget = max(
        (p.setting.size for p in planned if p.setting.source == "selected"), default=0
    )

    def open_seed(seed: int) -> _SeedRun:
        runner = kept.get(seed) or _SeedRun(replace(config, seed=seed), checkpoint, store, progress)
        if runner.batches.x is not None:
            kept[seed] = runner
        # one pool scan per seed serves every selected size (a prefix is a smaller one)
        runner.memo["selected_budget"] = selected_budget
        return runner

    def tick(cell: tuple[int, Planned], cached: bool) -> None:
        counter["done"] += 1
        if on_cell is not None:
            on_cell(counter["done"], counter["total"], cell[1], cell[0], cached)

    def run(rows: list[Planned]) -> tuple[list[Report], int]:
        grid = run_cells(
            [(seed, p) for seed in seeds for p in rows],
            store,
            key=lambda cell: _key(cell[0], cell[1].setting),
            seed=lambda cell: cell[0],
            open_seed=open_seed,
            run=lambda runner, cell: runner.run(cell[1]),
            on_cell=tick,
        )
        return grid.records, grid.reused

    results, reused = run(planned)
    combined = None
    if config.calibration.grid == "oat" and config.calibration.combine:
        combined = combined_setting(planned, summarize_cells(planned, results))
        if combined is not None:
            counter["total"] += len(seeds)
            planned.append(combined)
            more, more_reused = run([combined])
            results, reused = results + more, reused + more_reused
    report = summarize_cells(planned, results)
    report |= {
        **run_header("calibrate", config),
        "seeds": seeds,
        "scheme": config.calibration.scheme,
        "grid": config.calibration.grid,
        "design": _design(config, combined),
        "cells_dir": str(store.folder),
        "cells": {"total": counter["total"], "reused": reused} | store.aside_report(),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    best = best_record(config, report) if report.get("recommendation") else None
    return CalibrateResult(report, results, best)


def _design(config: Config, combined: Planned | None) -> str:
    if config.calibration.grid == "full":
        return "full factorial of the listed levels, plus the extra settings"
    text = (
        "one factor at a time around the baseline (the default calibration), plus the extra "
        "settings (interactions)"
    )
    if combined is not None:
        text += f", plus the combination of every factor's best level ({combined.level})"
    return text


class _Batches:
    """A seed's measurement batches: kept in memory when small (``x``: every input in
    order, for large forward chunks), else re-made on every iteration."""

    def __init__(self, make: Callable[[], Iterator[Batch]], materialize: bool) -> None:
        self.make = make
        self.items = list(make()) if materialize else None
        self.x = torch.cat([b.x for b in self.items]) if self.items else None

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.items) if self.items is not None else self.make()

    def labels(self, model: torch.nn.Module, groups: list[Group]) -> np.ndarray:
        """``model``'s label for every input, in batch order."""
        if self.x is None:
            return scan(model, {}, self, groups=groups, scores=()).reference
        with torch.no_grad():  # one pass in big chunks: per-batch overhead dominates tiny inputs
            chunks = [model(x).argmax(1) for x in self.x.split(_CHUNK)]
        return torch.cat(chunks).numpy().astype(np.int64)


class _SeedRun:
    """One seed's shared state: session (data, FP model), measurement batches, FP labels."""

    def __init__(
        self, config: Config, checkpoint: str | Path | None, store: CellStore, progress: bool
    ) -> None:
        from mitigate.quantization import parse_scheme

        self.store = store
        self.session = session = Session.open(
            config, checkpoint=checkpoint, presets=False, progress=progress
        )
        test, naturals = session.data.splits.test, session.data.naturals
        synthetic = sum(1 for g in session.groups if g.kind != "natural")
        n = len(test) * synthetic + sum(len(v) for v in naturals.values())
        self.batches = _Batches(
            session.test_batches,
            materialize=n * math.prod(test.input_shape) <= _MATERIALIZE_FLOATS,
        )
        self.reference: Predictions = scan(
            session.model, {}, self.batches, groups=session.groups, scores=(), classes=test.classes
        )
        path = store.path(f"seed{session.seed}__reference", ".npz")
        if not path.is_file():
            self.reference.save(path)
        self.base_scheme = parse_scheme(config.calibration.scheme)
        self.memo: dict[str, Any] = {}

    def run(self, planned: Planned) -> Report:
        from mitigate.counting import group_metrics
        from mitigate.quantization import activation_qparams, quantize, scheme_label

        started = time.perf_counter()
        session, setting = self.session, planned.setting
        x = calibration_set(
            session.config, session.data, setting, model=session.model, memo=self.memo
        )
        scheme = setting.scheme(self.base_scheme)
        quantized = quantize(session.model, scheme, x)
        labels = self.batches.labels(quantized, session.groups)
        write_npz(
            self.store.path(_key(session.seed, setting), ".npz"),
            {"quantized": labels.astype(np.int32)},
        )
        return {
            "seed": session.seed,
            "setting": setting.name,
            "factor": planned.factor,
            "level": planned.level,
            "notes": list(planned.notes),
            "calibration": asdict(setting),
            "scheme": scheme_label(scheme),
            "calibration_inputs": int(x.shape[0]),
            "model": session.model_info,
            "qparams": activation_qparams(quantized),
            **group_metrics(self.reference, labels),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }


def cell_predictions(cells_dir: str | Path, seed: int, setting: str) -> Predictions:
    """The per-input file of one cell as :class:`~mitigate.scanning.Predictions`: the seed's
    reference (groups, labels, FP labels) with the cell's quantized labels as variant
    ``setting`` — everything a cell's numbers are counted from."""
    folder = Path(cells_dir)
    reference = Predictions.load(folder / f"seed{seed}__reference.npz")
    with np.load(folder / f"seed{seed}__{setting}.npz") as f:
        labels = f["quantized"].astype(np.int64)
    return replace(reference, variants={setting: labels})


def combined_setting(planned: list[Planned], summary: dict[str, Any]) -> Planned | None:
    """The baseline with, for every factor, the level that lowered mean worst-group
    disagreement the most (one-factor rows only); ``None`` if nothing beat the baseline or
    the combination is already planned."""
    rows = {r["setting"]: r for r in summary["rows"]}
    base = planned[0]
    base_mean = rows[base.setting.name]["worst_disagreement"]["mean"]
    changes: dict[str, Any] = {}
    for factor in FACTORS:
        own = [p for p in planned if p.factor == factor]
        best = min(
            own, key=lambda p: rows[p.setting.name]["worst_disagreement"]["mean"], default=None
        )
        if best is not None and rows[best.setting.name]["worst_disagreement"]["mean"] < base_mean:
            changes[factor] = getattr(best.setting, factor)
    if len(changes) < 2:  # one change is a row that already ran
        return None
    setting = check_setting(replace(base.setting, **changes))
    if any(p.setting.name == setting.name for p in planned):
        return None
    level = ", ".join(f"{k}={v}" for k, v in changes.items())
    return Planned(setting, "combined", level)


def summarize_cells(planned: list[Planned], cells: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% CI over seeds for every setting, sorted by worst-group disagreement.

    Worst-group numbers are per seed (the maximum disagreement rate / minimum accuracy over
    the groups of that seed), then averaged; the named worst group is the one worst in most
    seeds (ties: the higher mean rate). ``vs_baseline`` is the seed-paired difference of
    worst-group disagreement to the baseline.
    """
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        by_setting.setdefault(cell["setting"], []).append(cell)
    base_name = planned[0].setting.name
    base_runs = {c["seed"]: c for c in by_setting.get(base_name, [])}
    order = {p.setting.name: i for i, p in enumerate(planned)}
    table = []
    for p in planned:
        runs = sorted(by_setting.get(p.setting.name, []), key=lambda c: c["seed"])
        if not runs:
            continue
        paired = [
            c["worst_disagreement"]["disagreement_rate"]
            - base_runs[c["seed"]]["worst_disagreement"]["disagreement_rate"]
            for c in runs
            if c["seed"] in base_runs
        ]
        diff = mean_ci(paired)
        table.append(
            {
                "setting": p.setting.name,
                "factor": p.factor,
                "level": p.level,
                "notes": list(p.notes),
                "calibration": asdict(p.setting),
                "scheme": runs[0]["scheme"],
                "calibration_inputs": runs[0]["calibration_inputs"],
                "seeds": [c["seed"] for c in runs],
                "accuracy": mean_ci([c["overall"]["accuracy"] for c in runs]),
                "fp_accuracy": mean_ci([c["overall"]["fp_accuracy"] for c in runs]),
                "worst_accuracy": mean_ci([c["worst_accuracy"]["accuracy"] for c in runs]),
                "worst_accuracy_group": _mode(runs, "worst_accuracy", "accuracy", lowest=True),
                "disagreement": mean_ci([c["overall"]["disagreement_rate"] for c in runs]),
                "worst_disagreement": mean_ci(
                    [c["worst_disagreement"]["disagreement_rate"] for c in runs]
                ),
                "worst_group": _mode(runs, "worst_disagreement", "disagreement_rate"),
                "vs_baseline": diff,
                "vs_baseline_noise": diff["ci95"] is None or abs(diff["mean"]) <= diff["ci95"],
            }
        )
    table.sort(
        key=lambda r: (
            r["worst_disagreement"]["mean"],
            r["disagreement"]["mean"],
            order[r["setting"]],
        )
    )
    baseline = next((r for r in table if r["setting"] == base_name), None)
    return {
        "rows": table,
        "baseline": base_name,
        "best": table[0]["setting"] if table else None,
        "recommendation": _recommend(table[0], baseline) if table and baseline else None,
    }


def _mode(runs: list[dict[str, Any]], key: str, value: str, lowest: bool = False) -> str:
    """The group named worst in most seeds; ties go to the worse mean value."""
    counts = Counter(c[key]["name"] for c in runs)
    top = max(counts.values())
    tied = [name for name, k in counts.items() if k == top]

    def mean_of(name: str) -> float:
        values = [c[key][value] for c in runs if c[key]["name"] == name]
        return sum(values) / len(values)

    return (min if lowest else max)(tied, key=mean_of)


def _recommend(best: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The top row against the baseline, in numbers and one line."""
    b, d = best["worst_disagreement"]["mean"], baseline["worst_disagreement"]["mean"]
    relative = (b - d) / d if d else None
    same = best["setting"] == baseline["setting"]
    line = (
        f"recommended calibration: {best['setting']} ({best['scheme']}): worst-group "
        f"disagreement {_pct(best['worst_disagreement'])} (worst group {best['worst_group']})"
    )
    if same:
        line += "; it is the default calibration"
    else:
        change = "" if relative is None else f", {100 * relative:+.0f}%"
        noise = "; within noise" if best["vs_baseline_noise"] else ""
        line += (
            f" vs {_pct(baseline['worst_disagreement'])} for the default "
            f"{baseline['setting']} (worst group {baseline['worst_group']}; "
            f"paired difference {_pct(best['vs_baseline'], signed=True)} points{change}{noise})"
        )
    return {
        "setting": best["setting"],
        "scheme": best["scheme"],
        "worst_disagreement": best["worst_disagreement"],
        "baseline_worst_disagreement": baseline["worst_disagreement"],
        "change_points": best["vs_baseline"],
        "change_relative": relative,
        "within_noise": best["vs_baseline_noise"],
        "line": line,
    }


def _pct(stats: dict[str, Any], signed: bool = False) -> str:
    """``2.77% ±1.28``, or signed points without the unit: ``-2.37 ±1.24``."""
    return format_mean_ci(stats, digits=2, signed=signed, unit="" if signed else "%")
