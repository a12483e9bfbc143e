"""A user's own model and data through the runs: a factory with weights, models and data given
as objects, image folders and npz files, and the failures that must come before any work."""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mitigate
from mitigate.config import Config, override
from mitigate.errors import MitigateError, MitigateWarning
from mitigate.models import build_model, save_checkpoint
from mitigate.runs.data import load_data

# The two cheapest schemes of the four these tests need.
SCHEMES = {"quantization__schemes": ["int8", "int8-dynamic"]}
_modules = itertools.count()

FACTORIES = """
import torch
from torch import nn
from mitigate.models import build_model


def lenet1(in_channels, image_size, num_classes):
    return build_model("lenet1", in_channels=in_channels, image_size=image_size,
                       num_classes=num_classes)


def seven_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))


def wrong_inputs(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))


def not_a_module():
    return "a model"


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
            return x
        return -x


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.block = Gate()
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.block(self.flat(x)))


def gated():
    return Gated()
"""


@pytest.fixture
def factories(tmp_path, monkeypatch) -> str:
    """A module of model factories importable under a fresh name; returns that name."""
    name = f"user_factories_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def small(tiny_retrain):
    """``small(**extra)``: the tiny digits setup, with ``extra`` overrides."""
    return lambda **extra: override(Config(), **(tiny_retrain | SCHEMES | extra))


def counts(report: dict) -> tuple:
    return report["totals"], [(g["name"], g["disagreements"]) for g in report["groups"]]


def test_a_factory_with_weights_reports_what_the_same_zoo_checkpoint_reports(
    factories, tmp_path, small
):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10)
    save_checkpoint(tmp_path / "zoo.pt", model, {})
    save_file(model.state_dict(), str(tmp_path / "own.safetensors"))
    torch.save(model.state_dict(), tmp_path / "own.pt")

    zoo = mitigate.evaluate(small(model__arch="lenet1"), checkpoint=tmp_path / "zoo.pt").report
    for weights in ("own.safetensors", "own.pt"):
        config = small(model__factory=f"{factories}:lenet1", model__weights=str(tmp_path / weights))
        own = mitigate.evaluate(config).report
        assert counts(own) == counts(zoo)
        assert own["model"]["source"] == "weights" and own["model"]["arch"].endswith(":lenet1")


def test_a_model_object_reports_what_its_checkpoint_reports_and_is_left_untouched(tmp_path, small):
    torch.manual_seed(4)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "zoo.pt", model, {})

    given = mitigate.evaluate(small(), model=model).report
    saved = mitigate.evaluate(small(model__arch="lenet1"), checkpoint=tmp_path / "zoo.pt").report
    assert counts(given) == counts(saved)
    assert given["model"]["source"] == "given"
    assert model.training  # the caller's model keeps its mode and weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_data_objects_run_with_their_own_splits_and_say_what_was_left_out(small, tiny_retrain):
    digits = load_data(small())
    test, pool = digits.splits.test, digits.splits.pool
    x, y = test.batch(slice(None)), test.labels
    torch.manual_seed(5)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10)
    data = mitigate.Data(test=(x, y), calibration=(x[:20], y[:20]), classes=test.classes)
    with pytest.warns(MitigateWarning) as caught:
        report = mitigate.evaluate(model=model, data=data, **tiny_retrain, **SCHEMES).report
    said = " ".join(str(w.message) for w in caught)
    assert "no pool split" in said and "no train split" in said
    assert report["totals"]["clean"]["n"] == len(x)
    assert report["config"]["data"]["dataset"].startswith("object:")

    # The same inputs as a Dataset of pairs, and a split as LabelledImages: the same splits.
    as_pairs = [(x[i], int(y[i])) for i in range(len(y))]
    again = mitigate.Data(test=as_pairs, pool=pool, classes=test.classes)
    splits, notes = mitigate.data.own.own_splits(again)
    assert torch.equal(splits["test"].batch(slice(None)), x)
    assert torch.equal(splits["pool"].batch(slice(None)), pool.batch(slice(None)))
    assert any("no train split" in n for n in notes)


