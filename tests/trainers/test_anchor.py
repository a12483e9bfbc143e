"""Anchored QAT: f0 frozen, only the quantizers train; q1 is a normal static-int8 model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mitigate.errors import MitigateError
from mitigate.mitigation.deployment import serialized_size
from mitigate.quantization import Int8Static, QuantizedModel, quantize
from mitigate.quantization.learnable_int8 import (
    convert_learnable,
    converted_mismatches,
    prepare_learnable,
)
from mitigate.trainers.anchor import (
    AnchorModule,
    AnchorOptions,
    anchor_batch,
    anchor_loader,
    anchor_loss,
    train_anchor,
)
from mitigate.trainers.fitting import fit


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _equal(a: object, b: object) -> bool:
    """Equality of state-dict values: quantized tensors by integers and qparams, tuples of
    packed params item by item, dtypes and numbers by ``==``."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.is_quantized or b.is_quantized:
            if a.qscheme() != b.qscheme() or not torch.equal(a.int_repr(), b.int_repr()):
                return False
            if a.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                return torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales())
            return a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _same_int8(a: QuantizedModel, b: QuantizedModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(_equal(sa[k], sb[k]) for k in sa)


def _kl(reference: torch.nn.Module, quantized: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        log_p, log_q = reference(x).log_softmax(1), quantized(x).log_softmax(1)
    return float(F.kl_div(log_q, log_p, reduction="batchmean", log_target=True))


def _int8_layers(q: QuantizedModel) -> dict[str, type]:
    return {
        name: type(m)
        for name, m in q.inner.named_modules()
        if type(m).__module__.startswith("torch.ao.nn")
    }


@pytest.fixture(scope="module")
def shifted(digits_xy) -> tuple[torch.Tensor, torch.Tensor]:
    """512 noisy digits shifted one pixel right, and 100 clean ones to calibrate on."""
    x, _ = digits_xy
    g = torch.Generator().manual_seed(3)
    noisy = (x[:512] + 0.25 * torch.randn(x[:512].shape, generator=g)).clamp(0, 1)
    return torch.roll(noisy, 1, dims=3), x[600:700].clone()


def _selected(model: torch.nn.Module, x: torch.Tensor, share: float = 0.1) -> torch.Tensor:
    with torch.no_grad():
        top = model(x).softmax(1).topk(2).values
    return (top[:, 0] - top[:, 1]).argsort()[: int(share * len(x))]


@pytest.fixture(scope="module")
def anchored(trained_tiny, shifted):
    """One anchored run on trained_tiny (x86 without the 7-bit scale floor, learned biases
    too), with f0's state and gradients from before."""
    x, calibration = shifted
    torch.set_num_threads(1)
    before = _state(trained_tiny)
    grads = [None if p.grad is None else p.grad.clone() for p in trained_tiny.parameters()]
    loader = anchor_loader(x, _selected(trained_tiny, x), batch_size=64, seed=0)
    result = train_anchor(
        trained_tiny,
        "int8",
        calibration,
        loader,
        epochs=4,
        lr=1e-2,
        learn_bias=True,
        floor_activation_scales=False,
        seed=0,
    )
    return result, before, grads


def test_f0_is_bit_identical_and_is_the_fp_side(anchored, trained_tiny):
    result, before, grads = anchored
    assert result.fp_model is trained_tiny
    assert _same(before, _state(trained_tiny)), "a parameter or buffer of f0 changed"
    # no gradient reached f0: whatever .grad its own training left is untouched
    after = [p.grad for p in trained_tiny.parameters()]
    assert all(
        (g is None and h is None) or (g is not None and h is not None and torch.equal(g, h))
        for g, h in zip(grads, after, strict=True)
    )
    assert not trained_tiny.training  # its mode is kept too


def test_training_moved_the_quantizers(anchored):
    result, _, _ = anchored
    assert result.epochs == 4 and len(result.losses) == len(result.kl) == 4
    assert len(result.eval_losses) == 5 and result.best_epoch is not None
    assert result.eval_losses[result.best_epoch] == min(result.eval_losses)
    assert result.integers_changed > 0
    assert any(layer.max_scale_change > 0 for layer in result.layers)
    assert {layer.name for layer in result.layers} == {"conv1", "conv2", "fc"}


def test_learned_biases_are_reported(anchored):
    result, _, _ = anchored
    assert not result.fp_identical
    assert any("biases were learned" in note for note in result.notes)
    assert "learned biases" in result.summary()


def test_kl_to_f0_goes_down_when_kl_is_the_whole_objective(trained_tiny, shifted):
    # With the hinge off the objective is KL to f0 alone, and keep_best never keeps worse
    # parameters than q0's; the converted int8 model follows its simulation. (With the hinge
    # on, KL alone may rise while the hinge falls: only their sum is kept from rising.)
    x, calibration = shifted
    torch.set_num_threads(1)
    loader = anchor_loader(x, batch_size=64, seed=0)
    result = train_anchor(
        trained_tiny, "int8", calibration, loader, epochs=4, hinge_weight=0.0, seed=0
    )
    assert result.eval_losses[result.best_epoch] <= result.eval_losses[0]
    before, after = _kl(trained_tiny, result.baseline, x), _kl(trained_tiny, result.quantized, x)
    assert after < before, (before, after)


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_q1_is_static_int8_of_q0s_size_and_modules(trained_tiny, shifted, engine):
    x, calibration = shifted
    scheme = Int8Static(engine=engine)
    loader = anchor_loader(x[:128], torch.arange(16), batch_size=64, seed=0)
    result = train_anchor(trained_tiny, scheme, calibration, loader, epochs=1, seed=0)
    q0, q1 = result.baseline, result.quantized
    assert isinstance(q1, QuantizedModel) and q1.scheme == scheme and q1.engine == engine
    assert _int8_layers(q1) == _int8_layers(q0)
    assert abs(serialized_size(q1) - serialized_size(q0)) <= 64
    assert result.fp_identical and not result.notes
    if engine == "x86":  # 7-bit activations: scales are floored at their calibrated values
        assert all(p.new_scale >= p.old_scale for p in result.activations)
    assert q1(x[:4]).dtype == torch.float32


@pytest.mark.parametrize(
    "scheme",
    [
        Int8Static(),
        Int8Static(engine="qnnpack"),
        Int8Static(per_channel=False),
        Int8Static(float_layers=("fc",)),
    ],
    ids=["x86", "qnnpack", "per-tensor", "fc-in-float"],
)
def test_converted_model_uses_exactly_the_learned_parameters(trained_tiny, shifted, scheme):
    _, calibration = shifted
    learnable = prepare_learnable(
        trained_tiny, scheme, calibration, learn_rounding=True, learn_bias=True
    )
    assert not converted_mismatches(learnable, convert_learnable(learnable))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in learnable.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        learnable.clamp_()
    q1 = convert_learnable(learnable)
    assert not converted_mismatches(learnable, q1)
    # the same checks, spelled out
    with torch.no_grad():
        for name, quantizer in learnable.weights.items():
            weight = q1.inner.get_submodule(name).weight()
            assert torch.equal(weight.int_repr(), learnable.integers(name))
            scales = (
                weight.q_per_channel_scales()
                if quantizer.axis is not None
                else torch.tensor([weight.q_scale()], dtype=torch.float64)
            )
            assert torch.equal(scales, quantizer.flat_scales().double())
            assert torch.equal(q1.inner.get_submodule(name).bias(), learnable.bias(name))
        for point, quantizer in learnable.activations.items():
            if point in learnable.weights:  # a layer's output: its module carries the qparams
                scale, zero = quantizer.calculate_qparams()
                module = q1.inner.get_submodule(point)
                assert (float(module.scale), int(module.zero_point)) == (float(scale), int(zero))
    assert sum(int((learnable.integers(n) != learnable.weights[n].nearest(
        learnable.float_weight(n))).sum()) for n in learnable.weights) > 0  # fmt: skip


def test_simulation_matches_the_int8_model(trained_tiny, shifted):
    x, calibration = shifted
    learnable = prepare_learnable(trained_tiny, Int8Static(), calibration)
    with torch.no_grad():
        simulated, real = learnable.simulation(x), learnable.baseline(x)
    assert (simulated.argmax(1) == real.argmax(1)).float().mean() > 0.99
    scale = learnable.activations["fc"].calculate_qparams()[0]
    assert float((simulated - real).abs().max()) <= 2 * float(scale) + 1e-6


@pytest.mark.parametrize("how", ["zero epochs", "lr 0"])
def test_without_training_q1_is_q0(trained_tiny, shifted, how):
    x, calibration = shifted
    kwargs = {"epochs": 0} if how == "zero epochs" else {"epochs": 1, "lr": 0.0}
    loader = anchor_loader(x[:128], torch.arange(8), batch_size=64, seed=0)
    result = train_anchor(
        trained_tiny, "int8", calibration, loader, learn_rounding=True, seed=0, **kwargs
    )
    q0 = quantize(trained_tiny, "int8", calibration)
    assert torch.equal(result.quantized(x), q0(x))
    assert torch.equal(result.baseline(x), q0(x))
    assert _same_int8(result.quantized, q0)
    assert result.integers_changed == 0 and result.rounding_changed == 0
    assert all(
        (p.old_scale, p.old_zero_point) == (p.new_scale, p.new_zero_point)
        for p in result.activations
    )
    assert len(result.losses) == (0 if how == "zero epochs" else 1)


def test_same_seed_same_q1(trained_tiny, shifted):
    x, calibration = shifted

    def run():
        loader = anchor_loader(x[:192], torch.arange(24), batch_size=64, seed=5)
        return train_anchor(
            trained_tiny, "int8", calibration, loader, epochs=2, learn_rounding=True, seed=5
        )

    a, b = run(), run()
    assert _same_int8(a.quantized, b.quantized)
    assert torch.equal(a.quantized(x), b.quantized(x))
    assert a.losses == b.losses


def test_fp_weights_get_no_gradient(trained_tiny, shifted):
    x, calibration = shifted
    learnable = prepare_learnable(trained_tiny, Int8Static(), calibration, learn_rounding=True)
    frozen_before = _state(learnable.observed)
    module = AnchorModule(learnable, trained_tiny, options=AnchorOptions(), lr=1e-2, epochs=1)
    loader = anchor_loader(x[:128], torch.arange(16), batch_size=64, seed=0)
    fit(module, loader, epochs=1, seed=0)
    learned = {id(p) for p in learnable.parameters()}
    optimizer = module.configure_optimizers()["optimizer"]
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == learned
    others = [p for p in module.parameters() if id(p) not in learned]
    assert others and all(not p.requires_grad and p.grad is None for p in others)
    assert all(p.grad is not None for p in learnable.parameters())
    # the float weights the simulation quantizes are the calibrated model's, untouched
    for name in learnable.weights:
        original = learnable.layer(name).parametrizations.weight.original
        assert torch.equal(original, learnable.float_weight(name))
    assert _same(frozen_before, _state(learnable.observed))
    offsets = torch.cat([q.offset.detach().flatten() for q in learnable.weights.values()])
    assert 0.0 <= float(offsets.min()) <= float(offsets.max()) <= 1.0


# ---- the loss and the batches ----------------------------------------------------------------


def test_anchor_loss_matches_a_numpy_reference():
    g = torch.Generator().manual_seed(0)
    z, r = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    selected = torch.tensor([True, False, True, True, False, False])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    t, m, hw = 2.0, 0.7, 1.5
    total, kl, hinge = anchor_loss(z, r, selected, w, temperature=t, margin=m, hinge_weight=hw)

    def log_softmax(a):
        a = a - a.max(1, keepdims=True)
        return a - np.log(np.exp(a).sum(1, keepdims=True))

    zn, rn, wn = z.double().numpy(), r.double().numpy(), w.double().numpy()
    lp, lq = log_softmax(rn / t), log_softmax(zn / t)
    kl_ref = (np.exp(lp) * (lp - lq)).sum(1) * t * t
    y0 = rn.argmax(1)
    chosen = zn[np.arange(6), y0]
    others = np.where(np.eye(4)[y0].astype(bool), -np.inf, zn).max(1)
    hinge_ref = np.maximum(0.0, m - (chosen - others)) * selected.numpy()
    mean = lambda v: (v * wn).sum() / wn.sum()  # noqa: E731
    assert math.isclose(float(kl), mean(kl_ref), rel_tol=1e-5)
    assert math.isclose(float(hinge), mean(hinge_ref), rel_tol=1e-5)
    assert math.isclose(float(total), mean(kl_ref + hw * hinge_ref), rel_tol=1e-5)


def test_anchor_batch_accepts_the_strategies_form_and_flags():
    x = torch.rand(4, 1, 8, 8)
    placeholder = torch.full((4,), -1)
    w = torch.tensor([1.0, 3.0, 1.0, 3.0])
    _, weights, selected = anchor_batch((x, placeholder, w))
    assert torch.equal(weights, w) and selected.tolist() == [False, True, False, True]
    flags = torch.tensor([True, False, False, False])
    _, weights, selected = anchor_batch((x, w, flags))
    assert torch.equal(selected, flags) and torch.equal(weights, w)
    _, weights, selected = anchor_batch(x)
    assert weights is None and not selected.any()
    _, weights, selected = anchor_batch((x, placeholder))
    assert weights is None and not selected.any()


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ((torch.randint(0, 5, (4, 1, 8, 8)),), "float inputs"),
        ((torch.rand(4, 1, 8, 8), torch.rand(3)), r"\[B\] = \[4\]"),
        ((torch.rand(4, 1, 8, 8), torch.rand(4), torch.rand(4)), "two weights"),
        ((torch.rand(4, 1, 8, 8), torch.tensor([1.0, -1.0, 1.0, 1.0])), "finite and >= 0"),
        ((), "empty batch"),
    ],
)
def test_bad_batches_raise(batch, match):
    with pytest.raises(MitigateError, match=match):
        anchor_batch(batch)


