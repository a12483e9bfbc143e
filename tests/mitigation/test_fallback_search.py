"""search_fallback: the best set of float layers within a budget.

The search logic is tested on lookup tables (where greedy is provably wrong), the whole
function against a brute-force enumeration done here with ``quantize`` on real models. Counts
are per CPU (int8 kernels differ), so tests compare the search with the brute force on this
machine and assert properties, never exact counts.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.mitigation import disagreements
from mitigate.mitigation.fallback import (
    FallbackSearchResult,
    _best_subset,
    _greedy,
    search_fallback,
)
from mitigate.models import layer_table
from mitigate.quantization import Int8Dynamic, Int8Static, quantize

PER_TENSOR = Int8Static(per_channel=False, observer="minmax")

# --- the search logic, on lookup tables --------------------------------------------------

ORDER = ("A", "B", "C")
# A is the best single layer but not part of the best pair {B, C}; a 40% parameter budget
# admits {B, C} (0.2 + 0.2) but neither {A, B} nor {A, C} (0.5).
PARAMS = {"A": 0.3, "B": 0.2, "C": 0.2}
MACS = {"A": 0.1, "B": 0.1, "C": 0.1}
TRAP = {"": 100, "A": 50, "B": 70, "C": 70, "AB": 5, "AC": 5, "BC": 10, "ABC": 0}


class Lookup:
    """A ``measure`` reading a table keyed by the layer names in order; records every call."""

    def __init__(self, table: dict[str, int]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, names) -> int:
        key = "".join(sorted(names))
        self.calls.append(key)
        return self.table[key]


def _search(table, params=PARAMS, macs=MACS, **budget):
    measure = Lookup(table)
    found = _best_subset(ORDER, params, macs, measure, **budget)
    return found, measure.calls


def test_greedy_keeps_the_best_single_layer_and_is_stuck_with_it():
    chosen, steps, before, stopped = _greedy(
        ORDER,
        PARAMS,
        Lookup(TRAP),
        set(),
        max_float_layers=None,
        max_float_params=0.4,
        target_disagreements=None,
    )
    assert chosen == {"A"} and before == 100 and steps[0]["disagreements_after"] == 50
    assert stopped == "max_float_params reached"


def test_exhaustive_search_finds_the_pair_greedy_misses():
    found, calls = _search(TRAP, max_float_params=0.4)
    assert found.chosen == {"B", "C"} and found.counts[found.chosen] == 10
    assert found.method == "exhaustive" and found.candidates == ORDER
    # Every set within the budget, each once; nothing over budget is ever measured.
    assert sorted(calls) == ["", "A", "B", "BC", "C"]
    assert found.counts == {frozenset(k): TRAP[k] for k in calls}


def test_beam_search_finds_the_pair_when_its_beam_holds_b():
    found, calls = _search(TRAP, max_float_params=0.4, exhaustive_up_to=0, beam_width=2)
    assert found.method == "beam" and found.chosen == {"B", "C"}
    # Size 1: A, B, C; size 2: only {B, C} fits ({A, B} and {A, C} are over budget).
    assert calls == ["", "A", "B", "C", "BC"]
    # A beam of one is greedy: it keeps A, and no set of size 2 with A fits.
    narrow, _ = _search(TRAP, max_float_params=0.4, exhaustive_up_to=0, beam_width=1)
    assert narrow.chosen == {"A"}


def test_beam_search_stops_when_a_size_brings_no_improvement():
    # No single layer helps, every pair does: the beam stops at size 1, exhaustive does not.
    table = {"": 20, "A": 20, "B": 20, "C": 20, "AB": 0, "AC": 0, "BC": 0, "ABC": 0}
    beam, calls = _search(table, max_float_layers=2, exhaustive_up_to=2)
    assert beam.method == "beam" and beam.chosen == frozenset() and calls == ["", "A", "B", "C"]
    full, calls = _search(table, max_float_layers=2, exhaustive_up_to=3)
    assert full.chosen == {"B", "C"}  # smallest parameter share among the pairs
    assert sorted(calls) == ["", "A", "AB", "AC", "B", "BC", "C"]  # not ABC: 3 layers


def test_beam_search_stops_when_nothing_more_fits():
    table = {"": 9, "A": 8, "B": 7, "C": 6, "AB": 5, "AC": 4, "BC": 3, "ABC": 0}
    found, calls = _search(table, max_float_params=0.45, exhaustive_up_to=0, beam_width=3)
    assert found.chosen == {"B", "C"} and found.method == "beam"
    assert sorted(calls) == ["", "A", "B", "BC", "C"] and len(calls) == len(set(calls))


def test_layers_over_budget_alone_are_not_candidates():
    macs = {"A": 0.5, "B": 0.1, "C": 0.1}
    found, calls = _search(TRAP, macs=macs, max_float_macs=0.2)
    assert found.candidates == ("B", "C") and found.chosen == {"B", "C"}
    assert not any("A" in c for c in calls)
    # Layers already in float (the base) count toward the budget: with B in float only C
    # fits beside it under 0.45, and the table is keyed by the *added* layers.
    found, calls = _search(
        {"": 9, "A": 1, "C": 5, "AC": 0}, base=frozenset({"B"}), max_float_params=0.45
    )
    assert found.candidates == ("C",) and found.chosen == {"C"} and sorted(calls) == ["", "C"]


@pytest.mark.parametrize(
    ("params", "macs", "table", "winner"),
    [
        # Equal counts: the smaller parameter share wins...
        ({"A": 0.2, "B": 0.1, "C": 0.3}, MACS, {"": 9, "A": 5, "B": 5, "C": 5}, {"B"}),
        # ... then the smaller MAC share ...
        ({"A": 0.2, "B": 0.2, "C": 0.2}, {"A": 0.2, "B": 0.1, "C": 0.3}, {"A": 5, "B": 5}, {"B"}),
        # ... then fewer layers ({B, C} costs exactly what A costs) ...
        ({"A": 0.2, "B": 0.1, "C": 0.1}, {"A": 0.2, "B": 0.1, "C": 0.1}, {"A": 5, "BC": 5}, {"A"}),
        # ... then module order.
        ({"A": 0.1, "B": 0.1, "C": 0.1}, MACS, {"A": 5, "B": 5, "C": 5}, {"A"}),
        # The empty set costs nothing, so a layer that removes nothing is not kept.
        (PARAMS, MACS, {"": 9, "A": 9, "B": 9, "C": 9}, set()),
    ],
)
def test_ties_go_to_the_cheaper_then_smaller_then_earlier_set(params, macs, table, winner):
    full = {"".join(s): 9 for k in range(4) for s in itertools.combinations(ORDER, k)}
    full.update(table)
    for exhaustive_up_to in (10, 0):
        found, _ = _search(
            full, params, macs, max_float_layers=2, exhaustive_up_to=exhaustive_up_to
        )
        assert found.chosen == winner


# --- on real models, against a brute force -----------------------------------------------


def _brute_force(model, scheme, calibration, probe, max_params, max_macs):
    """Quantize every set of layers within budget (the scheme's own float layers always in),
    count disagreements against the FP labels, and rank with the documented tie-breaks."""
    rows = layer_table(model, tuple(probe.shape[1:]))
    names = [r["name"] for r in rows]
    with torch.no_grad():
        reference = model(probe).argmax(dim=1)
    best, measured = None, 0
    for k in range(len(names) + 1):
        for subset in itertools.combinations(range(len(names)), k):
            chosen = [rows[i] for i in subset]
            params = math.fsum(r["param_share"] for r in chosen)
            macs = math.fsum(r["mac_share"] for r in chosen)
            kept = {names[i] for i in subset}
            if not set(scheme.float_layers) <= kept:
                continue
            if (max_params is not None and params > max_params) or (
                max_macs is not None and macs > max_macs
            ):
                continue
            float_layers = tuple(n for n in names if n in kept)
            q = quantize(model, dataclasses.replace(scheme, float_layers=float_layers), calibration)
            with torch.no_grad():
                wrong = int((q(probe).argmax(dim=1) != reference).sum())
            measured += 1
            key = (wrong, params, macs, k, subset)
            if best is None or key < best[0]:
                best = (key, float_layers)
    return best[1], best[0][0], measured


CASES = {
    # fc1 60%, fc2 30%, fc3 10% of parameters and MACs: {fc1, fc2} is over budget.
    "broken-per-tensor": ("broken_mlp", PER_TENSOR, 0.7, 0.7),
    "healthy-per-channel": ("healthy_mlp", Int8Static(), 0.7, 0.7),
    # TinyNet: conv1 4% / 11%, conv2 30% / 86%, fc 65% / 3% of parameters / MACs.
    "tiny-conv": ("trained_tiny", Int8Static(), 0.7, 0.2),
    "tiny-macs-only": ("trained_tiny", PER_TENSOR, None, 0.15),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exhaustive_search_equals_brute_force(case, request, calibration, probe):
    fixture, scheme, max_params, max_macs = CASES[case]
    model = request.getfixturevalue(fixture)
    result = search_fallback(
        model, scheme, calibration, probe, max_float_params=max_params, max_float_macs=max_macs
    )
    float_layers, wrong, measured = _brute_force(
        model, scheme, calibration, probe, max_params, max_macs
    )
    assert result.method == "exhaustive"
    assert (result.float_layers, result.disagreements_after) == (float_layers, wrong)
    assert result.measured == measured  # every set within budget, each once
    assert result.disagreements_after <= result.disagreements_before
    assert result.disagreements_before == disagreements(model, scheme, calibration, probe)
    assert result.disagreements_after == disagreements(model, result.scheme, calibration, probe)
    rows = {r["name"]: r for r in layer_table(model, tuple(probe.shape[1:]))}
    shares = [rows[n] for n in result.float_layers]
    assert result.float_param_share == math.fsum(r["param_share"] for r in shares)
    assert result.float_mac_share == math.fsum(r["mac_share"] for r in shares)
    assert max_params is None or result.float_param_share <= max_params
    assert max_macs is None or result.float_mac_share <= max_macs


@pytest.fixture(scope="module")
def admits_fc2(broken_mlp, calibration, probe) -> FallbackSearchResult:
    return search_fallback(
        broken_mlp, PER_TENSOR, calibration, probe, max_float_params=0.45, max_float_macs=0.45
    )


def test_the_broken_layer_is_kept_in_float_when_the_budget_admits_it(
    admits_fc2, broken_mlp, calibration, probe
):
    result = admits_fc2
    assert "fc2" in result.float_layers and "fc1" not in result.float_layers
    assert result.candidates == ("fc2", "fc3")
    assert result.disagreements_before > 100
    assert result.disagreements_after <= 0.05 * result.disagreements_before
    assert result.scheme == dataclasses.replace(PER_TENSOR, float_layers=result.float_layers)
    # The default 10% budget rules fc2 (30%) out: only fc3 is a candidate.
    default = search_fallback(broken_mlp, PER_TENSOR, calibration, probe)
    assert default.candidates == ("fc3",) and "fc2" not in default.float_layers
    assert default.float_param_share <= 0.1 and default.float_mac_share <= 0.1
    assert default.disagreements_after <= default.disagreements_before


def test_the_search_is_deterministic(admits_fc2, broken_mlp, calibration, probe):
    again = search_fallback(
        broken_mlp, PER_TENSOR, calibration, probe, max_float_params=0.45, max_float_macs=0.45
    )
    assert again == admits_fc2


def test_the_result_is_json_able(admits_fc2):
    data = json.loads(json.dumps(admits_fc2.as_dict()))
    assert data["scheme"].startswith("int8:per_channel=false:observer=minmax:float_layers=")
    assert data["float_layers"] == list(admits_fc2.float_layers)
    assert data["method"] == "exhaustive" and data["measured"] == 4
    assert data["max_float_params"] == 0.45 and data["max_float_layers"] is None
    assert data["beam_width"] == 4 and data["exhaustive_up_to"] == 10


def test_beam_search_on_a_real_model_stays_within_budget(
    admits_fc2, broken_mlp, calibration, probe
):
    beam = search_fallback(
        broken_mlp,
        PER_TENSOR,
        calibration,
        probe,
        max_float_params=0.45,
        max_float_macs=0.45,
        exhaustive_up_to=0,
    )
    assert beam.method == "beam" and "fc2" in beam.float_layers
    assert admits_fc2.disagreements_after <= beam.disagreements_after  # exhaustive is optimal
    assert beam.disagreements_after <= beam.disagreements_before
    assert beam.float_param_share <= 0.45 and beam.float_mac_share <= 0.45


def test_layers_already_in_float_count_toward_the_budget(broken_mlp, calibration, probe):
    scheme = dataclasses.replace(PER_TENSOR, float_layers=("fc3",))
    result = search_fallback(
        broken_mlp, scheme, calibration, probe, max_float_params=0.45, max_float_macs=0.45
    )
    assert result.candidates == ("fc2",)  # fc2 + fc3 = 40%; fc1 does not fit
    assert result.float_layers == ("fc2", "fc3") and result.added == ("fc2",)
    assert result.float_param_share == pytest.approx((1056 + 330) / 3466)
    capped = search_fallback(broken_mlp, scheme, calibration, probe, max_float_layers=1)
    assert capped.float_layers == ("fc3",) and capped.candidates == () and capped.measured == 1
    assert capped.disagreements_after == capped.disagreements_before


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            dict(max_float_params=None, max_float_macs=None),
            "needs a budget: max_float_params, max_float_macs or max_float_layers",
        ),
        (dict(max_float_params=0), r"max_float_params must be a share in \(0, 1\]"),
        (dict(max_float_macs=1.5), r"max_float_macs must be a share in \(0, 1\]"),
        (dict(max_float_macs=True), r"max_float_macs must be a share in \(0, 1\]"),
        (dict(max_float_params="10%"), r"max_float_params must be a share in \(0, 1\]"),
        (dict(max_float_layers=-1), "max_float_layers must be an int >= 0, got -1"),
        (dict(exhaustive_up_to=-1), "exhaustive_up_to must be an int >= 0, got -1"),
        (dict(exhaustive_up_to=None), "exhaustive_up_to must be an int >= 0, got None"),
        (dict(beam_width=0), "beam_width must be an int >= 1, got 0"),
        (dict(beam_width=2.0), "beam_width must be an int >= 1, got 2.0"),
    ],
)
def test_bad_budgets_are_refused(options, message, healthy_mlp, calibration, probe):
    with pytest.raises(MitigateError, match=message):
        search_fallback(healthy_mlp, Int8Static(), calibration, probe, **options)


def test_a_scheme_already_over_budget_is_refused(healthy_mlp, calibration, probe):
    with pytest.raises(MitigateError, match=r"already keeps 60.0% of parameters in float \(fc1\)"):
        search_fallback(healthy_mlp, Int8Static(float_layers=("fc1",)), calibration, probe)
    with pytest.raises(MitigateError, match=r"already keeps 30.2% of MACs in float \(fc2\)"):
        search_fallback(
            healthy_mlp,
            Int8Static(float_layers=("fc2",)),
            calibration,
            probe,
            max_float_params=None,
            max_float_macs=0.2,
        )
    with pytest.raises(MitigateError, match=r"already keeps 2 layers in float \(fc2, fc3\)"):
        search_fallback(
            healthy_mlp,
            Int8Static(float_layers=("fc3", "fc2")),
            calibration,
            probe,
            max_float_params=None,
            max_float_macs=None,
            max_float_layers=1,
        )


def test_bad_inputs_are_refused(healthy_mlp, calibration, probe):
    with pytest.raises(MitigateError, match="need a static int8 scheme"):
        search_fallback(healthy_mlp, Int8Dynamic(), calibration, probe)
    with pytest.raises(MitigateError, match="'nope' is not a Conv/Linear layer"):
        search_fallback(healthy_mlp, Int8Static(float_layers=("nope",)), calibration, probe)
    with pytest.raises(MitigateError, match="probe must be a non-empty float tensor"):
        search_fallback(healthy_mlp, Int8Static(), calibration, probe[:0])


def test_public_functions_take_the_scheme_names_quantize_takes(broken_mlp, calibration, probe):
    """One vocabulary: a scheme name works wherever an Int8Static does, with the same result."""
    import mitigate
    from mitigate.mitigation.sensitivity import disagreements

    name = "int8:per_channel=false:observer=minmax"
    parsed = Int8Static(per_channel=False, observer="minmax")
    assert mitigate.parse_scheme(name) == parsed
    by_name = mitigate.search_fallback(broken_mlp, name, calibration, probe, max_float_layers=1)
    by_object = mitigate.search_fallback(broken_mlp, parsed, calibration, probe, max_float_layers=1)
    assert by_name == by_object
    greedy = mitigate.greedy_fallback(broken_mlp, name, calibration, probe, max_float_layers=1)
    assert (
        greedy.float_layers
        == mitigate.greedy_fallback(
            broken_mlp, parsed, calibration, probe, max_float_layers=1
        ).float_layers
    )
    assert disagreements(broken_mlp, name, calibration, probe) == disagreements(
        broken_mlp, parsed, calibration, probe
    )
    rows = mitigate.layer_sensitivity(broken_mlp, name, calibration, probe)
    assert rows == mitigate.layer_sensitivity(broken_mlp, parsed, calibration, probe)
    settings = mitigate.search_settings(broken_mlp, name, calibration, probe, engines=["x86"])
    assert (
        settings.best
        == mitigate.search_settings(broken_mlp, parsed, calibration, probe, engines=["x86"]).best
    )
    with pytest.raises(MitigateError, match="need a static int8 scheme .* got fp16"):
        mitigate.greedy_fallback(broken_mlp, "fp16", calibration, probe, max_float_layers=1)
