"""Strategies on a tiny digits setup: what each one reads, trains on, and changes."""

from __future__ import annotations

import pytest
import torch

from mitigate.config import Config, override
from mitigate.errors import MitigateError
from mitigate.mitigation.strategies import (
    STRATEGIES,
    Context,
    Selected,
    _labelled_loader,
    parse_strategy,
)
from mitigate.runs.retrain import prepare, run_strategy, select, strategy_settings


@pytest.fixture(scope="module")
def seeded(tiny_retrain):
    torch.set_num_threads(1)
    return prepare(override(Config(), **tiny_retrain))


@pytest.fixture(scope="module")
def picked(seeded):
    return select(seeded, "margin", 150)


def test_finetune_trains_on_exactly_the_selected_inputs_with_their_true_labels(seeded, picked):
    selected = picked.head(20)
    session = seeded.session
    settings = strategy_settings(session.config)
    ctx = Context(settings, session.model, session.data.splits.train, selected, picked.x, 0)
    dataset = _labelled_loader(ctx).dataset
    x, y, w = dataset.tensors
    train = seeded.session.data.splits.train
    assert len(x) == len(train) + 20
    assert torch.equal(x[: len(train)], train.float_batch(slice(None)))
    assert torch.equal(x[len(train) :], selected.x) and torch.equal(y[len(train) :], selected.y)
    # the labels are the pool's true labels of the picked (group, index) pairs
    pool = seeded.session.data.splits.pool
    assert torch.equal(selected.y, pool.labels[torch.tensor([i for _, i in selected.meta])])
    assert torch.equal(w, torch.ones(len(x)))


def test_distill_needs_no_labels(seeded, picked):
    selected = picked.head(30)
    shuffled = Selected(
        selected.x,
        selected.y[torch.randperm(len(selected), generator=torch.Generator().manual_seed(1))],
        selected.meta,
    )
    a = run_strategy(seeded, "distill", selected, picked.x)[-1]
    b = run_strategy(seeded, "distill", shuffled, picked.x)[-1]
    x = seeded.session.data.splits.test.float_batch(slice(None))
    assert all(
        torch.equal(p, q)
        for p, q in zip(
            a.fp_model.state_dict().values(), b.fp_model.state_dict().values(), strict=True
        )
    )
    assert torch.equal(a.quantized(x), b.quantized(x))
    assert not a.used_labels


def test_none_reproduces_q0_exactly(seeded, picked):
    state = run_strategy(seeded, "none", picked.head(10), picked.x)[-1]
    x = seeded.session.data.splits.test.float_batch(slice(None))
    assert torch.equal(state.quantized(x), seeded.q0(x))
    assert state.fp_model is seeded.session.model


def test_training_never_modifies_the_original_model(seeded, picked):
    before = {k: v.clone() for k, v in seeded.session.model.state_dict().items()}
    run_strategy(seeded, "finetune", picked.head(10), picked.x)
    assert all(torch.equal(before[k], v) for k, v in seeded.session.model.state_dict().items())


def test_fallback_and_settings_record_their_choice(seeded, picked):
    (settings, fallback) = run_strategy(seeded, "settings+fallback", picked.head(10), picked.x)
    assert settings.notes["probe"] == len(picked.x)
    assert fallback.scheme.float_layers == tuple(fallback.notes["float_layers"])


def test_strategy_names_fail_with_the_valid_list():
    with pytest.raises(
        MitigateError, match="unknown strategy 'magic'; valid choices: none, recalibrate"
    ):
        parse_strategy("magic")
    with pytest.raises(MitigateError, match="cannot be combined"):
        parse_strategy("none+finetune")
    assert [s.name for s in parse_strategy("settings,fallback")] == ["settings", "fallback"]
    assert {n for n, s in STRATEGIES.items() if s.uses_labels} == {"finetune", "qat"}


def test_probe_strategies_refuse_a_non_static_scheme(picked, tiny_retrain):
    seeded = prepare(override(Config(), **{**tiny_retrain, "retrain__scheme": "fp16"}))
    with pytest.raises(MitigateError, match="needs a static int8 scheme"):
        run_strategy(seeded, "fallback", picked.head(5), picked.x)
