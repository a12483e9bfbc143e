from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation.adaround import adaround
from mitigate.models import build_model
from mitigate.quantization import quantize
from mitigate.quantization.int_weights import (
    float_weight,
    fuse_float,
    quantized_layers,
    read_layer,
)


def _crafted(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """One layer whose weights are small except one of 10 per output channel that reads an
    input which is always 0: the float function ignores it, but it sets a weight scale so
    coarse that round-to-nearest errors add up, and the inputs (mean 1) add them coherently."""
    g = torch.Generator().manual_seed(0)
    if kind == "linear":
        model = nn.Sequential(nn.Linear(32, 4))
        x = 1.0 + 0.1 * torch.randn(256, 32, generator=g)
    else:
        model = nn.Sequential(nn.Conv2d(3, 4, 3))
        x = 1.0 + 0.1 * torch.randn(256, 3, 6, 6, generator=g)
    x[:, 0] = 0.0
    layer = model[0]
    with torch.no_grad():
        w = (torch.rand(layer.weight.shape, generator=g) * 2 - 1) * 0.1
        w[:, 0] = 10.0
        layer.weight.copy_(w)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=g) - 0.5)
    return model.eval(), x


def _mse(q: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((q(x) - model(x)) ** 2).mean())


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("scheme", ["int8", "int8:per_channel=false", "int8:engine=qnnpack"])
def test_learned_rounding_beats_round_to_nearest_on_a_crafted_layer(kind, scheme):
    model, x = _crafted(kind)
    q0 = quantize(model, scheme, x)
    result = adaround(model, q0, x)
    (row,) = result.layers
    assert row.name == "0" and row.kept and row.changed > 0
    assert row.mse_after < 0.5 * row.mse_before
    # The backend model carries the learned integers, and its own output is closer to f0's.
    assert _mse(result.quantized, model, x) < 0.5 * _mse(q0, model, x)
    learned = read_layer(result.quantized, "0")
    grid = learned.grid(model[0].weight.detach())
    assert learned.weight.dtype == torch.int8
    # Each integer is floor or ceil of w / s (the grid is never an exact integer here), in range.
    assert ((learned.weight.double() - grid).abs() < 1.0).all()
    assert int(learned.weight.min()) >= -128 and int(learned.weight.max()) <= 127
    assert int((learned.weight != read_layer(q0, "0").weight).sum()) == row.changed
    # Only the integers changed: same scales, bias, output grid.
    before = read_layer(q0, "0")
    assert torch.equal(learned.scales, before.scales) and torch.equal(learned.bias, before.bias)
    assert learned.output_scale == before.output_scale


@pytest.fixture(scope="module")
def tiny_run(trained_tiny, calibration):
    state = _state(trained_tiny)
    q0 = quantize(trained_tiny, "int8", calibration)
    q0_ints = {n: read_layer(q0, n).weight for n in quantized_layers(q0)}
    result = adaround(trained_tiny, q0, calibration)
    return state, q0, q0_ints, result


