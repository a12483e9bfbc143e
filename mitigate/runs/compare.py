"""``mitigate compare``: strategies x selectors x budgets over seeds, resumable.

Every *cell* (one strategy, selector and budget on one seed) is saved as soon as it finishes
under ``<out>/cells/<config digest>/``; a rerun of the same command loads finished cells
instead of recomputing them, and a run with a different configuration never mixes with them.

Cells that do not depend on the selection share one run per seed: ``none`` ignores selector
and budget; ``settings`` and ``fallback`` score on the unlabelled probe, so they depend on
the selector but not the budget. A training strategy also gets a *control* cell per seed (the
same training, no selected inputs); its seed-paired difference to the control says whether the
selected inputs did anything beyond fine-tuning itself.

Within a seed, nothing a cell does not change is computed twice: one pool scan ranks every
selector, a chain's shared beginning runs once per selector and budget, each distinct (f1, q1)
is scanned and timed once, and ``none`` is the base scan itself (see ``_SeedRunner``). These
live in memory for one seed only, so a rerun that resumes recomputes them and counts the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from mitigate.config import Config, config_digest, config_to_dict
from mitigate.errors import MitigateError
from mitigate.mitigation.context import State
from mitigate.mitigation.strategies import Strategy
from mitigate.runs.cells import CellStore, run_cells
from mitigate.runs.objects import accepts_objects
from mitigate.runs.result import Report, RunResult
from mitigate.runs.retrain import Baseline
from mitigate.selectors.pool import Selected
from mitigate.stats import mean_ci as _stats

__all__ = ["Cell", "CompareResult", "compare", "plan_cells", "summarize_cells"]

COST_KEYS = (
    "size_vs_q0",
    "latency_vs_q0",
    "size_vs_fp",
    "latency_vs_fp",
    "latency_noise",
    "per_input_vs_q0",
    "per_input_vs_fp",
    "float_params",
    "float_macs",
    "reroute_rate",
)
# The shifted test inputs are made once per seed and kept when they fit in this (the default
# digits grid: 16 MiB); larger ones are made anew for every scan, in flat memory.
KEEP_TEST_BYTES = 256 * 2**20
CONTROL = "control"  # selector name of a training strategy's no-selection control cell
NO_SELECTION = "-"


@dataclass(frozen=True)
class Cell:
    """One run of the grid. ``selector`` is ``"-"`` for ``none`` and ``"control"`` for a
    training strategy's control; ``budget`` is ``None`` where the budget does not apply."""

    seed: int
    strategy: str
    selector: str
    budget: int | float | None

    @property
    def key(self) -> str:
        budget = "-" if self.budget is None else str(self.budget)
        return f"seed{self.seed}__{self.strategy}__{self.selector}__{budget}".replace("/", "_")

    @property
    def row(self) -> tuple[str, str, str]:
        """The table row this cell belongs to (everything but the seed)."""
        return self.strategy, self.selector, "-" if self.budget is None else str(self.budget)


@dataclass(frozen=True)
class CompareResult(RunResult):
    """The report and every cell's record (loaded or computed)."""

    cells: list[Report]


def _uses(strategy: str) -> tuple[bool, bool, bool]:
    """(depends on the selector, depends on the budget, trains) for a possibly combined name."""
    from mitigate.mitigation.strategies import parse_strategy

    steps = parse_strategy(strategy)
    by_budget = any(s.uses_selected for s in steps)
    by_selector = by_budget or any(s.uses_probe for s in steps)
    return by_selector, by_budget, any(s.trains for s in steps)


def plan_cells(config: Config) -> list[Cell]:
    """Every cell of the grid, seed-major (a seed's shared work is done once), validated."""
    from mitigate.selectors import check_selector

    c = config.compare
    if c.seeds < 1:
        raise MitigateError(f"compare.seeds must be >= 1, got {c.seeds}")
    for selector in c.selectors:
        check_selector(selector)
    for budget in c.budgets:
        if budget <= 0:
            raise MitigateError(f"budgets must be positive counts or fractions, got {budget}")
    cells = []
    for seed in range(config.seed, config.seed + c.seeds):
        for strategy in c.strategies:
            by_selector, by_budget, trains = _uses(strategy)
            selectors = c.selectors if by_selector else (NO_SELECTION,)
            budgets = c.budgets if by_budget else (None,)
            cells += [Cell(seed, strategy, s, b) for s in selectors for b in budgets]
            if trains and config.retrain.control:
                cells.append(Cell(seed, strategy, CONTROL, 0))
    return cells


