from __future__ import annotations

import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation import disagreements, greedy_fallback, parse_share
from mitigate.quantization import Int8Static, quantize

PER_TENSOR = Int8Static(per_channel=False, observer="minmax")


def _quantized(module: nn.Module) -> bool:
    return ".quantized" in type(module).__module__


@pytest.fixture(scope="module")
def one_layer(broken_mlp, calibration, probe):
    return greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, max_float_layers=1)


def test_one_layer_of_fallback_removes_nearly_all_disagreements(
    one_layer, broken_mlp, healthy_mlp, calibration, probe
):
    result = one_layer
    assert result.float_layers == ("fc2",)
    assert result.stopped == "max_float_layers reached"
    before = disagreements(broken_mlp, PER_TENSOR, calibration, probe)
    assert result.disagreements_before == before > 100
    (step,) = result.steps
    assert step["layer"] == "fc2"
    assert step["params_in_float_share"] == pytest.approx(1056 / 3466)
    # What is left is no more than the healthy model's own int8 disagreements, plus a little.
    healthy = disagreements(healthy_mlp, PER_TENSOR, calibration, probe)
    assert step["disagreements_after"] <= max(healthy + 5, 0.05 * before)
    assert step["disagreements_after"] == disagreements(
        broken_mlp, result.scheme, calibration, probe
    )
    assert result.scheme == Int8Static(per_channel=False, observer="minmax", float_layers=("fc2",))
    assert result.as_dict()["scheme"] == "int8:per_channel=false:observer=minmax:float_layers=fc2"


def test_the_layer_kept_in_float_runs_in_float_and_the_others_in_int8(
    one_layer, broken_mlp, calibration
):
    modules = dict(quantize(broken_mlp, one_layer.scheme, calibration).inner.named_modules())
    fc2 = modules["fc2"]  # fused with its relu by FX, still float
    assert not _quantized(fc2)
    assert all(p.dtype == torch.float32 for p in fc2.parameters())
    assert next(fc2.parameters()).abs().max() == 1000.0  # the weight was not rounded
    for name in ("fc1", "fc3"):
        assert _quantized(modules[name]), type(modules[name])
        assert modules[name].weight().dtype == torch.qint8


def test_the_first_step_is_the_best_single_layer(one_layer, broken_mlp, calibration, probe):
    counts = {
        name: disagreements(
            broken_mlp,
            Int8Static(per_channel=False, observer="minmax", float_layers=(name,)),
            calibration,
            probe,
        )
        for name in ("fc1", "fc2", "fc3")
    }
    assert one_layer.steps[0]["disagreements_after"] == min(counts.values())


def test_limits_stop_the_search(broken_mlp, calibration, probe):
    before = disagreements(broken_mlp, PER_TENSOR, calibration, probe)
    target = greedy_fallback(
        broken_mlp, PER_TENSOR, calibration, probe, target_disagreements=before // 2
    )
    assert target.stopped == "target met" and target.float_layers == ("fc2",)
    # fc2 holds 30% of the parameters: a 20% cap rules it out.
    capped = greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, max_float_params=0.2)
    assert "fc2" not in capped.float_layers
    assert all(s["params_in_float_share"] <= 0.2 for s in capped.steps)
    assert capped.stopped in ("max_float_params reached", "no layer helps")
    # Unbounded except by the target 0: every step strictly helps, then it stops by itself.
    free = greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, target_disagreements=0)
    after = [s["disagreements_after"] for s in free.steps]
    assert after == sorted(set(after), reverse=True) and after[0] < before
    assert free.stopped in ("target met", "no layer helps", "all layers in float")
    none = greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, max_float_layers=0)
    assert none.steps == [] and none.disagreements_after == before


def test_layers_already_in_float_count_toward_the_limits(broken_mlp, calibration, probe):
    scheme = Int8Static(per_channel=False, observer="minmax", float_layers=("fc3",))
    result = greedy_fallback(broken_mlp, scheme, calibration, probe, max_float_layers=2)
    assert result.float_layers == ("fc2", "fc3")  # module order
    assert [s["layer"] for s in result.steps] == ["fc2"]


def test_bad_limits_are_refused(broken_mlp, calibration, probe):
    with pytest.raises(MitigateError, match="needs a limit: max_float_layers, max_float_params"):
        greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe)
    with pytest.raises(MitigateError, match="max_float_layers must be an int >= 0"):
        greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, max_float_layers=-1)
    with pytest.raises(MitigateError, match=r"max_float_params must be a share in \(0, 1\]"):
        greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, max_float_params=10)
    with pytest.raises(MitigateError, match="target_disagreements must be an int"):
        greedy_fallback(broken_mlp, PER_TENSOR, calibration, probe, target_disagreements=0.5)
    with pytest.raises(MitigateError, match="'nope' is not a Conv/Linear layer"):
        greedy_fallback(
            broken_mlp, Int8Static(float_layers=("nope",)), calibration, probe, max_float_layers=1
        )


def test_parse_share():
    assert parse_share("10%") == pytest.approx(0.1)
    assert parse_share(" 0.5 ") == 0.5
    assert parse_share(1) == 1.0
    for bad in ("0", "150%", "ten", True, -0.1):
        with pytest.raises(MitigateError, match="parameter share"):
            parse_share(bad)
