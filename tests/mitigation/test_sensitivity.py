from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation import disagreements, layer_sensitivity, unattributed_disagreements
from mitigate.quantization import Float16, Int8Static

PER_TENSOR = Int8Static(per_channel=False, observer="minmax")


def _in_float(*names: str) -> Int8Static:
    return Int8Static(per_channel=False, observer="minmax", float_layers=names)


def _count(model, scheme, calibration, probe) -> int:
    """Independent recount: quantize, compare argmaxes."""
    from mitigate.quantization import quantize

    q = quantize(model, scheme, calibration)
    with torch.no_grad():
        return int((q(probe).argmax(1) != model(probe).argmax(1)).sum())


@pytest.fixture(scope="module")
def broken_rows(broken_mlp, calibration, probe):
    return layer_sensitivity(broken_mlp, PER_TENSOR, calibration, probe)


def test_the_pathological_layer_ranks_first(
    broken_rows, broken_mlp, healthy_mlp, calibration, probe
):
    with torch.no_grad():  # the crafted weight does not change the float model at all
        assert torch.equal(broken_mlp(probe), healthy_mlp(probe))
    rows = broken_rows
    assert [r.name for r in rows][0] == "fc2"
    assert sorted(r.name for r in rows) == ["fc1", "fc2", "fc3"]
    all_int8 = _count(broken_mlp, PER_TENSOR, calibration, probe)
    assert all_int8 > 100  # the crafted weight really breaks int8
    for r in rows:
        assert r.disagreements_without + r.removed_by_float == all_int8
    top = rows[0]
    assert top.removed_by_float >= 0.9 * all_int8
    assert top.disagreements_alone >= 0.9 * all_int8  # fc2 alone does the damage
    assert max(r.disagreements_alone for r in rows[1:]) < 0.1 * all_int8
    assert top.params == 32 * 32 + 32 and top.type == "Linear"
    assert sum(r.param_share for r in rows) == pytest.approx(1.0)
    assert sum(r.mac_share for r in rows) == pytest.approx(1.0)
    removed = [r.removed_by_float for r in rows]
    assert removed == sorted(removed, reverse=True)


def test_rows_match_independent_recounts(broken_rows, broken_mlp, calibration, probe):
    rows = {r.name: r for r in broken_rows}
    # "without fc1": fc1 in float, the rest int8; "alone fc3": every other module in float.
    assert rows["fc1"].disagreements_without == _count(
        broken_mlp, _in_float("fc1"), calibration, probe
    )
    assert rows["fc3"].disagreements_alone == _count(
        broken_mlp, _in_float("fc1", "fc2"), calibration, probe
    )


def test_mode_alone_fills_only_its_column(broken_rows, broken_mlp, calibration, probe):
    alone = layer_sensitivity(broken_mlp, PER_TENSOR, calibration, probe, mode="alone")
    assert all(r.disagreements_without is None and r.removed_by_float is None for r in alone)
    counts = [r.disagreements_alone for r in alone]
    assert counts == sorted(counts, reverse=True)
    assert {r.name: r.disagreements_alone for r in alone} == {
        r.name: r.disagreements_alone for r in broken_rows
    }


def test_layers_the_scheme_keeps_in_float_are_left_out(broken_mlp, calibration, probe):
    scheme = _in_float("fc2")
    rows = layer_sensitivity(broken_mlp, scheme, calibration, probe, mode="without")
    assert sorted(r.name for r in rows) == ["fc1", "fc3"]
    baseline = disagreements(broken_mlp, scheme, calibration, probe)
    assert all(r.disagreements_without + r.removed_by_float == baseline for r in rows)


class Residual(nn.Module):
    """Conv-BN-ReLU and a functional residual "+": the patterns FX fuses or quantizes itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(y + self.conv2(y), 1))


@pytest.fixture(scope="module")
def residual() -> nn.Module:
    torch.manual_seed(0)
    return Residual().eval()


def test_every_module_in_float_leaves_only_functional_ops(residual, calibration, probe):
    # The residual "+" is functional, so it stays quantized: the floor is what it causes
    # alone, and no more than the all-int8 count.
    floor = unattributed_disagreements(residual, Int8Static(), calibration, probe)
    assert 0 <= floor <= disagreements(residual, Int8Static(), calibration, probe)


def test_bad_input_names_the_problem(residual, calibration):
    x = calibration
    with pytest.raises(MitigateError, match="sensitivity mode 'nope'; valid choices: both"):
        layer_sensitivity(residual, Int8Static(), x, x, mode="nope")
    with pytest.raises(MitigateError, match="static int8 scheme .*got fp16"):
        layer_sensitivity(residual, Float16(), x, x)
    # bn1 is fused into conv1 by FX: keeping it "in float" would silently do nothing.
    with pytest.raises(MitigateError, match="'bn1' is not a Conv/Linear layer; layers: conv1"):
        layer_sensitivity(residual, Int8Static(float_layers=("bn1",)), x, x)
    with pytest.raises(MitigateError, match="probe must be a non-empty float tensor"):
        layer_sensitivity(residual, Int8Static(), x, x[:0])
    with pytest.raises(MitigateError, match="different shapes"):
        layer_sensitivity(residual, Int8Static(), x, torch.rand(4, 1, 9, 9))
