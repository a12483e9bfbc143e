"""QAT in explicit steps: prepare, train, convert (on a copy), extract the float model."""

from __future__ import annotations

import copy

import pytest
import torch

from mitigate.config import TrainConfig
from mitigate.errors import MitigateError
from mitigate.quantization import QuantizedModel
from mitigate.trainers import (
    ClassifierModule,
    FreezeQAT,
    Trained,
    convert_qat,
    extract_float,
    fit,
    pause_observers,
    prepare_qat_model,
    train_classifier,
)
from mitigate.trainers.qat import _fake_quantizers


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _float_outputs(prepared: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The prepared model's outputs in eval mode with fake quantization off (on a copy)."""
    twin = copy.deepcopy(prepared).eval()
    for q in _fake_quantizers(twin):
        q.fake_quant_enabled.fill_(0)
        q.observer_enabled.fill_(0)
    with torch.no_grad():
        return twin(x)


@pytest.fixture
def qat_trained(bn_net, digits_small, make_loader) -> tuple[Trained, torch.nn.Module]:
    x, y = digits_small
    start = bn_net()
    settings = TrainConfig(method="qat", epochs=2, lr=1e-2)
    return train_classifier(start, make_loader(x, y), settings=settings, seed=0), start


def test_convert_makes_int8_modules_on_a_copy(qat_trained, digits_small):
    trained, _ = qat_trained
    x, _ = digits_small
    before, mode = _state(trained.prepared), trained.prepared.training
    int8 = trained.quantized()
    assert isinstance(int8, QuantizedModel) and int8.label == "int8"
    packed = [m for m in int8.inner.modules() if type(m).__module__.startswith("torch.ao.nn.quant")]
    assert packed, "no quantized modules after convert"
    assert _same(before, _state(trained.prepared)) and trained.prepared.training == mode
    # int8 agrees with the fake-quant model it came from on most inputs
    with pause_observers(trained.prepared), torch.no_grad():
        fake = trained.prepared.eval()(x).argmax(1)
    assert float((int8(x).argmax(1) == fake).float().mean()) > 0.9


def test_extracted_float_model_equals_the_prepared_model_without_fake_quant(
    qat_trained, digits_small
):
    trained, start = qat_trained
    x, _ = digits_small
    f1 = trained.model
    assert type(f1) is type(start) and "forward" not in vars(f1)
    assert not torch.equal(f1.conv1.weight, start.conv1.weight)  # the fine-tuned weights
    assert not torch.equal(f1.bn1.running_mean, start.bn1.running_mean)
    with torch.no_grad():
        assert torch.allclose(f1(x), _float_outputs(trained.prepared, x), atol=1e-5)


def test_extraction_handles_layers_kept_in_float(bn_net, digits_small):
    x, _ = digits_small
    model = bn_net()
    prepared = prepare_qat_model(model, "int8:float_layers=conv1+fc", x[:1])
    with torch.no_grad():
        prepared(x)  # move BN statistics and observers so the copy is not trivially equal
        prepared.conv1[0].weight.mul_(1.5)
    f1 = extract_float(prepared, model)
    assert torch.equal(f1.conv1.weight, prepared.conv1[0].weight)
    with torch.no_grad():
        assert torch.allclose(f1.eval()(x), _float_outputs(prepared, x), atol=1e-5)


def test_extraction_refuses_a_foreign_architecture(bn_net, digits_small):
    x, _ = digits_small
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    prepared = prepare_qat_model(other, "int8", x[:1])
    with pytest.raises(MitigateError, match="holds no weight for 'conv1.weight'"):
        extract_float(prepared, bn_net())


def test_prepare_and_convert_validate_their_inputs(bn_net, digits_small):
    x, _ = digits_small
    with pytest.raises(MitigateError, match="QAT trains for static int8 schemes.*'fp16'"):
        prepare_qat_model(bn_net(), "fp16", x[:1])
    with pytest.raises(MitigateError, match="no layer named 'conv9'"):
        prepare_qat_model(bn_net(), "int8:float_layers=conv9", x[:1])
    with pytest.raises(MitigateError, match="no fake-quantize modules"):
        convert_qat(bn_net(), "int8")
    with pytest.raises(MitigateError, match="has no QAT model to convert"):
        Trained(bn_net(), "standard").quantized()


def test_pause_observers_keeps_ranges_and_restores_state(bn_net, digits_small):
    x, _ = digits_small
    prepared = prepare_qat_model(bn_net(), "int8", x[:1])
    prepared(x[:32])
    before = _state(prepared)
    with pause_observers(prepared), torch.no_grad():
        prepared.eval()(x[32:] * 3)
    after = _state(prepared)
    ranges = [k for k in before if k.endswith(("min_val", "max_val", "scale"))]
    assert ranges and all(torch.equal(before[k], after[k]) for k in ranges)
    assert all(int(q.observer_enabled) == 1 for q in _fake_quantizers(prepared))


def test_freeze_callback_freezes_bn_statistics_and_observers(bn_net, digits_small, make_loader):
    x, y = digits_small
    prepared = prepare_qat_model(bn_net(), "int8", x[:1])
    prepared(x[:64])  # give observers and BN statistics a starting point
    before = _state(prepared)
    module = ClassifierModule(prepared, method="qat", lr=1e-2)
    freeze = FreezeQAT(bn_epoch=0, observer_epoch=0)
    val = make_loader(x[:64], y[:64], shuffle=False)
    fit(module, make_loader(x, y), val, epochs=1, seed=0, callbacks=[freeze])
    after = _state(prepared)
    frozen = [k for k in before if k.endswith(("running_mean", "running_var", "min_val", "scale"))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # weights still train
    assert prepared.conv1.freeze_bn
    with pytest.raises(MitigateError, match="bn_epoch must be >= 0 or None"):
        FreezeQAT(bn_epoch=-1)


def test_validation_does_not_move_observers(bn_net, digits_small, make_loader):
    x, y = digits_small
    runs = []
    for val_scale in (1.0, 5.0):  # wildly different validation inputs
        prepared = prepare_qat_model(bn_net(), "int8", x[:1])
        val = make_loader(x[:64] * val_scale, y[:64], shuffle=False)
        fit(ClassifierModule(prepared, method="qat"), make_loader(x, y), val, epochs=2, seed=0)
        runs.append(_state(prepared))
    assert _same(*runs)
