from __future__ import annotations

import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.mitigation.bias_correction import bias_correction
from mitigate.quantization import quantize
from mitigate.quantization.int_weights import (
    float_weight,
    fuse_float,
    layer_io,
    quantized_layers,
    read_layer,
)


def _mean_errors(model, q, x) -> dict[str, torch.Tensor]:
    """Per layer, the mean pre-activation error per output channel of ``q`` against ``model``,
    measured independently of the code under test's bookkeeping."""
    fused = fuse_float(model)
    errors = {}
    for name in quantized_layers(q):
        layer = read_layer(q, name)
        x_q = layer_io(q, x, [name])[name].inputs
        x_fp = layer_io(fused, x, [name])[name].inputs
        w, b = float_weight(fused, name)
        with torch.no_grad():
            diff = layer.forward_float(x_q, layer.dequantize(layer.weight), layer.bias)
            diff = diff - layer.forward_float(x_fp, w, b)
        dim = layer.channel_dim
        errors[name] = diff.movedim(dim, 0).reshape(diff.shape[dim], -1).mean(dim=1)
    return errors


@pytest.fixture(scope="module", params=["int8", "int8:engine=qnnpack:per_channel=false"])
def run(request, trained_tiny, calibration):
    state = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    q0 = quantize(trained_tiny, request.param, calibration)
    return state, q0, bias_correction(trained_tiny, q0, calibration)


def test_mean_error_per_channel_goes_to_zero_on_the_inputs(run, trained_tiny, calibration):
    _, q0, result = run
    before = _mean_errors(trained_tiny, q0, calibration)
    after = _mean_errors(trained_tiny, result.quantized, calibration)
    assert [row.name for row in result.layers] == ["conv1", "conv2", "fc"]
    assert before["conv1"].abs().max() > 0
    for name in after:
        scale = max(float(before[name].abs().max()), 1e-6)
        assert float(after[name].abs().max()) <= 0.01 * scale + 1e-6, name
    # The first layer sees the same input before and after: its shift is its error before.
    assert torch.allclose(result.layers[0].shift, before["conv1"], atol=1e-6)
    assert result.layers[0].error_before == pytest.approx(float(before["conv1"].abs().mean()))


def test_the_int8_model_output_has_a_smaller_mean_error(run, trained_tiny, calibration):
    # fc has no ReLU: its int8 output is the logits; their mean error per class shrinks.
    _, q0, result = run
    with torch.no_grad():
        f = trained_tiny(calibration)
        before = (q0(calibration) - f).mean(dim=0).abs().sum()
        after = (result.quantized(calibration) - f).mean(dim=0).abs().sum()
    assert after < before


def test_only_biases_change_and_f0_and_q0_are_untouched(run, trained_tiny):
    state, q0, result = run
    assert all(torch.equal(v, trained_tiny.state_dict()[k]) for k, v in state.items())
    assert result.quantized is not q0 and result.quantized.scheme == q0.scheme
    for row in result.layers:
        old, new = read_layer(q0, row.name), read_layer(result.quantized, row.name)
        assert torch.equal(new.weight, old.weight)
        assert torch.equal(new.scales, old.scales) and new.axis == old.axis
        assert torch.allclose(new.bias, old.bias - row.shift, atol=1e-6)
    assert result.as_dict()["layers"][0]["name"] == "conv1"


def test_layers_can_be_chosen(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8", calibration)
    result = bias_correction(trained_tiny, q0, calibration, layers=["fc"])
    assert [row.name for row in result.layers] == ["fc"]
    assert torch.equal(read_layer(result.quantized, "conv1").bias, read_layer(q0, "conv1").bias)


def test_bad_arguments_raise_one_line_errors(trained_tiny, calibration):
    q0 = quantize(trained_tiny, "int8", calibration)
    with pytest.raises(MitigateError, match=r"bias_correction works on static int8 models only"):
        bias_correction(trained_tiny, quantize(trained_tiny, "bf16"), calibration)
    with pytest.raises(MitigateError, match=r"non-empty float tensor"):
        bias_correction(trained_tiny, q0, torch.empty(0, 1, 8, 8))
    with pytest.raises(MitigateError, match=r"NaN"):
        bias_correction(trained_tiny, q0, calibration.clone().fill_(float("nan")))
    with pytest.raises(MitigateError, match=r"do not fit the model"):
        bias_correction(trained_tiny, q0, torch.rand(4, 1, 6, 6))
