from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.quantization import MinMaxObserver

from mitigate.errors import MitigateError
from mitigate.quantization import activation_qparams, quantize
from mitigate.quantization.act_ranges import (
    KINDS,
    ActPoint,
    activation_points,
    with_qparams,
    with_ranges,
)

SCHEMES = ["int8", "int8:engine=qnnpack", "int8:reduce_range=false"]


@pytest.fixture(scope="module")
def x(digits_xy) -> torch.Tensor:
    return digits_xy[0][:200]


@pytest.fixture(scope="module", params=SCHEMES)
def q(request, trained_tiny, x):
    return quantize(trained_tiny, request.param, x)


def _qparams(q) -> list[tuple[str, float, int]]:
    return [(p.name, p.scale, p.zero_point) for p in activation_points(q)]


def _observer(lo: float, hi: float, quant_max: int) -> tuple[float, int]:
    """What torch's MinMaxObserver computes when it has seen exactly ``lo`` and ``hi``."""
    observer = MinMaxObserver(
        dtype=torch.quint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=quant_max
    )
    observer(torch.tensor([lo, hi]))
    scale, zero = observer.calculate_qparams()
    return float(scale), int(zero)


def test_points_run_in_forward_order_from_the_input_to_the_logits(q):
    points = activation_points(q)
    assert [(p.name, p.kind) for p in points] == [
        ("conv1_input", "quantize"),
        ("conv1", "module"),
        ("conv2", "module"),
        (points[3].name, "function"),  # the residual add: named after its graph node
        ("fc", "module"),
    ]
    assert all(p.kind in KINDS for p in points)
    quant_max = 127 if q.scheme.effective_reduce_range else 255
    assert {(p.quant_min, p.quant_max) for p in points} == {(0, quant_max)}
    for p in points:
        assert p.lo <= 0.0 <= p.hi and p.scale > 0
        assert p.range == (p.lo, p.hi)
        # The kernels clip to quint8's 0..255: above hi for a 7-bit point, at hi for 8 bits.
        assert p.clip_range == (p.lo, (255 - p.zero_point) * p.scale)
        assert (p.clip_range[1] > p.hi) == (quant_max == 127)
    # The input (digits in [0, 1]) and the ReLU outputs start at 0; the logits are two-sided.
    assert all(p.zero_point == 0 for p in points[:4])
    assert points[0].hi == pytest.approx(1.0, abs=0.01)
    assert points[-1].lo < 0 < points[-1].hi


def test_points_agree_with_activation_qparams_and_the_graph_buffers(q):
    points = activation_points(q)
    reference = activation_qparams(q)
    for p in points:
        if p.kind != "function":
            assert reference[p.name] == [p.scale, float(p.zero_point)]
    add = points[3]
    assert (add.scale, add.zero_point) == (float(q.inner._scale_0), int(q.inner._zero_point_0))


def test_writing_back_the_same_ranges_is_bit_identical(q, x):
    points = activation_points(q)
    copy = with_ranges(q, {p.name: p.range for p in points})
    assert copy is not q and copy.scheme == q.scheme
    assert activation_points(copy) == points
    with torch.no_grad():
        assert torch.equal(copy(x), q(x))


def test_a_narrower_range_gets_what_a_minmax_observer_would_compute(q):
    points = activation_points(q)
    ranges = {p.name: (0.7 * p.lo, 0.7 * p.hi) for p in points}
    changed = activation_points(with_ranges(q, ranges))
    for old, new in zip(points, changed, strict=True):
        expected = _observer(*ranges[old.name], old.quant_max)
        assert (new.scale, new.zero_point) == expected, old.name
        assert (new.quant_min, new.quant_max) == (old.quant_min, old.quant_max)
        assert new.scale == pytest.approx(0.7 * old.scale, rel=1e-5)
        assert abs(new.zero_point - old.zero_point) <= 1


def test_a_range_is_widened_to_contain_zero_as_observers_do(q):
    point = activation_points(q)[-1]
    quant_max = point.quant_max
    for lo, hi in [(0.5, 2.0), (-3.0, -1.0), (-1.25, 3.5), (0.0, 0.0)]:
        scale, zero = point.qparams_for(lo, hi)
        assert (scale, zero) == _observer(lo, hi, quant_max)
        new = ActPoint(point.name, point.kind, scale, zero, point.quant_min, quant_max)
        assert new.lo <= min(lo, 0.0) + scale and new.hi >= max(hi, 0.0) - scale


