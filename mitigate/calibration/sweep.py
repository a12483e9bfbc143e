"""``mitigate calibrate`` as a function: run the planned settings over seeds, resumable.

Every *cell* (one setting on one seed) is saved as soon as it finishes under
``<out>/cells/<digest>/``: ``seed<S>__<setting>.json`` (its numbers) and
``seed<S>__<setting>.npz`` (the quantized model's label for every test input), next to one
``seed<S>__reference.npz`` per seed (a :class:`~mitigate.scanning.Predictions` with the groups,
true labels and the FP model's labels). A rerun loads finished cells instead of recomputing
them; a different configuration gets a different folder.

Per seed, the base model comes from :func:`mitigate.pipeline.base_model` (cached) and the
measurement is ``evaluate``'s: the test split, clean and under every shift family (held-out
ones included) at every configured severity, plus any natural shift.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mitigate.calibration.plan import Planned, check_sweep, plan_settings
from mitigate.calibration.settings import FACTORS, Setting, check_setting
from mitigate.config import Config, config_digest, config_to_dict
from mitigate.stats import format_mean_ci, mean_ci

__all__ = [
    "CalibrateResult",
    "calibrate",
    "cell_predictions",
    "combined_setting",
    "summarize_cells",
]

# Materialize a seed's shifted test inputs once when they fit in this many floats (256 MB);
# larger test sets are re-shifted batch by batch for every cell.
_MATERIALIZE_FLOATS = 1 << 26
_CHUNK = 8192


@dataclass(frozen=True)
class CalibrateResult:
    report: dict[str, Any]
    cells: list[dict[str, Any]]


# Bumped when what a setting name means changes, so older cells are not reused for it
# (2: calibration candidates continue from the calibration split into the training images).
_CELL_FORMAT = 2


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
    from mitigate.pipeline import load_data
    from mitigate.reports.io import read_json

    started = time.perf_counter()
    check_sweep(config)  # fail on bad names before loading or training anything
    seeds = list(range(config.seed, config.seed + config.calibration.seeds))
    folder = Path(out) / "cells" / _digest(config, checkpoint)
    planned = plan_settings(config, load_data(config))
    results: list[dict[str, Any]] = []
    state = {"done": 0, "total": len(planned) * len(seeds), "reused": 0}
    kept: dict[int, _SeedRun] = {}  # small seeds stay loaded for the combined pass

    def run(rows: list[Planned]) -> None:
        for seed in seeds:
            todo = [p for p in rows if not (folder / f"{_key(seed, p.setting)}.json").is_file()]
            for p in rows:
                if p not in todo:
                    results.append(read_json(folder / f"{_key(seed, p.setting)}.json"))
                    _tick(state, on_cell, p, seed, cached=True)
            if todo:
                runner = kept.get(seed) or _SeedRun(
                    replace(config, seed=seed), checkpoint, folder, progress
                )
                if runner.batches.x is not None:
                    kept[seed] = runner
                # one pool scan per seed serves every selected size (a prefix is a smaller one)
                runner.memo["selected_budget"] = max(
                    (p.setting.size for p in planned if p.setting.source == "selected"),
                    default=0,
                )
                for p in todo:
                    results.append(runner.run(p))
                    _tick(state, on_cell, p, seed, cached=False)

    run(planned)
    combined = None
    if config.calibration.grid == "oat" and config.calibration.combine:
        combined = combined_setting(planned, summarize_cells(planned, results))
        if combined is not None:
            state["total"] += len(seeds)
            planned.append(combined)
            run([combined])
    import torch

    from mitigate import __version__

    report = summarize_cells(planned, results)
    report |= {
        "command": "calibrate",
        "mitigate_version": __version__,
        "torch_version": torch.__version__,
        "seed": config.seed,
        "seeds": seeds,
        "scheme": config.calibration.scheme,
        "grid": config.calibration.grid,
        "design": _design(config, combined),
        "cells_dir": str(folder),
        "cells": {"total": state["total"], "reused": state["reused"]},
        "config": config_to_dict(config),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return CalibrateResult(report, results)


def _tick(state: dict, on_cell: Callable | None, p: Planned, seed: int, cached: bool) -> None:
    state["done"] += 1
    state["reused"] += int(cached)
    if on_cell:
        on_cell(state["done"], state["total"], p, seed, cached)


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

    def __init__(self, make: Callable[[], Iterator[Any]], materialize: bool) -> None:
        import torch

        self.make = make
        self.items = list(make()) if materialize else None
        self.x = torch.cat([b.x for b in self.items]) if self.items else None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items) if self.items is not None else self.make()

    def labels(self, model: Any, groups: list[Any]) -> np.ndarray:
        """``model``'s label for every input, in batch order."""
        import torch

        from mitigate.scanning import scan

        if self.x is None:
            return scan(model, {}, self, groups=groups, scores=()).reference
        with torch.no_grad():  # one pass in big chunks: per-batch overhead dominates tiny inputs
            chunks = [model(x).argmax(1) for x in self.x.split(_CHUNK)]
        return torch.cat(chunks).numpy().astype(np.int64)


