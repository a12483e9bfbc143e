"""The methods' losses against hand computations on fixed batches, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mitigate.config import TrainConfig
from mitigate.errors import MitigateError
from mitigate.trainers import (
    METHODS,
    ClassifierModule,
    MethodOptions,
    distill_kl,
    get_method,
    method_names,
    mixup_cross_entropy,
    pgd_attack,
    sample_mixup,
)
from mitigate.trainers._weighted import weighted_mean
from mitigate.trainers.adversarial import resolve_step_size
from mitigate.trainers.mixup import mix_inputs


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -_log_softmax(logits)[np.arange(len(labels)), labels]


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()


@pytest.fixture
def batch(digits_small):
    x, y = digits_small
    return x[:16].double(), y[:16]


def test_registry_flags_and_choices():
    assert method_names() == ["standard", "mixup", "adversarial", "qat", "distill"]
    assert [m for m in METHODS if not METHODS[m].uses_labels] == ["distill"]
    assert [m for m in METHODS if METHODS[m].needs_teacher] == ["distill"]
    assert [m for m in METHODS if METHODS[m].fake_quant] == ["qat"]
    assert all(METHODS[m].description for m in METHODS)


def test_unknown_method_lists_the_valid_ones():
    pattern = r"unknown training method 'sgd'; valid choices: standard, mixup, adversarial, qat"
    with pytest.raises(MitigateError, match=pattern):
        get_method("sgd")
    with pytest.raises(MitigateError, match=pattern):
        ClassifierModule(_linear(), method="sgd")


def test_module_checks_teacher_and_preparation():
    with pytest.raises(MitigateError, match="needs a teacher"):
        ClassifierModule(_linear(), method="distill")
    with pytest.raises(MitigateError, match="uses no teacher"):
        ClassifierModule(_linear(), method="mixup", teacher=_linear())
    with pytest.raises(MitigateError, match="prepare_qat_model"):
        ClassifierModule(_linear(), method="qat")


def test_options_match_the_config_defaults_and_are_validated():
    assert MethodOptions() == MethodOptions.from_config(TrainConfig())
    with pytest.raises(MitigateError, match=r"train.mixup_alpha must be > 0, got 0"):
        MethodOptions(mixup_alpha=0)
    with pytest.raises(MitigateError, match=r"train.adv_steps must be >= 1"):
        MethodOptions(adv_steps=0)
    with pytest.raises(MitigateError, match=r"train.distill_temperature must be > 0"):
        MethodOptions(distill_temperature=-1.0)


def test_weighted_mean_is_the_plain_mean_without_weights():
    v = torch.tensor([1.0, 2.0, 6.0])
    assert float(weighted_mean(v, None)) == pytest.approx(3.0)
    assert float(weighted_mean(v, torch.ones(3))) == pytest.approx(3.0)
    assert float(weighted_mean(v, torch.tensor([0.0, 1.0, 3.0]))) == pytest.approx(5.0)


def test_mixup_loss_equals_a_hand_computation(batch):
    x, y = batch
    logits = torch.randn(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam, perm = 0.7, torch.randperm(16, generator=torch.Generator().manual_seed(2))
    z, yy, p = logits.numpy(), y.numpy(), perm.numpy()
    expected = lam * _ce(z, yy).mean() + (1 - lam) * _ce(z, yy[p]).mean()
    assert float(mixup_cross_entropy(logits, y, lam, perm)) == pytest.approx(expected, rel=1e-12)
    w = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wn = w.numpy()
    weighted = (lam * wn * _ce(z, yy) + (1 - lam) * wn[p] * _ce(z, yy[p])).sum() / wn.sum()
    assert float(mixup_cross_entropy(logits, y, lam, perm, w)) == pytest.approx(weighted, rel=1e-12)
    mixed = mix_inputs(x, lam, perm)
    assert torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[perm[0]])


def test_mixup_training_step_replays_its_seeded_draws(batch):
    x, y = batch
    model = _linear()
    module = ClassifierModule(model, method="mixup", options=MethodOptions(mixup_alpha=0.4))
    torch.manual_seed(5)
    lam, perm = sample_mixup(16, 0.4)
    expected = _ce(model(mix_inputs(x, lam, perm)).detach().numpy(), y.numpy())
    expected_other = _ce(model(mix_inputs(x, lam, perm)).detach().numpy(), y[perm].numpy())
    torch.manual_seed(5)
    loss = module.method.loss(module, x, y, None).detach()
    assert float(loss) == pytest.approx(
        lam * expected.mean() + (1 - lam) * expected_other.mean(), rel=1e-12
    )
    torch.manual_seed(5)
    again = module.method.loss(module, x, y, None).detach()
    assert float(again) == float(loss)  # same seed, same draw


def test_fgsm_equals_the_analytic_gradient_sign(batch):
    x, y = batch
    model = _linear()
    weight, bias = (p.detach().numpy() for p in model[1].parameters())
    xf = x.flatten(1).numpy()
    logits = xf @ weight.T + bias
    probs = np.exp(_log_softmax(logits))
    probs[np.arange(16), y.numpy()] -= 1  # d CE / d logits, times the batch size
    expected = np.clip(xf + 0.1 * np.sign(probs @ weight), 0, 1)
    adv = pgd_attack(model, x, y, eps=0.1, steps=1)
    assert np.allclose(adv.flatten(1).numpy(), expected)
    assert all(p.grad is None for p in model.parameters())

    module = ClassifierModule(model, method="adversarial", options=MethodOptions(adv_steps=1))
    loss = module.method.loss(module, x, y, None).detach()
    expected_loss = _ce(expected @ weight.T + bias, y.numpy()).mean()
    assert float(loss) == pytest.approx(expected_loss, rel=1e-10)


def test_pgd_stays_in_the_ball_and_leaves_bn_and_mode_alone(batch, bn_net):
    x, y = batch
    net = bn_net().double().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adv = pgd_attack(net, x, y, eps=0.2, steps=5)
    assert net.training and net.bn1.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN untouched
    assert float((adv - x).abs().max()) <= 0.2 + 1e-12
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    net.eval()
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(net(adv), y)) > float(ce(net(x), y))
    assert resolve_step_size(0.2, 5, 0.0) == pytest.approx(0.1)
    assert torch.equal(pgd_attack(net, x, y, eps=0.0, steps=3), x)


def test_distill_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    temp = 2.5
    ls, lt = _log_softmax(s.double().numpy() / temp), _log_softmax(t.double().numpy() / temp)
    per = (np.exp(lt) * (lt - ls)).sum(1) * temp**2
    assert float(distill_kl(s, t, temp)) == pytest.approx(per.mean(), rel=1e-5)
    w = torch.rand(8, generator=g)
    weighted = (per * w.numpy()).sum() / w.numpy().sum()
    assert float(distill_kl(s, t, temp, w)) == pytest.approx(weighted, rel=1e-5)
    s.requires_grad_(True)
    distill_kl(s, s.detach(), temp).backward()
    assert float(s.grad.abs().max()) < 1e-6  # minimum at the teacher's outputs


def test_label_free_methods_accept_batches_without_labels(batch):
    x, _ = batch
    module = ClassifierModule(_linear(1), method="distill", teacher=_linear(2))
    assert float(module.method.loss(module, x, None, None).detach()) > 0
    labelled = ClassifierModule(_linear(1), method="standard")
    with pytest.raises(MitigateError, match="needs labels"):
        labelled.training_step((x,), 0)