def test_the_original_is_untouched_and_the_copy_runs_the_new_qparams(q, x):
    before_points = activation_points(q)
    with torch.no_grad():
        before_out = q(x)
    conv1 = before_points[1]
    changed = with_ranges(q, {"conv1_input": (0.0, 0.5), "conv1": (0.0, 0.5 * conv1.hi)})
    new = {p.name: p for p in activation_points(changed)}
    seen = {}
    module = changed.inner.get_submodule("conv1")
    handle = module.register_forward_hook(lambda m, args, out: seen.update(i=args[0], o=out))
    try:
        with torch.no_grad():
            after_out = changed(x)
    finally:
        handle.remove()
    # The real int8 kernels quantized the input and requantized conv1's output on the new grids.
    assert seen["i"].q_scale() == new["conv1_input"].scale
    assert seen["o"].q_scale() == new["conv1"].scale
    assert seen["o"].q_zero_point() == new["conv1"].zero_point
    # Bright pixels clipped where the quint8 tensor ends: at 0.5 with 8 bits, about 1.0 with
    # x86's 7 bits (its reduced range costs resolution, not headroom).
    clip = new["conv1_input"].clip_range[1]
    assert float(seen["i"].dequantize().max()) == pytest.approx(min(clip, 1.0), abs=1e-6)
    assert clip == pytest.approx(0.5 if new["conv1_input"].quant_max == 255 else 0.5 * 255 / 127)
    assert not torch.equal(after_out, before_out)
    assert activation_points(q) == before_points
    with torch.no_grad():
        assert torch.equal(q(x), before_out)


def test_a_model_that_already_ran_gives_the_same_copy_as_a_fresh_one(q, trained_tiny, x):
    # qnnpack caches its operators (and the scales in them) on the first call; setting
    # qparams on a model after it ran would compute with stale ones.
    with torch.no_grad():
        q(x)
    qparams = {p.name: (p.scale * 0.8, p.zero_point) for p in activation_points(q)}
    fresh = quantize(trained_tiny, q.scheme, x)
    for p in activation_points(fresh):  # set directly on a model that never ran
        scale = float(torch.tensor(qparams[p.name][0], dtype=torch.float32))
        if p.kind == "module":
            fresh.inner.get_submodule(p.name).scale = scale
        elif p.name == "conv1_input":
            fresh.inner.conv1_input_scale_0.fill_(scale)
        else:
            fresh.inner._scale_0.fill_(scale)
    with torch.no_grad():
        assert torch.equal(with_qparams(q, qparams)(x), fresh(x))


def test_a_quantize_node_after_a_float_layer_is_a_point(trained_tiny, x):
    q = quantize(trained_tiny, "int8:float_layers=conv2", x)
    points = activation_points(q)
    kinds = [p.kind for p in points]
    assert "conv2" not in [p.name for p in points]
    assert kinds.count("quantize") == 2 and points[-1].name == "fc"
    after_float = points[kinds.index("quantize", 1)]
    assert after_float.name.startswith("quantize_per_tensor")  # not the bare prefix "_input"
    changed = with_ranges(q, {after_float.name: (0.0, 0.5 * after_float.hi)})
    new = {p.name: p for p in activation_points(changed)}[after_float.name]
    assert new.scale == pytest.approx(0.5 * after_float.scale, rel=1e-5)


def test_bad_names_qparams_ranges_and_models_are_one_line_errors(q, trained_tiny, x):
    with pytest.raises(MitigateError, match=r"no activation point named 'nope'; points: conv1_in"):
        with_ranges(q, {"nope": (0.0, 1.0)})
    with pytest.raises(MitigateError, match=r"range of fc must be finite with lo <= hi"):
        with_ranges(q, {"fc": (1.0, -1.0)})
    with pytest.raises(MitigateError, match=r"range of fc must be finite"):
        with_ranges(q, {"fc": (0.0, float("inf"))})
    with pytest.raises(MitigateError, match=r"range of fc must be a pair"):
        with_ranges(q, {"fc": 3.0})
    with pytest.raises(MitigateError, match=r"scale of fc must be finite and > 0"):
        with_qparams(q, {"fc": (0.0, 10)})
    with pytest.raises(MitigateError, match=r"zero point of fc must lie in \[0, 255\]"):
        with_qparams(q, {"fc": (0.1, 300)})
    with pytest.raises(MitigateError, match=r"zero point of fc must be an integer"):
        with_qparams(q, {"fc": (0.1, 2.5)})
    with pytest.raises(MitigateError, match=r"static int8 models only .* got fp16"):
        activation_points(quantize(trained_tiny, "fp16"))
    with pytest.raises(MitigateError, match=r"needs a QuantizedModel"):
        activation_points(nn.Linear(2, 2))
