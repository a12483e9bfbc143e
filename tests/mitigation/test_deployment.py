from __future__ import annotations

import io

import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.mitigation import deployment_cost, serialized_size
from mitigate.quantization import quantize


@pytest.fixture(scope="module")
def variants(healthy_mlp, calibration):
    return {
        "int8": quantize(healthy_mlp, "int8", calibration),
        "int8:float_layers=fc2": quantize(healthy_mlp, "int8:float_layers=fc2", calibration),
    }


def test_sizes_and_ratios(healthy_mlp, variants, probe):
    cost = deployment_cost(healthy_mlp, variants, probe[:64], repeats=5, calls=2)
    models = cost["models"]
    assert list(models) == ["fp", "int8", "int8:float_layers=fc2"]
    assert cost["reference"] == "int8" and cost["repeats"] == 5 and cost["batch"] == 64
    fp, int8, fallback = (models[k]["size_bytes"] for k in models)
    assert int8 < fallback < fp  # a float layer costs bytes; int8 is the smallest
    assert int8 < 0.75 * fp  # per-channel scales and pickle framing weigh on a 3k-weight MLP
    buffer = io.BytesIO()
    torch.save(healthy_mlp.state_dict(), buffer)
    assert fp == len(buffer.getvalue()) == serialized_size(healthy_mlp)
    assert models["fp"]["size_vs_fp"] == 1.0 and models["int8"]["size_vs_reference"] == 1.0
    assert models["int8"]["size_vs_fp"] == pytest.approx(int8 / fp)
    assert models["fp"]["latency_vs_fp"] == 1.0 and models["int8"]["latency_vs_reference"] == 1.0
    for row in models.values():
        assert row["latency_ms"] > 0
        assert row["latency_vs_fp"] == pytest.approx(row["latency_ms"] / models["fp"]["latency_ms"])
    assert "one run" in cost["note"]


def test_reference_defaults_to_the_first_label_without_int8(healthy_mlp, variants, probe):
    only = {"fallback": variants["int8:float_layers=fc2"]}
    assert (
        deployment_cost(healthy_mlp, only, probe[:8], repeats=1, calls=1)["reference"] == "fallback"
    )


def test_bad_input(healthy_mlp, variants, probe):
    with pytest.raises(MitigateError, match="non-empty dict"):
        deployment_cost(healthy_mlp, {}, probe[:8])
    with pytest.raises(MitigateError, match="label 'fp' is reserved"):
        deployment_cost(healthy_mlp, {"fp": variants["int8"]}, probe[:8])
    with pytest.raises(MitigateError, match="reference 'x' is not among the models; labels: int8"):
        deployment_cost(healthy_mlp, variants, probe[:8], reference="x")
    with pytest.raises(MitigateError, match="repeats must be an int >= 1"):
        deployment_cost(healthy_mlp, variants, probe[:8], repeats=0)
    with pytest.raises(MitigateError, match="example must be a non-empty float tensor"):
        deployment_cost(healthy_mlp, variants, probe[:0])


class _Counting(torch.nn.Module):
    """Records the batch size of every call, so a test can see what was timed."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


def test_per_input_timing_runs_every_input_alone(healthy_mlp, variants, probe):
    counted = _Counting(variants["int8"])
    cost = deployment_cost(
        healthy_mlp, {"int8": counted}, probe[:6], repeats=2, calls=3, per_input_repeats=4
    )
    # warm-up, 2 rounds x 3 calls on the batch; warm-up, 4 rounds x 6 inputs one at a time
    assert counted.sizes == [6] * 7 + [1] * 25
    for row in cost["models"].values():
        assert row["per_input_ms"] > 0
        assert row["per_input_vs_fp"] == pytest.approx(
            row["per_input_ms"] / cost["models"]["fp"]["per_input_ms"]
        )
    assert cost["models"]["int8"]["per_input_vs_reference"] == 1.0
    plain = deployment_cost(healthy_mlp, variants, probe[:6], repeats=1, calls=1)
    assert all("per_input_ms" not in row for row in plain["models"].values())
    with pytest.raises(MitigateError, match="per_input_repeats must be an int >= 0, got -1"):
        deployment_cost(healthy_mlp, variants, probe[:6], per_input_repeats=-1)
