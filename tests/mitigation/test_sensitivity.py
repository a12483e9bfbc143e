from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation import (
    disagreements,
    layer_sensitivity,
    selected_pool_inputs,
    unattributed_disagreements,
)
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


# ---- the probe: pool inputs a selector picks -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_setup():
    from mitigate.config import load_config, override
    from mitigate.models import build_model
    from mitigate.pipeline import load_data

    cfg = override(
        load_config(None),
        data__train=300,
        data__val=50,
        data__calibration=50,
        data__pool=100,
        data__test=100,
        shifts__families="gaussian-noise,rotate,contrast",
        shifts__severities="2,4",
        shifts__held_out="rotate",
    )
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10).eval()
    return cfg, data, model


def _full_pool(cfg, data, model, q_model=None, selector="margin"):
    from mitigate.data.evalset import iter_batches
    from mitigate.pipeline import pool_groups
    from mitigate.selectors import compute_score

    groups = pool_groups(cfg, data)
    n = len(data.splits.pool)
    xs, scores, names = [], [], []
    with torch.no_grad():
        for b in iter_batches(data.splits.pool, groups, batch_size=64, seed=cfg.seed, split="pool"):
            position = b.group * n + b.index
            q = q_model(b.x) if q_model is not None else None
            scores.append(compute_score(selector, model(b.x), q, index=position, seed=cfg.seed))
            xs.append(b.x)
            names += [(groups[b.group].name, int(i)) for i in b.index]
    return torch.cat(xs), torch.cat(scores), names


def test_probe_is_the_selected_pool_inputs_rebuilt_exactly(tiny_setup):
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    x, y, meta = selected_pool_inputs(cfg, data, model, selector="margin", budget=40)
    all_x, scores, names = _full_pool(cfg, data, model)
    picked = select(scores, 40)
    assert meta == [names[int(p)] for p in picked]
    assert torch.allclose(x, all_x[picked], atol=1e-5)
    assert torch.equal(y, data.splits.pool.labels[torch.tensor([i for _, i in meta])])
    assert x.shape == (40, 1, 8, 8) and x.dtype == torch.float32
    assert not any(name.startswith("rotate") for name, _ in meta)  # held out of the pool
    assert len({name for name, _ in meta}) > 1  # several groups, rebuilt group by group


def test_class_balanced_probe_equals_an_in_memory_balanced_selection(tiny_setup):
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    x, _, meta = selected_pool_inputs(
        cfg, data, model, selector="margin", budget=40, class_balanced=True, batch_size=37
    )
    all_x, scores, names = _full_pool(cfg, data, model)
    with torch.no_grad():
        predicted = model(all_x).argmax(1)
    picked = select(scores, 40, labels=predicted, class_balanced=True)
    assert meta == [names[int(p)] for p in picked]
    assert torch.allclose(x, all_x[picked], atol=1e-5)
    first_round = predicted[picked[: len(predicted.unique())]]
    assert len(first_round.unique()) == len(predicted.unique())  # one of every class first


def test_probe_with_a_differential_selector_needs_the_quantized_model(tiny_setup):
    from mitigate.quantization import quantize
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    with pytest.raises(MitigateError, match="selector 'kl' compares the two models"):
        selected_pool_inputs(cfg, data, model, selector="kl", budget=10)
    with pytest.raises(MitigateError, match="unknown selector 'nope'; valid choices: margin"):
        selected_pool_inputs(cfg, data, model, selector="nope", budget=10)
    q = quantize(model, "int8", data.splits.calibration.float_batch(slice(0, 50)))
    _, _, meta = selected_pool_inputs(cfg, data, model, selector="kl", budget=10, q_model=q)
    _, scores, names = _full_pool(cfg, data, model, q_model=q, selector="kl")
    assert meta == [names[int(p)] for p in select(scores, 10)]
