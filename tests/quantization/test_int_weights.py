from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.quantization import quantize
from mitigate.quantization.int_weights import (
    check_static_int8,
    float_weight,
    fuse_float,
    layer_io,
    quantized_layers,
    read_layer,
    with_weights,
)

SCHEMES = ["int8", "int8:per_channel=false", "int8:engine=qnnpack"]


@pytest.fixture(scope="module")
def x(digits_xy) -> torch.Tensor:
    return digits_xy[0][:200]


@pytest.fixture(scope="module", params=SCHEMES)
def q(request, trained_tiny, x):
    return quantize(trained_tiny, request.param, x)


def _ints(q) -> dict[str, torch.Tensor]:
    return {n: q.inner.get_submodule(n).weight().int_repr().clone() for n in quantized_layers(q)}


def test_layers_are_listed_by_fp_name_in_forward_order_with_fused_relu(q):
    assert quantized_layers(q) == ["conv1", "conv2", "fc"]
    conv1, fc = read_layer(q, "conv1"), read_layer(q, "fc")
    assert (conv1.op, conv1.relu, fc.op, fc.relu) == ("conv2d", True, "linear", False)
    assert conv1.weight.dtype == torch.int8 and conv1.weight.shape == (8, 1, 3, 3)
    assert conv1.scales.dtype == torch.float64 and conv1.zero_points.dtype == torch.int64
    per_channel = q.scheme.per_channel
    assert conv1.axis == (0 if per_channel else None)
    assert conv1.scales.shape == ((8,) if per_channel else (1,))
    assert fc.bias is not None and fc.bias.shape == (10,)


def test_layers_kept_in_float_are_not_listed(trained_tiny, x):
    q = quantize(trained_tiny, "int8:float_layers=conv2", x)
    assert quantized_layers(q) == ["conv1", "fc"]
    with pytest.raises(MitigateError, match=r"no quantized Conv/Linear layer named 'conv2'"):
        read_layer(q, "conv2")


def test_writing_the_same_integers_and_biases_back_is_bit_identical(q, x):
    layers = {n: read_layer(q, n) for n in quantized_layers(q)}
    copy = with_weights(
        q, {n: lay.weight for n, lay in layers.items()}, {n: lay.bias for n, lay in layers.items()}
    )
    assert copy is not q and copy.scheme == q.scheme
    with torch.no_grad():
        assert torch.equal(copy(x), q(x))


def test_written_integers_are_exactly_what_the_kernel_holds_and_the_original_is_unchanged(q, x):
    before_ints = _ints(q)
    with torch.no_grad():
        before_out = q(x)
    ints = before_ints["conv2"].clone()
    ints[0] = 127
    ints[1] = -128
    ints[2, 0] = 5
    changed = with_weights(q, {"conv2": ints})
    module = changed.inner.get_submodule("conv2")
    assert torch.equal(module.weight().int_repr(), ints)
    # Scales, zero points and axis are those of the original layer.
    assert torch.equal(read_layer(changed, "conv2").scales, read_layer(q, "conv2").scales)
    with torch.no_grad():
        assert not torch.equal(changed(x), before_out)
        assert torch.equal(q(x), before_out)
    after_ints = _ints(q)
    assert all(torch.equal(after_ints[n], before_ints[n]) for n in before_ints)


def test_a_written_bias_is_used(q, x):
    fc = read_layer(q, "fc")
    shifted = with_weights(q, biases={"fc": fc.bias + 0.5})
    assert torch.allclose(read_layer(shifted, "fc").bias, fc.bias + 0.5)
    assert torch.equal(read_layer(shifted, "fc").weight, fc.weight)
    with torch.no_grad():
        assert (shifted(x) - q(x)).mean() == pytest.approx(0.5, abs=0.05)


def test_backend_integers_round_the_bn_folded_float_weights(q, trained_tiny):
    # conv1 is followed by a BatchNorm: the backend rounded the folded weight, not conv1's own.
    fused = fuse_float(trained_tiny)
    for name in quantized_layers(q):
        layer = read_layer(q, name)
        w, b = float_weight(fused, name)
        grid = layer.grid(w)
        # Round-to-nearest, up to the backend's float32 division a hair from x.5, then clamped.
        assert ((layer.weight.double() - grid.clamp(-128, 127)).abs() <= 0.5 + 1e-4).all(), name
        assert torch.allclose(layer.bias, b)
        base, rest = layer.rounding_base(w)
        assert ((layer.weight.double() - base) >= 0).all()
        assert ((layer.weight.double() - base) <= 1).all()
        assert ((rest >= 0) & (rest <= 1)).all()
    own = trained_tiny.conv1.weight.detach()
    assert not torch.allclose(float_weight(fused, "conv1")[0], own)


def test_fused_float_copy_computes_the_fp_model_and_leaves_it_alone(trained_tiny, x):
    state = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    fused = fuse_float(trained_tiny)
    with torch.no_grad():
        assert torch.allclose(fused(x), trained_tiny(x), atol=1e-5)
    assert all(torch.equal(v, trained_tiny.state_dict()[k]) for k, v in state.items())


def test_simulated_layer_math_matches_the_int8_kernel(q, x):
    names = quantized_layers(q)
    io = layer_io(q, x, names)
    for name in names:
        layer = read_layer(q, name)
        assert io[name].inputs.shape[0] == len(x)
        y = layer.forward_float(io[name].inputs, layer.dequantize(layer.weight), layer.bias)
        simulated = layer.clip_output(layer.activate(y))
        # The kernel rounds its output to the quint8 grid: at most half a step apart.
        gap = (simulated - io[name].outputs).abs()
        assert gap.max() <= 0.5 * layer.output_scale + 1e-4, name


def test_float_layer_io_records_the_fp_input(trained_tiny, x):
    fused = fuse_float(trained_tiny)
    io = layer_io(fused, x, ["fc"])["fc"]
    assert io.inputs.shape == (len(x), 128)
    with torch.no_grad():
        assert torch.allclose(io.outputs, trained_tiny(x), atol=1e-5)


def test_bad_writes_are_refused(trained_tiny, x):
    q = quantize(trained_tiny, "int8", x)
    ints = read_layer(q, "fc").weight
    with pytest.raises(MitigateError, match=r"no quantized Conv/Linear layer named 'bn1'"):
        with_weights(q, {"bn1": ints})
    with pytest.raises(MitigateError, match=r"must have shape \[10, 128\]"):
        with_weights(q, {"fc": ints[:5]})
    with pytest.raises(MitigateError, match=r"must be an integer tensor"):
        with_weights(q, {"fc": ints.float()})
    with pytest.raises(MitigateError, match=r"must lie in \[-128, 127\], got values from"):
        with_weights(q, {"fc": ints.long() + 200})
    with pytest.raises(MitigateError, match=r"bias of fc must be a float tensor \[10\]"):
        with_weights(q, biases={"fc": torch.zeros(3)})


def test_only_static_int8_models_are_accepted(trained_tiny, x):
    for scheme in ("fp16", "int8-dynamic"):
        with pytest.raises(MitigateError, match=r"static int8 models only .* got " + scheme):
            check_static_int8(quantize(trained_tiny, scheme, x), "adaround")
    with pytest.raises(MitigateError, match=r"needs a QuantizedModel .* got Linear"):
        quantized_layers(nn.Linear(2, 2))