class _SeedRun:
    """One seed's shared state: data, FP model, measurement batches and FP labels."""

    def __init__(
        self, config: Config, checkpoint: str | Path | None, folder: Path, progress: bool
    ) -> None:
        from mitigate.data.evalset import iter_batches
        from mitigate.pipeline import base_model, load_data, measurement_groups
        from mitigate.quantization import parse_scheme
        from mitigate.scanning import Predictions, scan

        self.config, self.folder = config, folder
        self.data = load_data(config)
        self.model, self.model_info = base_model(
            config, self.data, checkpoint=checkpoint, progress=progress
        )
        self.groups = measurement_groups(config, self.data)
        test, naturals = self.data.splits.test, self.data.naturals
        synthetic = sum(1 for g in self.groups if g.kind != "natural")
        n = len(test) * synthetic + sum(len(v) for v in naturals.values())
        self.batches = _Batches(
            lambda: iter_batches(
                test,
                self.groups,
                batch_size=config.eval.batch_size,
                seed=config.seed,
                naturals=naturals,
            ),
            materialize=n * math.prod(test.input_shape) <= _MATERIALIZE_FLOATS,
        )
        path = folder / f"seed{config.seed}__reference.npz"
        self.reference: Predictions = scan(
            self.model, {}, self.batches, groups=self.groups, scores=(), classes=test.classes
        )
        if not path.is_file():
            self.reference.save(path)
        self.base_scheme = parse_scheme(config.calibration.scheme)
        self.memo: dict[str, Any] = {}

    def run(self, planned: Planned) -> dict[str, Any]:
        from mitigate.calibration.inputs import calibration_set
        from mitigate.calibration.metrics import activation_qparams, group_metrics
        from mitigate.quantization import quantize, scheme_label
        from mitigate.reports.io import write_json

        started = time.perf_counter()
        setting = planned.setting
        x = calibration_set(self.config, self.data, setting, model=self.model, memo=self.memo)
        scheme = setting.scheme(self.base_scheme)
        quantized = quantize(self.model, scheme, x)
        labels = self.batches.labels(quantized, self.groups)
        key = _key(self.config.seed, setting)
        _save_labels(self.folder / f"{key}.npz", labels)
        cell = {
            "seed": self.config.seed,
            "setting": setting.name,
            "factor": planned.factor,
            "level": planned.level,
            "notes": list(planned.notes),
            "calibration": asdict(setting),
            "scheme": scheme_label(scheme),
            "calibration_inputs": int(x.shape[0]),
            "model": self.model_info,
            "qparams": activation_qparams(quantized),
            **group_metrics(self.reference, labels),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }
        write_json(self.folder / f"{key}.json", cell)  # last: its presence marks the cell done
        return cell


def _save_labels(path: Path, labels: np.ndarray) -> None:
    import os
    import tempfile

    from mitigate.reports.io import publish

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, quantized=labels.astype(np.int32))
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cell_predictions(cells_dir: str | Path, seed: int, setting: str) -> Any:
    """The per-input file of one cell as :class:`~mitigate.scanning.Predictions`: the seed's
    reference (groups, labels, FP labels) with the cell's quantized labels as variant
    ``setting`` — everything a cell's numbers are counted from."""
    from mitigate.scanning import Predictions

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