def _digest(config: Config) -> str:
    """What a cell's result depends on, besides its own coordinates."""
    preset = [config.calibration.preset] if config.calibration.preset else []
    return config_digest(
        config.data,
        config.model,
        config.train,
        config.shifts,
        config.quantization,
        replace(config.retrain, strategy="", control=True),
        config.selection.class_balanced,
        *preset,  # only when set, so a grid without one keeps its cells
    )


@accepts_objects
def compare(
    config: Config,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    on_cell: Callable[[Cell, bool], None] | None = None,
    progress: bool = False,
) -> CompareResult:
    """Run (or resume) the grid and summarize it.

    Args:
        config: ``compare`` holds the grid; ``retrain`` the scheme and training settings.
        out: directory for ``cells/`` (one JSON per finished cell).
        checkpoint: FP model to use for every seed instead of the per-seed base model.
        on_cell: called after each cell with ``(cell, was_cached)``, e.g. a progress bar.
        progress: show training progress bars.
    """
    started = time.perf_counter()
    cells = plan_cells(config)
    for strategy in config.compare.strategies:
        if "+" not in strategy and "," in strategy:
            raise MitigateError(f"join combined strategies with '+', not ',': {strategy!r}")
    store = CellStore(Path(out) / "cells" / _digest(config))
    shared = _shared_prefixes(config.compare.strategies)
    grid = run_cells(
        cells,
        store,
        key=lambda cell: cell.key,
        seed=lambda cell: cell.seed,
        open_seed=lambda seed: _SeedRunner(
            replace(config, seed=seed), checkpoint, progress, shared
        ),
        run=lambda runner, cell: runner.run(cell),
        on_cell=on_cell,
    )
    report = summarize_cells(config, grid.records)
    report["wall_time_s"] = round(time.perf_counter() - started, 2)
    report["cells_dir"] = str(store.folder)
    report["cells"] = {"total": len(cells), "reused": grid.reused} | store.aside_report()
    report["config"] = config_to_dict(config)
    return CompareResult(report, grid.records)


class _SeedRunner:
    """One seed's shared state (data, f0, q0, base measurement, pool ranking per selector),
    built on the first cell that needs it, and what its cells would otherwise compute twice:

    - the state after a chain's first steps, for every prefix that several planned
      strategies share (``settings`` in ``settings+fallback`` and
      ``settings+fallback+guard``), keyed by what those steps read (selector, budget);
    - each distinct (f1, q1)'s counts and q1's deployment cost, keyed by a digest of the
      models (two selectors that keep the same layers in float make the same q1);
    - the shifted test inputs (see :data:`KEEP_TEST_BYTES`);
    - ``none``, which re-quantizes f0 unchanged and so gives q0 bit for bit: its cell is the
      base scan's, computed without quantizing or scanning again.

    Nothing here outlives the seed or is written to disk: a rerun recomputes what it reuses.
    """

    def __init__(
        self,
        config: Config,
        checkpoint: str | Path | None,
        progress: bool,
        shared: frozenset[tuple[str, ...]] = frozenset(),
    ) -> None:
        from mitigate.runs.retrain import prepare

        self.config, self.progress, self.shared = config, progress, shared
        self.baseline: Baseline = prepare(config, checkpoint=checkpoint, progress=progress)
        self.baseline.session.keep_test_batches(KEEP_TEST_BYTES)
        self._picked: dict[str, Selected] = {}
        self._states: dict[tuple, State] = {}
        self._measured: dict[str, tuple[Report, Report]] = {}

    def _selected(self, selector: str) -> Selected:
        """The selector's top inputs, enough for the largest budget and the probe; every
        selector of the grid is ranked in the same scan of the pool."""
        from mitigate.runs.retrain import select_many
        from mitigate.selectors import SCORES, resolve_budget

        if selector not in self._picked:
            pool = self.baseline.session.pool_size
            most = max(
                [resolve_budget(b, pool) for b in self.config.compare.budgets]
                + [self.config.retrain.probe_size]
            )
            # plan_cells checked the names
            names = dict.fromkeys([selector, *self.config.compare.selectors])
            self._picked |= select_many(self.baseline, [SCORES[n] for n in names], most)
        return self._picked[selector]

    def _inputs(self, cell: Cell) -> tuple[Selected, Tensor]:
        """The cell's selected inputs (its budget) and its probe."""
        from mitigate.selectors import resolve_budget

        baseline = self.baseline
        if cell.selector in (NO_SELECTION, CONTROL):
            empty = baseline.session.calibration[:0]
            return Selected(empty, baseline.session.data.splits.train.labels[:0], []), empty
        picked = self._selected(cell.selector)
        pool = baseline.session.pool_size
        k = resolve_budget(cell.budget, pool) if cell.budget is not None else 0
        return picked.head(k), picked.x[: self.config.retrain.probe_size]

    def _final_state(self, cell: Cell, selected: Selected, probe: Tensor) -> State:
        """The state after the cell's last step, starting from the longest shared prefix
        already computed for the same selector and budget."""
        from mitigate.mitigation.strategies import parse_strategy
        from mitigate.runs.retrain import initial_state, strategy_context

        steps = parse_strategy(cell.strategy)
        state, context = initial_state(self.baseline), None
        for i, step in enumerate(steps):
            key = _prefix_key(cell, steps[: i + 1], len(selected))
            if key in self._states:
                state = self._states[key]
                continue
            if context is None:
                context = strategy_context(self.baseline, selected, probe, progress=self.progress)
            state = step.step(context, state)
            if key[0] in self.shared:
                self._states[key] = state
        return state

    def _measure(self, state: State) -> tuple[Report, Report]:
        """(accounting, deployment cost) of the state's (f1, q1), once per distinct pair."""
        from mitigate.mitigation.accounting import account
        from mitigate.mitigation.deployment import model_digest
        from mitigate.quantization import scheme_label
        from mitigate.runs.retrain import deployment, measure

        baseline = self.baseline
        f1 = "f0" if state.fp_model is baseline.session.model else model_digest(state.fp_model)
        key = f"{f1}/{model_digest(state.quantized)}/{scheme_label(state.scheme)}"
        if key not in self._measured:
            accounting = account(measure(baseline, state.fp_model, state.quantized))
            cost = deployment(baseline, state.quantized, state.scheme)
            self._measured[key] = accounting, cost
        return self._measured[key]

    def run(self, cell: Cell) -> Report:
        from mitigate.quantization import scheme_label
        from mitigate.runs.retrain import initial_state

        started = time.perf_counter()
        selected, probe = self._inputs(cell)
        if cell.strategy == "none":
            state = initial_state(self.baseline)
        else:
            state = self._final_state(cell, selected, probe)
        accounting, cost = self._measure(state)
        return {
            "seed": cell.seed,
            "strategy": cell.strategy,
            "selector": cell.selector,
            "budget": cell.budget,
            "selected": len(selected),
            "used_labels": state.used_labels,
            "scheme_after": scheme_label(state.scheme),
            "totals": accounting["totals"],
            "worst_group": accounting["worst_group"],
            "cost": _cost(cost, accounting),
            "wall_time_s": round(time.perf_counter() - started, 2),
        }


