"""Short fits with every method: loss goes down, the pitfalls are handled, nothing leaks."""

from __future__ import annotations

import copy
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from mitigate.config import TrainConfig
from mitigate.errors import MitigateError
from mitigate.trainers import (
    ClassifierModule,
    MethodOptions,
    convert_qat,
    fit,
    is_qat_prepared,
    prepare_qat_model,
    train_classifier,
)

EPOCHS = 4
SETTINGS = dict(epochs=EPOCHS, lr=1e-2, weight_decay=0.0, adv_eps=0.05, adv_steps=2)


def _objective(method: str, model: nn.Module, teacher: nn.Module, x, y) -> float:
    """The method's own loss on the whole subset, with fixed draws, without side effects."""
    model = copy.deepcopy(model)
    module = ClassifierModule(
        model,
        method=method,
        options=MethodOptions.from_config(TrainConfig(**SETTINGS)),
        teacher=teacher if method == "distill" else None,
    )
    model.eval()
    torch.manual_seed(123)
    with torch.no_grad() if method != "adversarial" else torch.enable_grad():
        return float(module.method.loss(module, x, y, None).detach())


@pytest.mark.parametrize("method", ["standard", "mixup", "adversarial", "qat", "distill"])
def test_every_method_lowers_its_training_loss(method, bn_net, digits_small, make_loader):
    x, y = digits_small
    start, teacher = bn_net(1), bn_net(2)
    if method == "distill":  # a teacher worth matching: the student starts far from it
        standard = TrainConfig(**SETTINGS)
        teacher = train_classifier(teacher, make_loader(x, y), settings=standard, seed=0).model
    settings = TrainConfig(method=method, **SETTINGS)
    trained = train_classifier(
        start,
        make_loader(x, y),
        settings=settings,
        seed=0,
        teacher=teacher if method == "distill" else None,
    )
    measured = trained.prepared if method == "qat" else trained.model
    initial = prepare_qat_model(start, "int8", x[:1]) if method == "qat" else start
    before = _objective(method, initial, teacher, x, y)
    after = _objective(method, measured, teacher, x, y)
    assert after < 0.9 * before, (before, after)
    assert type(trained.model) is type(start)
    assert "forward" not in vars(trained.model)  # forward is the class's own, never rewritten
    assert type(trained.model).forward is type(start).forward


def test_fit_restores_deterministic_mode_and_engine(bn_net, digits_small, make_loader):
    x, y = digits_small
    engine = torch.backends.quantized.engine
    for before in (False, True):
        torch.use_deterministic_algorithms(before)
        try:
            module = ClassifierModule(bn_net(), epochs=1)
            fitted = fit(module, make_loader(x[:64], y[:64]), epochs=1, seed=0)
            assert torch.are_deterministic_algorithms_enabled() is before
        finally:
            torch.use_deterministic_algorithms(False)
    assert torch.backends.quantized.engine == engine
    assert not fitted.training


def test_a_callback_sees_each_epochs_metrics(bn_net, digits_small, make_loader):
    """Logging is skipped when nothing can read it; a callback can, and gets every metric."""
    x, y = digits_small

    class Record(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[dict[str, float]] = []

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    record = Record()
    module = ClassifierModule(bn_net(), epochs=2)
    loader = make_loader(x[:128], y[:128])
    fit(
        module,
        loader,
        make_loader(x[:64], y[:64], shuffle=False),
        epochs=2,
        seed=0,
        callbacks=[record],
    )
    assert len(record.seen) == 2
    last = record.seen[-1]
    assert {"val/loss", "val/accuracy", "train/loss"} <= set(last)
    assert 0.0 <= last["val/accuracy"] <= 1.0
    assert last["train/loss"] == pytest.approx(module.train_losses[0])  # epoch 0's, logged


def test_fit_trains_a_model_handed_over_in_eval_mode(bn_net, digits_small, make_loader):
    x, y = digits_small
    model = bn_net().eval()
    running = model.bn1.running_mean.clone()
    fit(ClassifierModule(model), make_loader(x[:64], y[:64]), epochs=1, seed=0)
    assert not torch.equal(model.bn1.running_mean, running)  # BN was in train mode


def test_qat_converts_after_a_deterministic_fit(bn_net, digits_small, make_loader):
    x, y = digits_small
    prepared = prepare_qat_model(bn_net(), "int8:engine=qnnpack", x[:1])
    torch.use_deterministic_algorithms(True)
    try:
        fit(ClassifierModule(prepared, method="qat"), make_loader(x[:64], y[:64]), epochs=1, seed=0)
        assert torch.are_deterministic_algorithms_enabled()
        int8 = convert_qat(prepared, "int8:engine=qnnpack")
        assert int8(x[:8]).shape == (8, 10)
    finally:
        torch.use_deterministic_algorithms(False)
    assert is_qat_prepared(prepared)  # fit never converts in place


@pytest.mark.parametrize("qat", [False, True], ids=["float", "distill-qat"])
def test_distill_ignores_labels_and_never_touches_the_teacher(
    qat, bn_net, digits_small, make_loader
):
    x, y = digits_small
    teacher = bn_net(2).train()
    frozen = copy.deepcopy(teacher.state_dict())
    settings = TrainConfig(method="distill", epochs=2, lr=1e-2)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(9))]
    runs = [
        train_classifier(
            bn_net(1), make_loader(x, labels), settings=settings, seed=3, teacher=teacher, qat=qat
        )
        for labels in (y, shuffled)
    ]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training  # the caller's teacher keeps its mode too
    assert (runs[0].prepared is not None) is qat
    if qat:
        assert torch.equal(runs[0].quantized()(x[:32]), runs[1].quantized()(x[:32]))


