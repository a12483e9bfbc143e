"""The runtime margin guard: routing, threshold choice against a NumPy reference, save/load."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from mitigate.errors import MitigateError
from mitigate.mitigation.guard import (
    GUARD_FORMAT,
    GuardChoice,
    GuardedModel,
    choose_threshold,
    guard_margin,
    load_guard,
    save_guard,
    threshold_outcome,
)
from mitigate.quantization import quantize
from mitigate.selectors import margin_score

SCHEMES = ["int8", "int8:engine=qnnpack", "int8-dynamic", "int4-weight", "fp16"]


@pytest.fixture(scope="module")
def x(digits_xy) -> torch.Tensor:
    """300 digits with noise, where int8 and FP sometimes disagree."""
    images = digits_xy[0][1400:1700]
    generator = torch.Generator().manual_seed(2)
    return (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def quantized(trained_tiny, digits_xy) -> dict[str, nn.Module]:
    calibration = digits_xy[0][:100]
    return {scheme: quantize(trained_tiny, scheme, calibration) for scheme in SCHEMES}


@pytest.fixture(autouse=True)
def _no_grad():
    # Deployment-style calls: a dynamic-int8 output would otherwise carry a grad_fn.
    with torch.no_grad():
        yield


class _Calls(nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return self.model(x)


def _fp(trained_tiny: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return trained_tiny(x)


# ---- routing --------------------------------------------------------------------------------


def test_threshold_zero_is_the_quantized_model_and_never_runs_fp(trained_tiny, quantized, x):
    q = quantized["int8"]
    fp = _Calls(trained_tiny)
    guard = GuardedModel(q, fp, 0.0)
    logits, rerouted = guard.route(x)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, q(x))
    assert not bool(rerouted.any())
    assert fp.batches == []


@pytest.mark.parametrize("threshold", [math.inf, 1.5])
def test_threshold_above_one_is_the_fp_model(trained_tiny, quantized, x, threshold):
    guard = GuardedModel(quantized["int8"], trained_tiny, threshold)
    logits, rerouted = guard.route(x)
    assert torch.equal(logits, _fp(trained_tiny, x))
    assert bool(rerouted.all())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_middle_threshold_reroutes_exactly_the_small_margins(trained_tiny, quantized, x, scheme):
    q = quantized[scheme]
    q_logits = q(x)
    margins = guard_margin(q_logits)
    threshold = float(margins.median())
    fp = _Calls(trained_tiny)
    guard = GuardedModel(q, fp, threshold)
    logits, rerouted = guard.route(x)
    expected = margins < threshold
    assert torch.equal(rerouted, expected)
    assert 0 < int(expected.sum()) < len(x)
    assert fp.batches == [int(expected.sum())]  # FP ran once, on the rerouted rows only
    assert torch.equal(logits[~expected], q_logits[~expected])
    assert torch.equal(logits[expected], _fp(trained_tiny, x[expected]))
    torch.testing.assert_close(logits[expected], _fp(trained_tiny, x)[expected])
    assert torch.equal(guard.rerouted_mask(x), expected)


def test_counters_and_reset(trained_tiny, quantized, x):
    q = quantized["int8-dynamic"]
    threshold = float(guard_margin(q(x)).quantile(0.3))
    guard = GuardedModel(q, trained_tiny, threshold)
    assert (guard.seen, guard.rerouted, guard.reroute_rate) == (0, 0, 0.0)
    masks = [guard.route(x[:120])[1], guard.route(x[120:])[1]]
    guard(x[:10])
    masks.append(guard.rerouted_mask(x[:10]))  # rerouted_mask leaves the counters alone
    total = sum(int(m.sum()) for m in masks)
    assert guard.seen == len(x) + 10
    assert guard.rerouted == total
    assert guard.reroute_rate == total / (len(x) + 10)
    guard.reset_counts()
    assert (guard.seen, guard.rerouted) == (0, 0)


def test_stays_in_eval_mode(trained_tiny, quantized):
    fp = _Calls(trained_tiny)
    fp.train()
    guard = GuardedModel(quantized["int8"], fp, 0.1)
    assert not fp.training
    assert guard.train() is guard
    assert not any(m.training for m in guard.modules())


def test_non_finite_quantized_logits_are_rerouted_unless_the_guard_is_off():
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.stack([x[:, 0] * 10, x[:, 1]], dim=1)
            out[0, 0] = math.inf
            out[1, 1] = math.nan
            return out

    fp = nn.Linear(2, 2)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    logits, rerouted = GuardedModel(Broken(), fp, 1e-9).route(x)
    assert rerouted.tolist() == [True, True, False]
    assert torch.isfinite(logits).all()
    assert not GuardedModel(Broken(), fp, 0.0).route(x)[1].any()


def test_guard_margin_is_p1_minus_p2():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 6, generator=generator) * 3
    p = torch.softmax(logits.double(), dim=1).numpy()
    top = np.sort(p, axis=1)[:, ::-1]
    np.testing.assert_allclose(guard_margin(logits).numpy(), top[:, 0] - top[:, 1], atol=1e-12)
    assert torch.equal(guard_margin(logits), 1.0 - margin_score(logits))


@pytest.mark.parametrize(
    ("threshold", "match"),
    [(-0.1, "threshold must be a real number >= 0"), (math.nan, "got nan"), ("0.5", "'0.5'")],
)
def test_bad_threshold(trained_tiny, threshold, match):
    with pytest.raises(MitigateError, match=match):
        GuardedModel(trained_tiny, trained_tiny, threshold)
    guard = GuardedModel(trained_tiny, trained_tiny, 0.2)
    with pytest.raises(MitigateError, match="threshold"):
        guard.threshold = threshold
    assert guard.threshold == 0.2


def test_bad_models_and_logits(trained_tiny):
    with pytest.raises(MitigateError, match="fp must be a torch.nn.Module, got str"):
        GuardedModel(trained_tiny, "model", 0.1)
    with pytest.raises(MitigateError, match=r"shape \[N, C\] with C >= 2"):
        guard_margin(torch.zeros(4, 1))
    guard = GuardedModel(nn.Linear(3, 1), nn.Linear(3, 1), 0.1)
    with pytest.raises(MitigateError, match="quantized model must return"):
        guard(torch.zeros(2, 3))
    guard = GuardedModel(nn.Linear(3, 2), nn.Linear(3, 4), 2.0)
    with pytest.raises(MitigateError, match="FP model returned shape"):
        guard(torch.zeros(2, 3))


# ---- choosing a threshold -------------------------------------------------------------------


def _pool(seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    # Margins on a coarse grid (many ties, 0 and 1 included); disagreements favour small ones.
    rng = np.random.default_rng(seed)
    margins = np.round(rng.beta(0.7, 1.5, n), 1)
    disagree = rng.random(n) < 0.6 * (1 - margins) ** 3
    return torch.tensor(margins), torch.tensor(disagree)


def _reference(margins: np.ndarray, disagree: np.ndarray, catch=None, rate=None) -> float:
    # Brute force over every distinct way of routing the pool: candidate thresholds are the
    # distinct margins and one above them all (rerouting j smallest distinct values).
    candidates = [*np.unique(margins), np.inf]
    n_dis = disagree.sum()
    ok = []
    for t in candidates:
        rerouted = margins < t
        if catch is not None:
            if n_dis == 0 or (rerouted & disagree).sum() >= catch * n_dis - 1e-9:
                ok.append(t)
        elif rerouted.sum() <= rate * len(margins) + 1e-9:
            ok.append(t)
    return min(ok) if catch is not None else max(ok)


@pytest.mark.parametrize("seed", range(6))
def test_choice_matches_a_brute_force_reference(seed):
    margins, disagree = _pool(seed)
    m, d = margins.numpy(), disagree.numpy()
    for kwargs in [dict(catch=c) for c in (0.1, 0.5, 0.77, 0.9, 1.0)] + [
        dict(rate=r) for r in (0.0, 0.05, 0.3, 0.5, 0.99, 1.0)
    ]:
        choice = choose_threshold(margins, disagree, **kwargs)
        ref = _reference(m, d, **kwargs)
        # Same routing of the pool as the reference threshold, and never splitting a tie.
        assert np.array_equal(m < choice.threshold, m < ref), kwargs
        assert not np.isin(choice.threshold, m) or choice.threshold == 0.0, kwargs
        rerouted = m < choice.threshold
        assert choice.rerouted == rerouted.mean()
        assert choice.pool_size == len(m) and choice.pool_disagreements == d.sum()
        assert choice.caught == ((rerouted & d).sum() / d.sum() if d.sum() else 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_choice_properties(seed):
    margins, disagree = _pool(seed + 10)
    full = choose_threshold(margins, disagree, catch=1.0)
    assert bool((margins[disagree] < full.threshold).all())
    assert full.caught == 1.0
    thresholds = [choose_threshold(margins, disagree, catch=c).threshold for c in (0.2, 0.6, 1)]
    assert thresholds == sorted(thresholds)
    for catch in (0.2, 0.6, 0.95):
        assert choose_threshold(margins, disagree, catch=catch).caught >= catch
    previous = -1.0
    for rate in (0.0, 0.01, 0.1, 0.4, 0.8, 1.0):
        choice = choose_threshold(margins, disagree, rate=rate)
        assert choice.rerouted <= rate
        assert choice.threshold >= previous
        previous = choice.threshold
    assert choose_threshold(margins, disagree, rate=0.0).threshold == 0.0
    assert choose_threshold(margins, disagree, rate=1.0).threshold == math.inf


def test_ties_are_never_split():
    margins = torch.tensor([0.1, 0.2, 0.2, 0.2, 0.5], dtype=torch.float64)
    disagree = torch.tensor([False, True, False, False, False])
    choice = choose_threshold(margins, disagree, catch=1.0)
    assert 0.2 < choice.threshold < 0.5
    assert choice.rerouted == 0.8
    assert choose_threshold(margins, disagree, rate=0.7).threshold < 0.2  # 4 of 5 is too many
    # Adjacent floats: the midpoint rounds onto the lower one; the threshold must not.
    low = 0.3
    high = math.nextafter(low, 1.0)
    pair = torch.tensor([low, high], dtype=torch.float64)
    choice = choose_threshold(pair, torch.tensor([True, False]), catch=1.0)
    assert choice.rerouted == 0.5 and low < choice.threshold <= high


def test_no_disagreements_means_the_guard_is_off():
    margins = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    choice = choose_threshold(margins, torch.zeros(3, dtype=torch.bool), catch=1.0)
    assert choice == GuardChoice(0.0, 0.0, 1.0, 3, 0)


def test_choice_on_a_real_pool_holds_on_the_guard(trained_tiny, quantized, x):
    q = quantized["int8"]
    q_logits = q(x)
    disagree = q_logits.argmax(1) != _fp(trained_tiny, x).argmax(1)
    choice = choose_threshold(guard_margin(q_logits), disagree, catch=1.0)
    guard = GuardedModel(q, trained_tiny, choice.threshold)
    logits, rerouted = guard.route(x)
    assert rerouted.double().mean().item() == choice.rerouted
    assert bool(rerouted[disagree].all())
    assert threshold_outcome(guard_margin(q_logits), disagree, choice.threshold) == choice


@pytest.mark.parametrize(
    ("margins", "disagree", "kwargs", "match"),
    [
        (torch.tensor([0.1]), torch.tensor([True]), {}, "exactly one of catch="),
        (torch.tensor([0.1]), torch.tensor([True]), dict(catch=1, rate=0), "exactly one"),
        (torch.tensor([0.1]), torch.tensor([True]), dict(catch=0.0), r"catch must be .*\(0, 1\]"),
        (torch.tensor([0.1]), torch.tensor([True]), dict(catch=1.5), "catch must be"),
        (torch.tensor([0.1]), torch.tensor([True]), dict(rate=-0.1), r"rate must be .*\[0, 1\]"),
        (torch.tensor([0.1]), torch.tensor([True]), dict(rate=math.nan), "rate must be"),
        (torch.tensor([0.1]), torch.tensor([True]), dict(rate=True), "rate must be"),
        (torch.zeros(0), torch.zeros(0, dtype=torch.bool), dict(rate=0.1), "margins is empty"),
        (torch.tensor([0.1, math.nan]), torch.tensor([True, False]), dict(rate=0.1), "NaN"),
        (torch.tensor([0.1, 1.5]), torch.tensor([True, False]), dict(rate=0.1), r"\[0, 1\]"),
        (torch.tensor([1, 0]), torch.tensor([True, False]), dict(rate=0.1), "float tensor"),
        ([0.1, 0.2], torch.tensor([True, False]), dict(rate=0.1), "got list"),
        (torch.tensor([0.1, 0.2]), torch.tensor([1, 0]), dict(rate=0.1), "disagree must be"),
        (torch.tensor([0.1, 0.2]), torch.tensor([True]), dict(rate=0.1), r"shape \[2\]"),
    ],
)
def test_choice_errors(margins, disagree, kwargs, match):
    with pytest.raises(MitigateError, match=match):
        choose_threshold(margins, disagree, **kwargs)


def test_outcome_errors():
    with pytest.raises(MitigateError, match="threshold must be"):
        threshold_outcome(torch.tensor([0.1]), torch.tensor([True]), -1.0)


# ---- saving and loading ---------------------------------------------------------------------


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (torch.Tensor, torch.dtype, str, int, float, bool, type(None)))


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_load_round_trip_is_bit_identical(
    tmp_path, trained_tiny, tiny_net_class, quantized, x, scheme
):
    q = quantized[scheme]
    threshold = float(guard_margin(q(x)).quantile(0.2))
    guard = GuardedModel(q, trained_tiny, threshold)
    expected, expected_mask = guard.route(x)
    path = tmp_path / "sub" / "guard.pt"
    save_guard(path, guard)
    assert os.listdir(path.parent) == ["guard.pt"]  # no temporary file left behind

    payload = torch.load(path, weights_only=True)
    assert payload["format"] == GUARD_FORMAT and payload["scheme"] == scheme
    assert payload["input_shape"] == [1, 8, 8] and _plain(payload)

    torch.manual_seed(123)
    fresh = tiny_net_class()  # other weights: load_guard overwrites them
    loaded = load_guard(path, fresh)
    assert loaded.fp is fresh and loaded.threshold == threshold
    assert loaded.quantized.label == scheme
    assert torch.equal(loaded.quantized(x), q(x))
    logits, mask = loaded.route(x)
    assert torch.equal(mask, expected_mask) and torch.equal(logits, expected)
    assert (loaded.seen, loaded.input_shape) == (len(x), (1, 8, 8))


def test_fx_int8_state_dict_holds_the_calibration(quantized):
    # What makes the round trip possible: the converted GraphModule's state dict carries the
    # activation scales/zero points and the int8 weights (conv) or packed weights (linear).
    state = quantized["int8"].state_dict()
    assert any(k.endswith("input_scale_0") for k in state)
    assert any(k.endswith("conv1.scale") for k in state)
    assert state["inner.conv1.weight"].dtype == torch.qint8
    assert isinstance(state["inner.fc._packed_params._packed_params"], tuple)


def test_qnnpack_state_loads_under_its_own_engine(
    tmp_path, trained_tiny, tiny_net_class, quantized, x
):
    # Loading repacks int8 weights for the active engine; the default one (x86) would give a
    # model that runs other kernels and answers differently.
    q = quantized["int8:engine=qnnpack"]
    path = tmp_path / "guard.pt"
    save_guard(path, GuardedModel(q, trained_tiny, 0.0), input_shape=(1, 8, 8))
    before = torch.backends.quantized.engine
    loaded = load_guard(path, tiny_net_class())
    assert torch.backends.quantized.engine == before
    assert torch.equal(loaded(x), q(x))


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_non_guard_files_are_refused(tmp_path, trained_tiny, tiny_net_class, quantized):
    net = tiny_net_class()
    with pytest.raises(MitigateError, match="no guard file at .*missing.pt"):
        load_guard(tmp_path / "missing.pt", net)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(MitigateError, match="notes.pt is not a mitigate guard or is corrupt"):
        load_guard(text, net)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(MitigateError, match="other.pt is not a mitigate guard"):
        load_guard(other, net)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": GUARD_FORMAT, "obj": GuardChoice(0.1, 0, 0, 1, 0)}, unsafe)
    with pytest.raises(MitigateError, match="unsafe.pt is not a safe mitigate guard"):
        load_guard(unsafe, net)

    good = tmp_path / "good.pt"
    save_guard(good, GuardedModel(quantized["int8"], trained_tiny, 0.1), input_shape=[1, 8, 8])
    payload = torch.load(good, weights_only=True)
    for key, value, match in [
        ("version", 7, "version 7"),
        ("threshold", math.nan, "bad or missing threshold"),
        ("threshold", None, "bad or missing threshold"),
        ("scheme", "int3", "bad quantization scheme"),
        ("input_shape", [1, -8], "bad or missing input_shape"),
        ("fp_state_dict", [1, 2], "bad or missing fp_state_dict"),
    ]:
        broken = tmp_path / f"broken-{key}.pt"
        torch.save({**payload, key: value}, broken)
        with pytest.raises(MitigateError, match=f"broken-{key}.pt.*{match}"):
            load_guard(broken, net)
    with pytest.raises(MitigateError, match="good.pt: its FP weights do not fit"):
        load_guard(good, nn.Linear(64, 10))


def test_save_errors(tmp_path, trained_tiny, quantized):
    with pytest.raises(MitigateError, match="needs a GuardedModel, got Linear"):
        save_guard(tmp_path / "g.pt", nn.Linear(2, 2))
    with pytest.raises(MitigateError, match="mitigate.quantization.quantize, got TinyNet"):
        save_guard(tmp_path / "g.pt", GuardedModel(trained_tiny, trained_tiny, 0.1))
    with pytest.raises(MitigateError, match="call the guard once or pass input_shape"):
        save_guard(tmp_path / "g.pt", GuardedModel(quantized["fp16"], trained_tiny, 0.1))
    with pytest.raises(MitigateError, match="is a folder"):
        save_guard(tmp_path, GuardedModel(quantized["fp16"], trained_tiny, 0.1), input_shape=[1])
    assert os.listdir(tmp_path) == []
