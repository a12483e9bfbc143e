from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mitigate.data.evalset import Batch, Group
from mitigate.disagreement import disagreement_count, disagreement_rate, flip_directions
from mitigate.errors import MitigateError
from mitigate.scanning import scan


def test_identical_copy_has_zero_disagreements(trained_tiny, digits_xy):
    x, y = digits_xy
    twin = copy.deepcopy(trained_tiny)
    groups = [Group("clean")]
    batches = [
        Batch(x[i : i + 256], y[i : i + 256], 0, torch.arange(i, min(i + 256, len(x))))
        for i in range(0, len(x), 256)
    ]
    pred = scan(trained_tiny, {"twin": twin}, batches, groups=groups)
    assert len(pred) == len(x)
    assert (pred.variants["twin"] != pred.reference).sum() == 0
    assert disagreement_count(trained_tiny(x), twin(x)) == 0


class _FlipOn(torch.nn.Module):
    """A 'quantized' copy that answers (label + 1) % C on the inputs whose first pixel > 0.5."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        shifted = torch.roll(logits, shifts=1, dims=1)
        flip = (x.flatten(1)[:, 0] > 0.5).unsqueeze(1)
        return torch.where(flip, shifted, logits)


def test_hand_built_copy_flips_exactly_the_known_inputs(trained_tiny, digits_xy):
    x, y = digits_xy
    x = x[:200].clone()
    x[:, 0, 0, 0] = 0.0
    flipped = torch.tensor([3, 17, 50, 51, 199])
    x[flipped, 0, 0, 0] = 1.0
    pred = scan(
        trained_tiny,
        {"flip": _FlipOn(trained_tiny)},
        [Batch(x, y[:200], 0, torch.arange(200))],
        groups=[Group("clean")],
    )
    assert np.flatnonzero(pred.variants["flip"] != pred.reference).tolist() == flipped.tolist()


def test_scan_gives_every_submodule_its_own_mode_back(tiny_net_class, digits_xy):
    # A wrapper in train mode around a validated model in eval mode (as _FlipOn above), and a
    # reference whose batch norm was frozen in eval inside a training model: after the scan
    # each module has its own flag back, and no running statistic moved.
    x, y = digits_xy
    inner = tiny_net_class().eval()
    wrapper = _FlipOn(inner)  # a new module is in train mode; inner keeps its eval
    reference = tiny_net_class().train()
    reference.bn1.eval()
    stats = copy.deepcopy(inner.state_dict()), copy.deepcopy(reference.state_dict())
    scan(
        reference,
        {"flip": wrapper},
        [Batch(x[:64], y[:64], 0, torch.arange(64))],
        groups=[Group("clean")],
    )
    assert wrapper.training and not inner.training and not any(m.training for m in inner.modules())
    assert reference.training and reference.conv1.training and not reference.bn1.training
    for before, model in zip(stats, (inner, reference), strict=True):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_functional_core_accepts_logits_probabilities_and_labels():
    a = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    b = torch.tensor([0, 2, 2, 1])
    assert disagreement_count(a, b) == 2
    assert disagreement_count(a.softmax(1), b) == 2
    assert disagreement_rate(a, b).item() == pytest.approx(0.5)
    assert (
        disagreement_rate(
            torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)
        ).item()
        == 0.0
    )


def test_flip_directions_partition_the_disagreements():
    ref = torch.tensor([0, 1, 2, 3, 4, 5])
    other = torch.tensor([0, 2, 1, 3, 0, 4])
    target = torch.tensor([0, 1, 1, 9, 9, 9])
    flips = flip_directions(ref, other, target)
    assert flips == {"correct_to_wrong": 1, "wrong_to_correct": 1, "wrong_to_other_wrong": 2}
    assert sum(flips.values()) == disagreement_count(ref, other)


def test_mismatched_shapes_fail_clearly():
    with pytest.raises(MitigateError, match="different inputs"):
        disagreement_count(torch.zeros(3), torch.zeros(4))
    with pytest.raises(MitigateError, match=r"expected labels \[N\] or scores \[N, C\]"):
        disagreement_count(torch.zeros(2, 2, 2), torch.zeros(2))
