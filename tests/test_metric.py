"""DisagreementRate (torchmetrics Metric) against its functional twin and a NumPy count."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mitigate
from mitigate import functional as MF
from mitigate.disagreement import FLIP_DIRECTIONS, DisagreementRate, find_disagreements
from mitigate.errors import MitigateError
from mitigate.trainers import quiet_lightning

C = 5


def np_reference(ref: np.ndarray, other: np.ndarray, target: np.ndarray) -> dict[str, object]:
    """Plain NumPy counts: overall rate, rate per reference class, flip-direction rates."""
    flipped = ref != other
    n = max(len(ref), 1)
    per_class = np.array(
        [flipped[ref == c].sum() / max((ref == c).sum(), 1) for c in range(C)], dtype=np.float32
    )
    return {
        "rate": flipped.sum() / n,
        "per_class": per_class,
        "correct_to_wrong": (flipped & (ref == target)).sum() / n,
        "wrong_to_correct": (flipped & (other == target)).sum() / n,
        "wrong_to_other_wrong": (flipped & (ref != target) & (other != target)).sum() / n,
    }


def random_outputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, C, generator=g)
    other = ref + 0.8 * torch.randn(n, C, generator=g)  # close copy: some, not all, flip
    return ref, other, torch.randint(0, C, (n,), generator=g)


def assert_matches(out: dict, expected: dict) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-6, atol=1e-7, err_msg=key)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 120),
    cuts=st.lists(st.integers(0, 120), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_metric_over_batches_matches_functional_and_numpy(n, cuts, seed):
    ref, other, target = random_outputs(n, seed)
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    metric = DisagreementRate(num_classes=C, per_class=True, flips=True)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        metric.update(ref[lo:hi], other[lo:hi], target[lo:hi])
    out = metric.compute()
    expected = np_reference(ref.argmax(1).numpy(), other.argmax(1).numpy(), target.numpy())
    assert_matches(out, expected)
    functional = MF.disagreement_rate(
        ref, other, target=target, num_classes=C, per_class=True, flips=True
    )
    for key in out:
        assert torch.equal(out[key], functional[key]), key
    assert float(out["rate"]) == pytest.approx(
        sum(float(out[k]) for k in FLIP_DIRECTIONS), abs=1e-6
    )


def test_reset_forgets_earlier_batches():
    metric = DisagreementRate()
    ref, other, _ = random_outputs(200, 1)
    metric.update(ref[:50], other[:50])
    first = metric.compute()
    metric.reset()
    assert int(metric.total) == 0 and int(metric.disagreements) == 0
    metric.update(ref[50:], other[50:])
    assert torch.equal(metric.compute(), MF.disagreement_rate(ref[50:], other[50:]))
    assert torch.equal(first, MF.disagreement_rate(ref[:50], other[:50]))


def test_logits_probabilities_and_labels_give_the_same_rate():
    ref, other, _ = random_outputs(300, 2)
    forms = [(ref, other), (ref.softmax(1), other.softmax(1)), (ref.argmax(1), other.argmax(1))]
    rates = []
    for a, b in forms:
        metric = DisagreementRate()
        metric.update(a, b)
        rates.append(metric.compute())
    assert rates[0] == rates[1] == rates[2]
    expected = (ref.argmax(1) != other.argmax(1)).double().mean().item()
    assert rates[0].item() == pytest.approx(expected)


def test_plain_metric_returns_a_scalar_and_is_declared_like_torchmetrics():
    metric = DisagreementRate()
    metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    out = metric.compute()
    assert out.shape == () and out.dtype == torch.float32
    assert out.item() == pytest.approx(1 / 3)
    assert DisagreementRate.higher_is_better is False
    assert DisagreementRate.is_differentiable is False
    assert DisagreementRate.full_state_update is False
    full = DisagreementRate(num_classes=3, per_class=True, flips=True)
    assert set(full._reductions) == {
        "disagreements",
        "total",
        "class_disagreements",
        "class_total",
        "flip_counts",
    }
    # every state is a count, summed across processes
    assert all(fn.__name__ == "dim_zero_sum" for fn in full._reductions.values())


def test_empty_metric_gives_zero():
    with pytest.warns(UserWarning, match="compute"):
        assert DisagreementRate().compute().item() == 0.0


def test_per_class_is_by_the_reference_label():
    ref = torch.tensor([0, 0, 1, 1, 1, 2])
    other = torch.tensor([0, 1, 1, 1, 0, 2])
    out = MF.disagreement_rate(ref, other, num_classes=4, per_class=True)
    assert out["per_class"].tolist() == pytest.approx([0.5, 1 / 3, 0.0, 0.0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DisagreementRate(per_class=True), "per_class=True needs num_classes"),
        (lambda: DisagreementRate(num_classes=1), "num_classes must be an int >= 2"),
        (lambda: MF.disagreement_rate(torch.zeros(2), torch.zeros(2), flips=True), "target"),
        (
            lambda: MF.disagreement_rate(torch.zeros(3, 4), torch.zeros(3, 4), num_classes=5),
            "reference has 4 classes, but num_classes=5",
        ),
        (
            lambda: MF.disagreement_rate(torch.tensor([0, 7]), torch.tensor([0, 1]), num_classes=3),
            r"reference labels must be in \[0, 3\)",
        ),
        (
            lambda: MF.disagreement_rate(
                torch.tensor([0, 1]), torch.tensor([0, 1]), target=torch.tensor([0.0, 1.0])
            ),
            "target must be integer labels of shape",
        ),
        (lambda: MF.disagreement_rate(torch.zeros(3), torch.zeros(4)), "different inputs"),
        (lambda: MF.disagreement_rate([0, 1], torch.zeros(2)), "got list"),
    ],
)
def test_bad_input_fails_with_one_clear_line(make, message):
    with pytest.raises(MitigateError, match=message):
        make()


def test_update_without_target_fails_when_flips_are_asked_for():
    with pytest.raises(MitigateError, match="flips=True.*target"):
        DisagreementRate(flips=True).update(torch.zeros(2), torch.zeros(2))


def test_functional_module_re_exports_the_core():
    from mitigate import disagreement

    for name in MF.__all__:
        assert getattr(MF, name) is getattr(disagreement, name)
    assert mitigate.functional is MF


def test_find_disagreements_matches_numpy_and_restores_modes(digits_xy):
    x, _ = digits_xy
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )
    q = mitigate.quantize(model, "int8", x[:128])
    model.train()
    model[2].eval()  # a mixed state that must survive
    found = find_disagreements(model, q, x[:600], batch_size=97)
    assert model.training and not model[2].training
    model.eval()
    with torch.no_grad():
        expected = np.flatnonzero(model(x[:600]).argmax(1).numpy() != q(x[:600]).argmax(1).numpy())
    assert found.tolist() == expected.tolist()
    assert len(found) > 0 and found.dtype == torch.int64


class _Logged(pl.LightningModule):
    """Logs the metric object itself from validation_step, as a user would."""

    def __init__(self, reference: nn.Module, other: nn.Module) -> None:
        super().__init__()
        self.reference, self.other = reference, other
        self.disagreement = DisagreementRate()

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.disagreement.update(self.reference(x), self.other(x))
        self.log("val/disagreement_rate", self.disagreement, on_epoch=True)


def test_metric_logs_with_self_log_like_any_torchmetric():
    torch.manual_seed(0)
    reference = nn.Linear(6, 4)
    other = nn.Linear(6, 4)
    with torch.no_grad():
        other.weight.copy_(reference.weight + 0.3 * torch.randn_like(reference.weight))
        other.bias.copy_(reference.bias)
    x = torch.randn(300, 6)
    loader = DataLoader(TensorDataset(x, torch.zeros(300)), batch_size=64)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        (result,) = trainer.validate(_Logged(reference, other), loader, verbose=False)
    with torch.no_grad():
        expected = F.one_hot(reference(x).argmax(1), 4).ne(F.one_hot(other(x).argmax(1), 4))
    assert result["val/disagreement_rate"] == pytest.approx(
        MF.disagreement_rate(reference(x), other(x)).item()
    )
    assert 0 < result["val/disagreement_rate"] == pytest.approx(expected.any(1).float().mean())
