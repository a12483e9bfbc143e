from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation._measure import labels
from mitigate.mitigation.ranges import search_ranges
from mitigate.quantization import quantize
from mitigate.quantization.act_ranges import activation_points

SCHEMES = ["int8", "int8:engine=qnnpack", "int8:reduce_range=false"]


def _noisy(x: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (x + 0.5 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def search_probe(digits_xy) -> torch.Tensor:
    """600 noisy digits: enough disagreements for the search to act on."""
    return _noisy(digits_xy[0][1197:], 1)


@pytest.fixture(scope="module")
def held_out(digits_xy) -> torch.Tensor:
    """1,000 other digits with other noise, never seen by the search."""
    return _noisy(digits_xy[0][200:1200], 2)


def _disagreements(model, q, x) -> int:
    return int((labels(q, x) != labels(model, x)).sum())


@pytest.fixture(scope="module", params=SCHEMES)
def run(request, trained_tiny, calibration, search_probe):
    state = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    q0 = quantize(trained_tiny, request.param, calibration)
    points = activation_points(q0)
    with torch.no_grad():
        out0 = q0(search_probe)
    result = search_ranges(trained_tiny, q0, search_probe)
    return state, q0, points, out0, result


def test_the_probe_count_never_grows_and_is_the_returned_models(run, trained_tiny, search_probe):
    _, q0, points, _, result = run
    assert result.before == _disagreements(trained_tiny, q0, search_probe)
    assert result.before > 0
    assert result.after <= result.before
    assert result.after == _disagreements(trained_tiny, result.quantized, search_probe)
    assert result.probe_size == len(search_probe)
    assert [step.name for step in result.steps] == [p.name for p in points]
    counts = [result.before] + [step.disagreements for step in result.steps]
    assert counts == sorted(counts, reverse=True) and counts[-1] == result.after
    assert result.evaluated == sum(step.measured for step in result.steps) > 0
    assert result.quantized.scheme == q0.scheme


def test_the_returned_model_holds_the_chosen_ranges_and_q0s_weights(run):
    _, q0, points, _, result = run
    new = activation_points(result.quantized)
    for old, step, point in zip(points, result.choices, new, strict=True):
        assert step.ratio in step.candidates and step.candidates[0] == 1.0
        assert (point.scale, point.zero_point) == (step.scale, step.zero_point)
        assert (step.scale, step.zero_point) == old.qparams_for(
            step.ratio * old.lo, step.ratio * old.hi
        )
        assert step.old_range == old.range and step.new_range == point.range
        if step.ratio == 1.0:
            assert (point.scale, point.zero_point) == (old.scale, old.zero_point)
    for name in ("conv1", "conv2", "fc"):
        w0 = q0.inner.get_submodule(name).weight()
        w1 = result.quantized.inner.get_submodule(name).weight()
        assert torch.equal(w0.int_repr(), w1.int_repr())


def test_q0_and_the_fp_model_are_untouched(run, trained_tiny, search_probe):
    state, q0, points, out0, _ = run
    assert activation_points(q0) == points
    with torch.no_grad():
        assert torch.equal(q0(search_probe), out0)
    for key, value in trained_tiny.state_dict().items():
        assert torch.equal(value, state[key])


def test_held_out_inputs_are_not_wildly_worse(run, trained_tiny, held_out):
    # The ranges are fitted to the probe: on other inputs the search may lose part of its
    # gain, or a little more; it must not blow up. A loose guard, not a claim of improvement.
    _, q0, _, _, result = run
    before = _disagreements(trained_tiny, q0, held_out)
    after = _disagreements(trained_tiny, result.quantized, held_out)
    assert after <= 2 * before + 0.01 * len(held_out)


def test_ratio_one_alone_returns_q0s_own_qparams(trained_tiny, calibration, search_probe):
    q0 = quantize(trained_tiny, "int8", calibration)
    result = search_ranges(trained_tiny, q0, search_probe, ratios=(1.0,))
    assert result.quantized is not q0
    assert activation_points(result.quantized) == activation_points(q0)
    assert result.evaluated == 0 and result.after == result.before and result.changed == ()
    assert all(step.ratio == 1.0 for step in result.steps)
    with torch.no_grad():
        assert torch.equal(result.quantized(search_probe), q0(search_probe))


def test_the_search_is_deterministic(run, trained_tiny, search_probe):
    _, q0, _, _, result = run
    again = search_ranges(trained_tiny, q0, search_probe)
    first, second = result.as_dict(), again.as_dict()
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    with torch.no_grad():
        assert torch.equal(again.quantized(search_probe), result.quantized(search_probe))


def test_more_passes_and_widening_never_do_worse_on_the_probe(
    trained_tiny, calibration, search_probe
):
    q0 = quantize(trained_tiny, "int8:engine=qnnpack", calibration)
    one = search_ranges(trained_tiny, q0, search_probe)
    two = search_ranges(trained_tiny, q0, search_probe, passes=3)
    assert two.after <= one.after
    assert two.steps[: len(one.steps)] == one.steps  # pass 0 is the same search
    assert {step.pass_index for step in two.steps} <= {0, 1, 2}
    # The histogram observer clips: with the calibration inputs, some point also tries the
    # ratio that covers the calibration data's min-max range.
    wide = search_ranges(trained_tiny, q0, search_probe, calibration=calibration, ratios=(1.0,))
    assert any(max(step.candidates) > 1.0 for step in wide.steps)
    assert wide.after <= wide.before
    explicit = search_ranges(trained_tiny, q0, search_probe, ratios=(1.25, 0.75))
    assert all(step.candidates == (1.0, 1.25, 0.75) for step in explicit.steps)


def test_bad_inputs_are_one_line_errors(trained_tiny, calibration, search_probe):
    q0 = quantize(trained_tiny, "int8", calibration)
    probe = search_probe[:20]
    with pytest.raises(MitigateError, match=r"static int8 models only .* got fp16"):
        search_ranges(trained_tiny, quantize(trained_tiny, "fp16"), probe)
    with pytest.raises(MitigateError, match=r"search_ranges needs a QuantizedModel"):
        search_ranges(trained_tiny, trained_tiny, probe)
    with pytest.raises(MitigateError, match=r"model must be a torch.nn.Module"):
        search_ranges("f0", q0, probe)
    with pytest.raises(MitigateError, match=r"probe must be a non-empty float tensor"):
        search_ranges(trained_tiny, q0, probe[:0])
    with pytest.raises(MitigateError, match=r"probe must be a float tensor"):
        search_ranges(trained_tiny, q0, (probe * 16).long())
    with pytest.raises(MitigateError, match=r"ratios must hold at least one number"):
        search_ranges(trained_tiny, q0, probe, ratios=())
    for bad in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(MitigateError, match=r"ratios must be finite numbers > 0"):
            search_ranges(trained_tiny, q0, probe, ratios=(1.0, bad))
    with pytest.raises(MitigateError, match=r"passes must be an integer >= 1"):
        search_ranges(trained_tiny, q0, probe, passes=0)
    with pytest.raises(MitigateError, match=r"calibration inputs \[1, 6, 6\] and probe inputs"):
        search_ranges(trained_tiny, q0, probe, calibration=torch.rand(4, 1, 6, 6))
    with pytest.raises(MitigateError, match=r"probe inputs of shape \[1, 6, 6\] do not fit"):
        search_ranges(trained_tiny, q0, torch.rand(4, 1, 6, 6))
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(MitigateError, match=r"outputs of different shapes: \[2, 3\] and \[2, 10\]"):
        search_ranges(other, q0, probe)
