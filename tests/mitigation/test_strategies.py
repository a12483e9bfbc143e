"""Strategies on a tiny digits setup: what each one reads, trains on, and changes."""

from __future__ import annotations

import pytest
import torch

from mitigate.config import Config, override
from mitigate.errors import MitigateError
from mitigate.mitigation.strategies import STRATEGIES, Context, Selected, parse_strategy
from mitigate.mitigation.train_steps import labelled_loader
from mitigate.runs.retrain import prepare, run_strategy, select, strategy_settings
from mitigate.selectors import SCORES


@pytest.fixture(scope="module")
def seeded(tiny_retrain):
    torch.set_num_threads(1)
    return prepare(override(Config(), **tiny_retrain))


@pytest.fixture(scope="module")
def picked(seeded):
    return select(seeded, SCORES["margin"], 150)


def test_finetune_trains_on_exactly_the_selected_inputs_with_their_true_labels(seeded, picked):
    selected = picked.head(20)
    session = seeded.session
    settings = strategy_settings(session.config)
    ctx = Context(settings, session.model, session.data.splits.train, selected, picked.x, 0)
    dataset = labelled_loader(ctx).dataset
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


def test_steps_that_keep_f0_keep_it_bit_for_bit_and_q1_fully_int8(seeded, picked):
    """The steps that change only the quantizer: f1 is f0 itself, bit for bit; all but the
    guard keep q1's kernels and size, the guard adds f0's weights."""
    from mitigate.mitigation.deployment import serialized_size
    from mitigate.mitigation.guard import GuardedModel

    before = {k: v.clone() for k, v in seeded.session.model.state_dict().items()}
    keeping = [name for name, s in STRATEGIES.items() if s.keeps_f0]
    assert {"adaround", "bias-correction", "ranges", "qat-anchor", "guard"} <= set(keeping)
    for name in keeping:
        (state,) = run_strategy(seeded, name, picked.head(10), picked.x)
        assert state.fp_model is seeded.session.model
        if name in ("none", "recalibrate", "settings", "fallback"):
            continue  # they rebuild q0's kind of model from a scheme
        if name == "guard":
            assert isinstance(state.quantized, GuardedModel)
            assert 0 <= state.notes["rerouted"] <= 1 and state.notes["caught"] >= 0.95
        else:
            size, q0_size = serialized_size(state.quantized), serialized_size(seeded.q0)
            assert abs(size - q0_size) < 0.01 * q0_size  # pickle framing only: same tensors
            kinds = [type(m).__name__ for m in state.quantized.modules()]
            assert kinds == [type(m).__name__ for m in seeded.q0.modules()]
    after = seeded.session.model.state_dict()
    assert all(torch.equal(before[k], v) for k, v in after.items())


def test_a_guard_only_removes(seeded, picked):
    """Rerouted inputs get f0's own answer and the others q's: a guard can remove
    disagreements but never introduce one."""
    from mitigate.mitigation.accounting import account
    from mitigate.runs.retrain import measure

    (state,) = run_strategy(seeded, "guard", picked.head(10), picked.x)
    totals = account(measure(seeded, state.fp_model, state.quantized))["totals"]
    for part in totals.values():
        if part["n"]:
            assert part["introduced"] == 0 and part["churn"] == 0
            assert part["removed"] <= part["rerouted"]


def test_fallback_stays_within_the_budget(seeded, picked, tiny_retrain):
    from mitigate.mitigation.deployment import float_shares

    (state,) = run_strategy(seeded, "fallback", picked.head(10), picked.x)
    shares = float_shares(seeded.session.model, state.scheme, seeded.session.data.input_shape)
    assert shares["params"] <= 0.1 + 1e-9 and shares["macs"] <= 0.1 + 1e-9
    assert state.notes["disagreements_after"] <= state.notes["disagreements_before"]


def test_steps_keep_their_order():
    for bad in ("adaround+fallback", "guard+adaround", "guard+guard", "bias-correction+settings"):
        with pytest.raises(MitigateError, match="order the steps"):
            parse_strategy(bad)
    assert [s.name for s in parse_strategy("settings+fallback+adaround+guard")] == [
        "settings",
        "fallback",
        "adaround",
        "guard",
    ]