def _prefix_key(cell: Cell, steps: list[Strategy], selected: int) -> tuple:
    """What the state after ``steps`` depends on besides the seed: the step names, the
    selector where a step reads the probe or the selected inputs, and how many inputs were
    selected where a step reads them."""
    by_selector = any(s.uses_probe or s.uses_selected for s in steps)
    by_budget = any(s.uses_selected for s in steps)
    return (
        tuple(s.name for s in steps),
        cell.selector if by_selector else None,
        selected if by_budget else None,
    )


def _shared_prefixes(strategies: list[str]) -> frozenset[tuple[str, ...]]:
    """The step chains that begin more than one planned strategy (a strategy begins itself):
    the states worth keeping for the cells that follow."""
    from mitigate.mitigation.strategies import parse_strategy

    seen: dict[tuple[str, ...], int] = {}
    for strategy in dict.fromkeys(strategies):
        names = tuple(s.name for s in parse_strategy(strategy))
        for i in range(1, len(names) + 1):
            seen[names[:i]] = seen.get(names[:i], 0) + 1
    return frozenset(prefix for prefix, n in seen.items() if n > 1)


def _cost(deployment: Report, accounting: Report) -> dict[str, float | None]:
    """What q1 costs against q0 and FP (latency: ratios from one run's interleaved timing, with
    that run's noise), the shares it keeps in float, and the share of test inputs a guard
    reroutes to the FP model (``None`` without a guard)."""
    q1 = deployment["models"]["q1"]
    return {
        "size_vs_q0": q1["size_vs_reference"],
        "latency_vs_q0": q1["latency_vs_reference"],
        "size_vs_fp": q1["size_vs_fp"],
        "latency_vs_fp": q1["latency_vs_fp"],
        "latency_noise": deployment["latency_noise"],
        "per_input_vs_q0": q1.get("per_input_vs_reference"),
        "per_input_vs_fp": q1.get("per_input_vs_fp"),
        "float_params": deployment["float_share"]["params"],
        "float_macs": deployment["float_share"]["macs"],
        "reroute_rate": accounting["totals"]["all"].get("reroute_rate"),
    }


