"""Selection from the pool: the streaming scan picks exactly what an in-memory selection of
the whole scored pool would, and rebuilds exactly those inputs."""

from __future__ import annotations

import pytest
import torch

from mitigate.errors import MitigateError
from mitigate.selectors import select_from_pool


def selected_pool_inputs(cfg, data, model, *, batch_size=None, **kwargs):
    """``(x, y, meta)`` of :func:`select_from_pool` over the config's pool groups."""
    from mitigate.runs.data import pool_groups

    picked = select_from_pool(
        model,
        data.splits.pool,
        pool_groups(cfg, data),
        seed=cfg.seed,
        batch_size=batch_size or cfg.eval.batch_size,
        **kwargs,
    )
    return picked.x, picked.y, picked.meta


@pytest.fixture(scope="module")
def tiny_setup():
    from mitigate.config import load_config, override
    from mitigate.models import build_model
    from mitigate.runs.data import load_data

    cfg = override(
        load_config(None),
        data__train=300,
        data__val=50,
        data__calibration=50,
        data__pool=100,
        data__test=100,
        shifts__families="gaussian-noise,rotate,contrast",
        shifts__severities="2,4",
        shifts__held_out="rotate",
    )
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10).eval()
    return cfg, data, model


def _full_pool(cfg, data, model, q_model=None, selector="margin"):
    from mitigate.data.evalset import iter_batches
    from mitigate.runs.data import pool_groups
    from mitigate.selectors import compute_score

    groups = pool_groups(cfg, data)
    n = len(data.splits.pool)
    xs, scores, names = [], [], []
    with torch.no_grad():
        for b in iter_batches(data.splits.pool, groups, batch_size=64, seed=cfg.seed, split="pool"):
            position = b.group * n + b.index
            q = q_model(b.x) if q_model is not None else None
            scores.append(compute_score(selector, model(b.x), q, index=position, seed=cfg.seed))
            xs.append(b.x)
            names += [(groups[b.group].name, int(i)) for i in b.index]
    return torch.cat(xs), torch.cat(scores), names


def test_probe_is_the_selected_pool_inputs_rebuilt_exactly(tiny_setup):
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    x, y, meta = selected_pool_inputs(cfg, data, model, selector="margin", budget=40)
    all_x, scores, names = _full_pool(cfg, data, model)
    picked = select(scores, 40)
    assert meta == [names[int(p)] for p in picked]
    assert torch.allclose(x, all_x[picked], atol=1e-5)
    assert torch.equal(y, data.splits.pool.labels[torch.tensor([i for _, i in meta])])
    assert x.shape == (40, 1, 8, 8) and x.dtype == torch.float32
    assert not any(name.startswith("rotate") for name, _ in meta)  # held out of the pool
    assert len({name for name, _ in meta}) > 1  # several groups, rebuilt group by group


def test_class_balanced_probe_equals_an_in_memory_balanced_selection(tiny_setup):
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    x, _, meta = selected_pool_inputs(
        cfg, data, model, selector="margin", budget=40, class_balanced=True, batch_size=37
    )
    all_x, scores, names = _full_pool(cfg, data, model)
    with torch.no_grad():
        predicted = model(all_x).argmax(1)
    picked = select(scores, 40, labels=predicted, class_balanced=True)
    assert meta == [names[int(p)] for p in picked]
    assert torch.allclose(x, all_x[picked], atol=1e-5)
    first_round = predicted[picked[: len(predicted.unique())]]
    assert len(first_round.unique()) == len(predicted.unique())  # one of every class first


def test_probe_with_a_differential_selector_needs_the_quantized_model(tiny_setup):
    from mitigate.quantization import quantize
    from mitigate.selectors import select

    cfg, data, model = tiny_setup
    with pytest.raises(MitigateError, match="selector 'kl' compares the two models"):
        selected_pool_inputs(cfg, data, model, selector="kl", budget=10)
    with pytest.raises(MitigateError, match="unknown selector 'nope'; valid choices: margin"):
        selected_pool_inputs(cfg, data, model, selector="nope", budget=10)
    q = quantize(model, "int8", data.splits.calibration.float_batch(slice(0, 50)))
    _, _, meta = selected_pool_inputs(cfg, data, model, selector="kl", budget=10, q_model=q)
    _, scores, names = _full_pool(cfg, data, model, q_model=q, selector="kl")
    assert meta == [names[int(p)] for p in select(scores, 10)]


def test_a_session_selects_what_the_public_function_selects(tiny_setup):
    """The run's path (name looked up once, budget resolved once against the session's pool
    size) picks exactly what ``select_from_pool`` picks from a name and a fraction."""
    from mitigate.runs.session import Session
    from mitigate.selectors import SCORES, check_selector, pool_size, resolve_budget

    cfg, data, model = tiny_setup
    assert check_selector("margin") is SCORES["margin"]
    session = Session(cfg, data, model, model_info=None)  # type: ignore[arg-type]
    assert session.pool_size == pool_size(data.splits.pool, session.pool_groups)
    k = resolve_budget(0.05, session.pool_size)
    picked = session.select(check_selector("margin"), k)
    _, _, meta = selected_pool_inputs(cfg, data, model, selector="margin", budget=0.05)
    assert len(picked) == k and picked.meta == meta
    with pytest.raises(MitigateError, match="unknown selector 3; valid choices: margin"):
        check_selector(3)  # type: ignore[arg-type]