def test_settings_by_name_and_their_errors():
    from mitigate.runs.objects import settings_override

    config = settings_override(Config(), {"strategy": "guard", "budget": 5, "seed": 2})
    assert (config.retrain.strategy, config.selection.budget, config.seed) == ("guard", 5, 2)
    with pytest.raises(MitigateError, match="several sections.*shifts__families"):
        settings_override(Config(), {"families": ["rotate"]})
    with pytest.raises(MitigateError, match="unknown setting 'stratgy'"):
        settings_override(Config(), {"stratgy": "guard"})
    with pytest.raises(MitigateError, match="data must be mitigate.Data"):
        mitigate.evaluate(data=(torch.zeros(2, 1, 8, 8), torch.zeros(2)))


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        ("seven_classes", r"returns \[2, 7\] for a batch of 2; the data has 10 classes"),
        ("wrong_inputs", r"fails on the data's inputs \[2, 1, 8, 8\]"),
        ("not_a_module", "returned a str, not a torch nn.Module"),
        ("missing", "has no 'missing'"),
    ],
)
def test_a_model_that_does_not_fit_the_data_fails_before_any_training(
    factories, factory, words, monkeypatch, small
):
    from mitigate.runs import base_model

    def no_training(*args, **kwargs):
        raise AssertionError("a model that does not fit must fail before training")

    monkeypatch.setattr(base_model, "train_model", no_training)
    with pytest.raises(MitigateError, match=words):
        mitigate.evaluate(small(model__factory=f"{factories}:{factory}"))


def test_a_model_fx_cannot_trace_fails_static_int8_naming_the_module_and_runs_dynamic(
    factories, small
):
    gated = __import__(factories).gated()
    with pytest.raises(MitigateError, match=r"cannot trace module 'block' \(Gate\).*int8-dynamic"):
        mitigate.evaluate(small(), model=gated)
    report = mitigate.evaluate(small(quantization__schemes=["int8-dynamic", "fp16"]), model=gated)
    assert set(report.report["schemes"]) == {"int8-dynamic", "fp16"}


def test_weights_that_do_not_fit_or_hold_nan_are_refused_in_one_line(factories, tmp_path, small):
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10)
    state = model.state_dict()
    torch.save({k: v for k, v in state.items() if "conv2" not in k}, tmp_path / "partial.pt")
    broken = {k: v.clone() for k, v in state.items()}
    next(iter(broken.values())).fill_(float("nan"))
    torch.save(broken, tmp_path / "nan.pt")
    (tmp_path / "text.pt").write_text("not weights")
    factory = f"{factories}:lenet1"
    for name, words in [
        ("partial.pt", "do not fit the model; missing: conv2.weight, conv2.bias"),
        ("nan.pt", "hold NaN or infinite values"),
        ("text.pt", "is not a torch file"),
        ("absent.pt", "weights file not found"),
    ]:
        config = small(model__factory=factory, model__weights=str(tmp_path / name))
        with pytest.raises(MitigateError, match=words):
            mitigate.evaluate(config)


def _write_images(root: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_an_image_folder_and_an_npz_of_the_same_arrays_give_the_same_splits(tmp_path, channels):
    rng = np.random.default_rng(0)
    classes = ["ant", "bee", "cat"]
    y = np.repeat(np.arange(3), 40)  # class by class: the order a folder is read in
    x = rng.integers(0, 256, size=(len(y), channels, 12, 10), dtype=np.uint8)
    _write_images(tmp_path / "folder", x, y, classes)
    np.savez(tmp_path / "arrays.npz", x=x, y=y, classes=np.array(classes))
    sizes = dict(data__train=50, data__val=10, data__calibration=20, data__pool=20, data__test=20)
    shifts = dict(shifts__families=["gaussian-noise"], shifts__held_out=[])
    folder = load_data(
        override(Config(), data__dataset=f"imagefolder:{tmp_path}/folder", **sizes, **shifts)
    )
    arrays = load_data(
        override(Config(), data__dataset=f"npz:{tmp_path}/arrays.npz", **sizes, **shifts)
    )
    for name in ("train", "val", "calibration", "pool", "test"):
        a, b = getattr(folder.splits, name), getattr(arrays.splits, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels), name
    assert folder.classes == arrays.classes == tuple(classes)


def test_an_image_folder_is_resized_and_converted_when_asked(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([0, 0, 1, 1])
    _write_images(tmp_path / "f", rng.integers(0, 256, (4, 3, 9, 9), dtype=np.uint8), y, ["a", "b"])
    from mitigate.data.imagefolder import load_imagefolder

    data, test = load_imagefolder(tmp_path / "f", image_size=(16, 20), channels=1)
    assert data.images.shape == (4, 1, 16, 20) and test is None
    from PIL import Image

    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "f" / "a" / "small.png")
    with pytest.raises(MitigateError, match="small.png is 5x5 .* set image_size"):
        load_imagefolder(tmp_path / "f", channels=3)
    with pytest.raises(MitigateError, match="has no class subfolders"):
        load_imagefolder(tmp_path / "f" / "a")


def test_declared_normalization_is_applied_after_the_shift(small):
    plain = load_data(small())
    normal = load_data(small(data__mean=[0.5], data__std=[0.25]))
    index = torch.arange(8)
    for shift in (None, "gaussian-noise"):
        raw = plain.splits.test.batch(index, shift, 3, seed=1)
        assert torch.allclose(normal.splits.test.batch(index, shift, 3, seed=1), (raw - 0.5) / 0.25)
    with pytest.raises(MitigateError, match="one value or one per channel"):
        load_data(small(data__mean=[0.5, 0.5], data__std=[1.0, 1.0]))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 20, 37), (1, 9, 64)])
