from __future__ import annotations

import contextlib
import json
from dataclasses import replace
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


# A grid whose cells share work: chains with a common beginning, a guard on q0, two selectors
# ranked from one pool scan, and the `none` cell.
SHARED = dict(
    retrain__probe_size=100,
    compare__selectors=["margin", "oracle"],
    compare__strategies=[
        "none",
        "settings",
        "settings+fallback",
        "settings+fallback+guard",
        "guard",
        "recalibrate",
    ],
    compare__budgets=[10],
    compare__seeds=1,
)


def _alone(config: Config, cells) -> dict:
    """Every cell computed on its own, the way `retrain` computes one: its selector's own pool
    scan, every step of its chain run from (f0, q0), a full test scan of (f1, q1)."""
    from mitigate.mitigation.accounting import account
    from mitigate.runs.retrain import measure, prepare, run_strategy, select
    from mitigate.selectors import SCORES, resolve_budget
    from mitigate.selectors.pool import Selected

    baseline = prepare(config)
    session = baseline.session
    records = {}
    for cell in cells:
        if cell.selector in ("-", CONTROL):
            empty = session.calibration[:0]
            selected = Selected(empty, session.data.splits.train.labels[:0], [])
            probe = empty
        else:
            k = resolve_budget(cell.budget, session.pool_size) if cell.budget else 0
            most = max(resolve_budget(10, session.pool_size), config.retrain.probe_size)
            picked = select(baseline, SCORES[cell.selector], most)
            selected, probe = picked.head(k), picked.x[: config.retrain.probe_size]
        state = run_strategy(baseline, cell.strategy, selected, probe)[-1]
        accounting = account(measure(baseline, state.fp_model, state.quantized))
        records[cell.key] = (accounting["totals"], accounting["worst_group"])
    return records


def test_cells_that_share_work_equal_each_cell_computed_alone(tmp_path, tiny_retrain):
    torch.set_num_threads(1)
    config = override(Config(), **{**tiny_retrain, **SHARED})
    cells = plan_cells(config)
    result = compare(config, tmp_path)
    by_key = {
        f"seed{c['seed']}__{c['strategy']}__{c['selector']}__{c['budget'] or '-'}": c
        for c in result.cells
    }
    alone = _alone(config, cells)
    assert set(by_key) == set(alone)
    for key, (totals, worst) in alone.items():
        assert by_key[key]["totals"] == totals, key
        assert by_key[key]["worst_group"] == worst, key


def test_none_is_exactly_zero_without_quantizing_or_scanning(tmp_path, monkeypatch, tiny_retrain):
    torch.set_num_threads(1)
    config = override(Config(), **{**tiny_retrain, **SHARED, "compare__strategies": ["none"]})
    from mitigate.mitigation.accounting import account
    from mitigate.runs.retrain import measure, prepare, run_strategy
    from mitigate.selectors.pool import Selected

    # what `none` does when run: re-quantize f0 unchanged, scan (f0, q1) on the test groups
    baseline = prepare(config)
    empty = baseline.session.calibration[:0]
    nothing = Selected(empty, baseline.session.data.splits.train.labels[:0], [])
    state = run_strategy(baseline, "none", nothing, empty)[-1]
    assert state.quantized is not baseline.q0
    run = account(measure(baseline, state.fp_model, state.quantized))

    import mitigate.quantization as quantization
    import mitigate.scanning as scanning
    from mitigate.mitigation.strategies import STRATEGIES

    calls: list[str] = []

    def counting(name, real):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        return wrapped

    def fail(*args, **kwargs):
        raise AssertionError("the none step ran")

    monkeypatch.setitem(STRATEGIES, "none", replace(STRATEGIES["none"], step=fail))
    monkeypatch.setattr(quantization, "quantize", counting("quantize", quantization.quantize))
    monkeypatch.setattr(scanning, "scan", counting("scan", scanning.scan))
    prepare(config)
    seed_setup, calls[:] = list(calls), []
    assert seed_setup.count("scan") == 1  # the base scan of f0 and q0
    (cell,) = compare(config, tmp_path).cells
    assert calls == seed_setup  # the cell itself quantized and scanned nothing
    assert cell["totals"] == run["totals"] and cell["worst_group"] == run["worst_group"]
    totals = cell["totals"]["all"]
    assert totals["removed"] == totals["introduced"] == totals["churn"] == 0
    assert totals["net_removal"] == 0 and cell["cost"]["size_vs_q0"] == 1.0


def test_a_killed_run_with_shared_work_resumes_to_the_same_cells(
    tmp_path, monkeypatch, tiny_retrain
):
    torch.set_num_threads(1)
    config = override(Config(), **{**tiny_retrain, **SHARED})
    whole = compare(config, tmp_path / "whole")

    import mitigate.runs.compare as module

    real = module._SeedRunner.run
    done = []

    def crash_after_settings(self, cell):  # the kill lands after the chains' shared start
        if done and done[-1].strategy == "settings":
            raise KeyboardInterrupt
        done.append(cell)
        return real(self, cell)

    monkeypatch.setattr(module._SeedRunner, "run", crash_after_settings)
    with contextlib.suppress(KeyboardInterrupt):
        compare(config, tmp_path / "killed")
    monkeypatch.setattr(module._SeedRunner, "run", real)
    resumed = compare(config, tmp_path / "killed")
    assert resumed.report["cells"]["reused"] == len(done)
    assert 0 < len(done) < len(plan_cells(config))

    def results(cells):
        return sorted(
            (c["strategy"], c["selector"], c["totals"], c["worst_group"], c["scheme_after"])
            for c in cells
        )

    assert results(resumed.cells) == results(whole.cells)


def test_kept_test_batches_are_the_batches_made_anew(tiny_retrain):
    from mitigate.runs.session import Session

    session = Session.open(override(Config(), **tiny_retrain))
    made = list(session.test_batches())
    assert not session.keep_test_batches(made[0].x[:1].nbytes)  # room for one input only
    assert session.keep_test_batches(2**30)
    kept = list(session.test_batches())
    assert kept is not made and len(kept) == len(made)
    for a, b in zip(made, kept, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.group == b.group
        assert torch.equal(a.index, b.index) and torch.equal(a.position, b.position)