def test_adaround_on_a_trained_model_keeps_f0_q0_and_the_scheme(tiny_run, trained_tiny):
    state, q0, q0_ints, result = tiny_run
    assert all(torch.equal(v, trained_tiny.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(read_layer(q0, n).weight, w) for n, w in q0_ints.items())
    assert result.quantized is not q0 and result.quantized.scheme == q0.scheme
    assert [row.name for row in result.layers] == ["conv1", "conv2", "fc"]
    assert result.changed == sum(row.changed for row in result.layers) > 0
    assert all(row.mse_after <= row.mse_before for row in result.layers)
    assert result.as_dict()["layers"][0]["name"] == "conv1"


def test_learned_integers_are_floor_or_ceil_of_the_bn_folded_weights(tiny_run, trained_tiny):
    _, q0, q0_ints, result = tiny_run
    fused = fuse_float(trained_tiny)
    for row in result.layers:
        learned = read_layer(result.quantized, row.name)
        grid = learned.grid(float_weight(fused, row.name)[0])
        # Within one step of w / s (float32 noise at exact integers aside) and in range.
        assert ((learned.weight.double() - grid).abs() < 1.0 + 1e-4).all(), row.name
        assert int((learned.weight != q0_ints[row.name]).sum()) == row.changed


def test_adaround_does_not_make_held_out_outputs_much_worse(tiny_run, trained_tiny, probe):
    _, q0, _, result = tiny_run
    assert _mse(result.quantized, trained_tiny, probe) <= 1.1 * _mse(q0, trained_tiny, probe)


def test_the_same_seed_gives_the_same_integers(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8:engine=qnnpack", calibration)
    runs = [
        adaround(trained_tiny, q0, calibration, iterations=60, batch_size=32, seed=seed)
        for seed in (3, 3, 4)
    ]
    ints = [{n: read_layer(r.quantized, n).weight for n in ("conv1", "conv2", "fc")} for r in runs]
    assert all(torch.equal(ints[0][n], ints[1][n]) for n in ints[0])
    assert [r.changed for r in runs[:2]] == [runs[0].changed] * 2


def test_layers_in_float_and_unselected_layers_keep_their_state(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8:per_channel=false:float_layers=conv2", calibration)
    result = adaround(trained_tiny, q0, calibration, iterations=30, layers=["fc"])
    assert [row.name for row in result.layers] == ["fc"]
    assert torch.equal(read_layer(result.quantized, "conv1").weight, read_layer(q0, "conv1").weight)
    conv2 = result.quantized.inner.get_submodule("conv2")
    assert all(p.dtype == torch.float32 for p in conv2.parameters())
    with pytest.raises(MitigateError, match=r"no quantized Conv/Linear layer named 'conv2'"):
        adaround(trained_tiny, q0, calibration, layers=["conv2"])


def test_zoo_lenet5_with_linear_relu_layers(digits_xy):
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=(8, 8), num_classes=10).eval()
    x = digits_xy[0][:128]
    q0 = quantize(model, "int8", x)
    result = adaround(model, q0, x, iterations=30)
    names = ["conv1", "conv2", "classifier.fc1", "classifier.fc2", "classifier.fc3"]
    assert [row.name for row in result.layers] == names
    assert all(row.mse_after <= row.mse_before for row in result.layers)
    with torch.no_grad():
        assert result.quantized(x).shape == (128, 10)


def test_zero_iterations_keep_round_to_nearest(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8", calibration)
    result = adaround(trained_tiny, q0, calibration, iterations=0)
    assert result.changed == 0
    with torch.no_grad():
        assert torch.equal(result.quantized(calibration), q0(calibration))


def test_bad_arguments_raise_one_line_errors(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8", calibration)
    cases = [
        ((trained_tiny, quantize(trained_tiny, "fp16"), calibration), r"static int8 models only"),
        ((trained_tiny, trained_tiny, calibration), r"needs a QuantizedModel .* got TinyNet"),
        ((trained_tiny, q0, calibration[:0]), r"non-empty float tensor \[N, ...\], got \[0, 1"),
        ((trained_tiny, q0, calibration[:, :, :5]), r"do not fit the model"),
        ((trained_tiny, q0, calibration.long()), r"must be a float tensor, got dtype torch.int64"),
        ((trained_tiny, q0, torch.full_like(calibration, float("nan"))), r"NaN"),
        ((nn.Linear(64, 10), q0, calibration), r"does not come from this model"),
    ]
    for args, match in cases:
        with pytest.raises(MitigateError, match=match):
            adaround(*args)
    lenet = build_model("lenet5", in_channels=1, image_size=(8, 8), num_classes=10).eval()
    with pytest.raises(MitigateError, match=r"shape \[1, 10, 10\] per item; the model takes"):
        adaround(lenet, quantize(lenet, "int8", calibration), torch.rand(4, 1, 10, 10))
    for option, match in [
        ({"iterations": -1}, r"iterations must be an integer >= 0, got -1"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"lr": 0.0}, r"lr must be a positive number"),
        ({"warmup": 1.0}, r"warmup must be in \[0, 1\)"),
    ]:
        with pytest.raises(MitigateError, match=match):
            adaround(trained_tiny, q0, calibration, **option)
