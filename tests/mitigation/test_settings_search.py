from __future__ import annotations

import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.mitigation import search_settings
from mitigate.quantization import Int8Static, parse_scheme, quantize, scheme_label

GRID = {"observers": ("minmax",), "reduce_range": (False,)}  # 2 engines x 2 granularities


def _recount(model, label, calibration, probe) -> int:
    q = quantize(model, parse_scheme(label), calibration)
    with torch.no_grad():
        return int((q(probe).argmax(1) != model(probe).argmax(1)).sum())


def test_the_winner_has_the_fewest_disagreements_by_brute_force(broken_mlp, calibration, probe):
    base = Int8Static(per_channel=False, observer="minmax")
    result = search_settings(broken_mlp, base, calibration, probe, **GRID, significance=None)
    assert len(result.table) == 5  # the grid's 4 and the base (x86's reduced range)
    recount = {
        row["label"]: _recount(broken_mlp, row["label"], calibration, probe) for row in result.table
    }
    assert {row["label"]: row["disagreements"] for row in result.table} == recount
    assert result.best_disagreements == min(recount.values())
    assert scheme_label(result.best) == result.best_label
    assert result.best.per_channel  # per-channel confines the huge weight to one channel
    assert result.base_disagreements == recount[scheme_label(base)]
    counts = [row["disagreements"] for row in result.table]
    assert counts == sorted(counts)


def _flags(model, label, calibration, probe) -> torch.Tensor:
    q = quantize(model, parse_scheme(label), calibration)
    with torch.no_grad():
        return q(probe).argmax(1) != model(probe).argmax(1)


def test_a_change_must_be_significantly_better_to_win(broken_mlp, calibration, probe):
    base = Int8Static(per_channel=False, observer="minmax")
    result = search_settings(broken_mlp, base, calibration, probe, **GRID)
    lowest = min(result.table, key=lambda r: r["disagreements"])
    low = _flags(broken_mlp, lowest["label"], calibration, probe)
    for row in result.table:  # "tied" is the paired McNemar test, recomputed by hand
        mine = _flags(broken_mlp, row["label"], calibration, probe)
        worse, better = int((mine & ~low).sum()), int((~mine & low).sum())
        assert row["tied"] == (worse - better <= 1.6449 * (worse + better) ** 0.5)
    winner = result.table[0]
    assert winner["tied"] and scheme_label(result.best) == winner["label"]
    assert len(winner["changed"]) == min(len(r["changed"]) for r in result.table if r["tied"])
    assert winner["disagreements"] < result.base_disagreements  # per-channel earns its change
    rest = [r["disagreements"] for r in result.table[1:]]
    assert rest == sorted(rest)
    plain = search_settings(broken_mlp, base, calibration, probe, **GRID, significance=None)
    assert plain.best_disagreements <= result.best_disagreements


def test_ties_go_to_the_base_setting_and_labels_are_canonical(healthy_mlp, digits_xy, calibration):
    x, _ = digits_xy
    with torch.no_grad():  # the most confident inputs: no setting flips them
        top2 = healthy_mlp(x[1300:1700]).softmax(1).topk(2, dim=1).values
    probe = x[1300:1700][(top2[:, 0] - top2[:, 1]).argsort(descending=True)[:30]]
    base = Int8Static(engine="qnnpack", reduce_range=False, observer="minmax")
    result = search_settings(healthy_mlp, base, calibration, probe, **GRID)
    assert all(row["disagreements"] == 0 for row in result.table)
    assert result.best == Int8Static(engine="qnnpack", observer="minmax")  # range spelled None
    assert result.best_label == "int8:engine=qnnpack:observer=minmax"
    assert result.table[0]["changed"] == []
    assert [len(r["changed"]) for r in result.table] == sorted(
        len(r["changed"]) for r in result.table
    )
    again = search_settings(healthy_mlp, base, calibration, probe, **GRID)
    assert again.table == result.table


def test_the_base_is_measured_even_off_the_grid(healthy_mlp, calibration, probe):
    base = Int8Static(observer="histogram", float_layers=("fc3",))
    result = search_settings(
        healthy_mlp,
        base,
        calibration,
        probe,
        engines=("qnnpack",),
        reduce_range=(False,),
        per_channel=(True,),
        observers=("minmax",),
    )
    labels = sorted(r["label"] for r in result.table)
    assert labels == [
        "int8:engine=qnnpack:observer=minmax:float_layers=fc3",
        "int8:float_layers=fc3",
    ]
    assert result.best.float_layers == ("fc3",)
    assert result.as_dict()["best"] == result.best_label


def test_bad_grids_are_refused(healthy_mlp, calibration, probe):
    with pytest.raises(MitigateError, match="significance must be one of 0.1, 0.05, 0.01"):
        search_settings(healthy_mlp, Int8Static(), calibration, probe, significance=0.2)
    base = Int8Static()
    with pytest.raises(
        MitigateError, match="unknown int8 engine 'arm'; valid choices: x86, qnnpack"
    ):
        search_settings(healthy_mlp, base, calibration, probe, engines=("arm",))
    with pytest.raises(MitigateError, match="unknown int8 observer 'mse'"):
        search_settings(healthy_mlp, base, calibration, probe, observers=("mse",))
    with pytest.raises(MitigateError, match="reduce_range must be a non-empty list"):
        search_settings(healthy_mlp, base, calibration, probe, reduce_range=())
    with pytest.raises(MitigateError, match="per_channel must be a non-empty list"):
        search_settings(healthy_mlp, base, calibration, probe, per_channel=("yes",))
    with pytest.raises(MitigateError, match="static int8 scheme"):
        search_settings(healthy_mlp, parse_scheme("fp16"), calibration, probe)