def test_same_seed_same_weights_and_unit_weights_change_nothing(bn_net, digits_small, make_loader):
    x, y = digits_small
    settings = TrainConfig(method="mixup", epochs=1, lr=1e-2)
    one = train_classifier(bn_net(), make_loader(x, y), settings=settings, seed=4).model
    two = train_classifier(bn_net(), make_loader(x, y), settings=settings, seed=4).model
    ones = make_loader(x, y, torch.ones(len(y)))
    three = train_classifier(bn_net(), ones, settings=settings, seed=4).model
    for other in (two, three):
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in one.state_dict().items())


def test_train_classifier_keeps_the_input_model_and_validates(bn_net, digits_small, make_loader):
    x, y = digits_small
    model = bn_net()
    frozen = copy.deepcopy(model.state_dict())
    train_classifier(model, make_loader(x, y), settings=TrainConfig(epochs=1), seed=0)
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items())
    with pytest.raises(MitigateError, match=r"unknown training method 'sgd'; valid choices"):
        train_classifier(model, make_loader(x, y), settings=TrainConfig(method="sgd"), seed=0)
    with pytest.raises(MitigateError, match="QAT trains for static int8 schemes"):
        train_classifier(
            model, make_loader(x, y), settings=TrainConfig(qat_scheme="fp16", epochs=1), seed=0
        )
    with pytest.raises(MitigateError, match="train.freeze_bn_epoch must be"):
        train_classifier(model, make_loader(x, y), settings=TrainConfig(freeze_bn_epoch=-2), seed=0)


def test_no_warnings_escape_a_fit(bn_net, digits_small, make_loader):
    x, y = digits_small
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for method in ("qat", "distill"):
            settings = TrainConfig(method=method, epochs=1)
            trained = train_classifier(
                bn_net(),
                make_loader(x[:64], y[:64]),
                make_loader(x[64:128], y[64:128], shuffle=False),
                settings=settings,
                seed=0,
                teacher=bn_net(1) if method == "distill" else None,
            )
        trained.model(x[:4])
    assert [str(w.message) for w in caught] == []


def test_attributes_set_on_the_module_still_register_as_torch_expects(bn_net):
    """The hook-name fast path in ``__setattr__`` leaves submodules and parameters alone."""
    module = ClassifierModule(bn_net())
    module.head = nn.Linear(2, 2)
    module.scale = nn.Parameter(torch.ones(1))
    module._current_fx_name = "training_step"
    names = dict(module.named_parameters())
    assert "head.weight" in names and "scale" in names
    assert "head" in dict(module.named_children())
    assert module._current_fx_name == "training_step"
    assert "_current_fx_name" not in module._parameters


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n", [1, 64, 130])
def test_batched_loader_yields_the_plain_loaders_batches(shuffle, n):
    """Same seed, same batches, epoch after epoch, as torch's DataLoader builds them one
    sample at a time; so every training figure stays what it was."""
    from torch.utils.data import DataLoader, TensorDataset

    from mitigate.trainers.fitting import batched_loader

    data = TensorDataset(torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,)), torch.rand(n))
    plain = DataLoader(
        data, batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(3)
    )
    fast = batched_loader(
        data, batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(3)
    )
    assert len(fast) == len(plain)
    for _epoch in range(3):  # the generator moves on between epochs alike
        pairs = list(zip(plain, fast, strict=True))
        for a, b in pairs:
            assert all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b, strict=True))