def test_anchor_loader_builds_weights_and_flags():
    loader = anchor_loader(torch.rand(10, 1, 8, 8), torch.tensor([2, 7]), batch_size=10)
    x, w, s = next(iter(loader))
    assert x.shape == (10, 1, 8, 8) and torch.equal(w, torch.ones(10)) and int(s.sum()) == 2
    with pytest.raises(MitigateError, match=r"selected indices must lie in \[0, 9\]"):
        anchor_loader(torch.rand(10, 1, 8, 8), torch.tensor([10]))
    with pytest.raises(MitigateError, match="no inputs"):
        anchor_loader(torch.rand(0, 1, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "fp16"}, r"static int8 quantizers only .*got 'fp16'"),
        ({"scheme": "int8-dynamic"}, r"static int8 quantizers only .*got 'int8-dynamic'"),
        ({"scheme": "int3"}, "unknown quantization scheme 'int3'"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"lr": float("nan")}, "lr must be finite and >= 0"),
        ({"lr": -1.0}, "lr must be finite and >= 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"margin": -0.5}, "margin must be >= 0"),
        ({"hinge_weight": -1.0}, "hinge_weight must be >= 0"),
        (
            {"learn_activations": False, "learn_weight_scales": False},
            "nothing to learn",
        ),
        ({"calibration": torch.rand(0, 1, 8, 8)}, "at least one calibration input"),
        ({"loader": None}, "needs a loader"),
        ({"loader": []}, "holds no batches"),
        ({"model": "lenet5"}, "needs a torch.nn.Module"),
    ],
)
def test_bad_arguments_raise(trained_tiny, shifted, kwargs, match):
    x, calibration = shifted
    args = {
        "model": trained_tiny,
        "scheme": "int8",
        "calibration": calibration,
        "loader": anchor_loader(x[:64], batch_size=64),
    }
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(MitigateError, match=match):
        train_anchor(args["model"], args["scheme"], args["calibration"], args["loader"], **kwargs)


def test_bad_loader_contents_raise_before_training(trained_tiny, shifted):
    _, calibration = shifted
    ints = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randint(0, 2, (8, 1, 8, 8))), batch_size=4
    )
    with pytest.raises(MitigateError, match="float inputs"):
        train_anchor(trained_tiny, "int8", calibration, ints, epochs=1)
    empty = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.rand(0, 1, 8, 8)), batch_size=4
    )
    with pytest.raises(MitigateError, match="holds no inputs"):
        train_anchor(trained_tiny, "int8", calibration, empty, epochs=1)


def test_keep_best_falls_back_to_q0_when_training_only_hurts(trained_tiny, shifted):
    x, calibration = shifted

    def run(keep_best: bool):
        loader = anchor_loader(x[:128], torch.arange(16), batch_size=64, seed=0)
        return train_anchor(
            trained_tiny, "int8", calibration, loader, epochs=1, lr=5.0, keep_best=keep_best
        )

    kept, wild = run(True), run(False)
    assert kept.best_epoch == 0 and kept.eval_losses[1] > kept.eval_losses[0]
    assert _same_int8(kept.quantized, kept.baseline)
    assert wild.best_epoch is None and not wild.eval_losses
    assert not _same_int8(wild.quantized, wild.baseline)
