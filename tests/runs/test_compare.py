from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from mitigate.config import Config, override
from mitigate.runs.compare import CONTROL, compare, plan_cells

GRID = dict(
    retrain__probe_size=100,
    compare__selectors=["margin", "random"],
    compare__strategies=["none", "recalibrate", "finetune", "fallback"],
    compare__budgets=[10, 20],
    compare__seeds=2,
)


def test_plan_shares_cells_that_ignore_selector_or_budget(tiny_retrain):
    cells = plan_cells(override(Config(), **{**tiny_retrain, **GRID}))
    per_seed = [c for c in cells if c.seed == 0]
    by_strategy = {
        s: [c for c in per_seed if c.strategy == s]
        for s in ("none", "recalibrate", "finetune", "fallback")
    }
    assert len(by_strategy["none"]) == 1
    assert len(by_strategy["recalibrate"]) == 4  # 2 selectors x 2 budgets
    assert len(by_strategy["finetune"]) == 5  # + its control
    assert [c.selector for c in by_strategy["finetune"]].count(CONTROL) == 1
    assert len(by_strategy["fallback"]) == 2  # per selector; the probe, not the budget
    assert {c.seed for c in cells} == {0, 1}


def test_a_rerun_resumes_and_gives_the_same_table(tmp_path, monkeypatch, tiny_retrain):
    torch.set_num_threads(1)
    config = override(Config(), **{**tiny_retrain, **GRID})
    calls = []
    first = compare(config, tmp_path, on_cell=lambda cell, cached: calls.append(cached))
    assert len(calls) == len(plan_cells(config)) and not any(calls)
    assert first.report["cells"]["reused"] == 0

    # a rerun must not recompute anything: make recomputation impossible
    import mitigate.runs.compare as module

    monkeypatch.setattr(module, "_SeedRunner", None)
    second = compare(config, tmp_path)
    assert second.report["cells"]["reused"] == len(plan_cells(config))
    assert second.report["rows"] == first.report["rows"]

    none = next(r for r in first.report["rows"] if r["strategy"] == "none")
    assert none["all"]["mean"] == 0 and none["noise"] == "floor"
    assert none["size_vs_q0"]["mean"] == 1.0 and none["size_vs_q0"]["ci95"] == 0  # same bytes
    for row in first.report["rows"]:
        assert row["seeds"] == [0, 1]
        assert row["latency_vs_q0"]["mean"] > 0
    for cell in first.cells:
        changed = cell["scheme_after"] != "int8" or cell["strategy"] == "finetune"
        assert (cell["cost"]["size_vs_q0"] == 1.0) or changed
    best = first.report["best_on_held_out"]
    assert best["size_vs_q0"]["n"] == 2

    # a corrupt cell file is named, set aside and computed again; the others are reused
    monkeypatch.undo()
    cell_file = sorted(Path(first.report["cells_dir"]).glob("*.json"))[0]
    original = json.loads(cell_file.read_text())
    cell_file.write_text('{"seed": 0, "strat')  # a kill mid-write of a foreign tool
    third = compare(config, tmp_path)
    assert third.report["cells"]["reused"] == len(plan_cells(config)) - 1
    assert third.report["cells"]["set_aside"] == [str(cell_file) + ".corrupt"]
    assert cell_file.is_file() and Path(str(cell_file) + ".corrupt").is_file()
    again = json.loads(cell_file.read_text())
    assert {k: again[k] for k in ("seed", "strategy", "selector", "budget")} == {
        k: original[k] for k in ("seed", "strategy", "selector", "budget")
    }


def test_a_killed_run_keeps_finished_cells(tmp_path, monkeypatch, tiny_retrain):
    torch.set_num_threads(1)
    config = override(
        Config(),
        **{
            **tiny_retrain,
            **GRID,
            "compare__strategies": ["none", "recalibrate"],
            "compare__seeds": 1,
        },
    )
    import mitigate.runs.compare as module

    real = module._SeedRunner.run
    done = []

    def crash_on_third(self, cell):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(cell)
        return real(self, cell)

    monkeypatch.setattr(module._SeedRunner, "run", crash_on_third)
    with contextlib.suppress(KeyboardInterrupt):
        compare(config, tmp_path)
    monkeypatch.setattr(module._SeedRunner, "run", real)
    resumed = compare(config, tmp_path)
    assert resumed.report["cells"]["reused"] == 2