def summarize_cells(config: Config, cells: list[Report]) -> Report:
    """Mean and 95% confidence interval over seeds for every row; noise flags; sorted."""
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        budget = "-" if cell["budget"] is None else str(cell["budget"])
        rows.setdefault((cell["strategy"], cell["selector"], budget), []).append(cell)
    controls = {(c["strategy"], c["seed"]): c for c in cells if c["selector"] == CONTROL}
    table = []
    for (strategy, selector, budget), runs in rows.items():
        runs = sorted(runs, key=lambda c: c["seed"])
        row: dict[str, Any] = {
            "strategy": strategy,
            "selector": selector,
            "budget": budget,
            "seeds": [c["seed"] for c in runs],
            "used_labels": any(c["used_labels"] for c in runs),
        }
        for part in ("all", "held_out_shifts", "seen_shifts", "clean"):
            row[part] = _stats([c["totals"][part]["net_removal"] for c in runs])
        row["accuracy_change"] = _stats(
            [
                c["totals"]["all"]["accuracy"]["q1"] - c["totals"]["all"]["accuracy"]["q0"]
                for c in runs
            ]
        )
        row["fp_accuracy_change"] = _stats(
            [
                c["totals"]["all"]["accuracy"]["f1"] - c["totals"]["all"]["accuracy"]["f0"]
                for c in runs
            ]
        )
        row["churn"] = _stats([c["totals"]["all"]["churn"] / c["totals"]["all"]["n"] for c in runs])
        row["within_pair"] = _stats([c["totals"]["all"]["net_removal_within_pair"] for c in runs])
        row["noise"] = _noise(runs, controls, selector)
        for key in COST_KEYS:  # a cell from before a cost was kept: none
            row[key] = _stats([c["cost"].get(key) for c in runs if "cost" in c])
        table.append(row)
    table.sort(key=lambda r: -(r["all"]["mean"] if r["all"]["mean"] is not None else -math.inf))
    held = [
        r for r in table if r["held_out_shifts"]["mean"] is not None and r["selector"] != CONTROL
    ]
    within = [r for r in held if _keeps_what_quantization_bought(r, config)]
    return {
        "command": "compare",
        "seeds": sorted({c["seed"] for c in cells}),
        "scheme": config.retrain.scheme,
        "rows": table,
        "best_on_held_out": _best(held),
        "best_within_budget": _best(within),
        "budget": {
            "size_vs_q0": SIZE_LIMIT,
            "float_params": config.retrain.max_float_params,
            "float_macs": config.retrain.max_float_macs,
        },
    }


# A fully int8 q1 may be this much larger than q0 and still keep what quantization bought.
SIZE_LIMIT = 1.1


def _keeps_what_quantization_bought(row: Report, config: Config) -> bool:
    """Fully int8 (no guard), the FP model unchanged, at most :data:`SIZE_LIMIT` x q0's size,
    and within the float budget of parameters and MACs (0 = no limit)."""

    def mean(key: str) -> float | None:
        return (row.get(key) or {}).get("mean")

    size, params, macs = mean("size_vs_q0"), mean("float_params"), mean("float_macs")
    if size is None or mean("reroute_rate") is not None or (mean("churn") or 0) > 0:
        return False
    limits = ((params, config.retrain.max_float_params), (macs, config.retrain.max_float_macs))
    return size <= SIZE_LIMIT and all(v is None or not cap or v <= cap + 1e-9 for v, cap in limits)


def _best(rows: list[Report]) -> Report | None:
    """The row with the most net removal on held-out shifts, with what its q1 costs."""
    best = max(rows, key=lambda r: r["held_out_shifts"]["mean"], default=None)
    if best is None:
        return None
    return (
        {k: best[k] for k in ("strategy", "selector", "budget")}
        | {"net_removal": best["held_out_shifts"]}
        | {key: best[key] for key in COST_KEYS}
    )


def _noise(runs: list[dict[str, Any]], controls: dict, selector: str) -> str:
    """``"noise"`` when the row cannot be told from its noise floor at 95%: a training
    strategy against its control (paired by seed), anything else against zero (``none``)."""
    if selector == CONTROL or runs[0]["strategy"] == "none":
        return "floor"
    paired = [
        (c["totals"]["all"]["net_removal"], controls.get((c["strategy"], c["seed"]))) for c in runs
    ]
    if all(ctrl is not None for _, ctrl in paired):
        diffs = [v - ctrl["totals"]["all"]["net_removal"] for v, ctrl in paired if v is not None]
    else:
        diffs = [v for v, _ in paired if v is not None]
    s = _stats(diffs)
    if s["ci95"] is None:
        return "?"  # one seed: no interval
    return "noise" if abs(s["mean"]) <= s["ci95"] else ""