def test_every_shift_that_applies_keeps_any_image_size_in_range(shape):
    from mitigate.data.shifts import apply_shift, shifts_for

    names, skipped = shifts_for(shape)
    assert set(names) | set(skipped) == set(mitigate.data.shifts.SHIFTS)
    x = torch.rand(3, *shape)
    for name in names:
        y = apply_shift(x, name, 5, seed=0, index=torch.arange(3))
        assert y.shape == x.shape and bool(((y >= 0) & (y <= 1)).all()), name


def test_families_that_cannot_apply_are_skipped_with_one_warning():
    from mitigate.data.evalset import resolve_families
    from mitigate.data.images import LabelledImages

    tiny = LabelledImages(torch.zeros(2, 1, 5, 7, dtype=torch.uint8), torch.zeros(2), ("a",))
    with pytest.warns(MitigateWarning, match="cannot apply to 1x5x7 images") as caught:
        assert resolve_families(["all"], tiny) == []
    assert len(caught) == 1
    with pytest.raises(MitigateError, match="cannot apply to these images: needs images of"):
        resolve_families(["rotate"], tiny)
    assert resolve_families(["rotate"], tiny, skip=True) == []
    grey = LabelledImages(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2), ("a",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a colour family on grey images goes without saying
        assert "saturate" not in resolve_families(["all"], grey)


def test_a_dataset_function_gives_its_splits(tmp_path, monkeypatch, small):
    name = f"user_data_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n"
        "def splits():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.rand(60, 1, 8, 8, generator=g), torch.arange(60) % 3\n"
        "    return {'train': (x[:30], y[:30]), 'test': (x[30:], y[30:])}\n"
        "def broken():\n"
        "    raise RuntimeError('no data today')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(MitigateWarning) as caught:
        data = load_data(small(data__dataset=f"{name}:splits"))
    said = " ".join(str(w.message) for w in caught)
    assert "no calibration split" in said and "no pool split" in said
    assert (len(data.splits.train), len(data.splits.test), len(data.splits.pool)) == (30, 30, 0)
    with pytest.raises(MitigateError, match="raised RuntimeError: no data today"):
        load_data(small(data__dataset=f"{name}:broken"))
    with pytest.raises(MitigateError, match="no module named 'no_such_module'"):
        load_data(small(data__dataset="no_such_module:splits"))


def test_compare_on_objects_resumes_for_the_same_model_and_never_mixes_another(small, tmp_path):
    torch.manual_seed(6)
    model = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10)
    other = build_model("lenet1", in_channels=1, image_size=(8, 8), num_classes=10)
    config = small(
        compare__strategies=["fallback"],
        compare__selectors=["margin"],
        compare__budgets=[20],
        compare__seeds=1,
    )

    def run(net) -> list[bool]:
        cached = []
        mitigate.compare(config, tmp_path, model=net, on_cell=lambda _, hit: cached.append(hit))
        return cached

    assert run(model) == [False]
    assert run(model) == [True]  # the same weights: the finished cell is reused
    assert run(other) == [False]  # other weights: a cell of their own


@pytest.mark.parametrize(
    ("dataset", "words"),
    [
        ("imagefolder:", "needs a path after the colon"),
        ("npz:", "needs a path after the colon"),
        ("imagefolder", "needs a folder: imagefolder:PATH"),
        (":x", "valid choices: digits.*imagefolder:PATH, npz:PATH, pkg.module:function"),
        ("os:getcwd", "returned a str; it must return mitigate.Data"),
    ],
)
def test_a_dataset_spec_that_names_nothing_usable_is_one_line(small, dataset, words):
    with pytest.raises(MitigateError, match=words):
        load_data(small(data__dataset=dataset))
