"""Tests for the model zoo: shapes, quantizability, checkpoints and the layer table."""

from __future__ import annotations

import contextlib
import copy
import functools
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mitigate.errors import MitigateError
from mitigate.models import build_model, layer_table, load_checkpoint, model_names, save_checkpoint

NAMES = ["mlp", "lenet1", "lenet5", "nin", "resnet20"]
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SHAPE_IDS = ["digits", "mnist", "cifar"]
ENGINES = ["x86", "qnnpack"]
CLASSES = 10


def _build(name: str, shape: tuple[int, int, int]) -> nn.Module:
    c, h, w = shape
    return build_model(name, in_channels=c, image_size=(h, w), num_classes=CLASSES)


def _task(shape: tuple[int, int, int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny learnable task: class k is a fixed binary template plus noise, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.rand(CLASSES, *shape, generator=torch.Generator().manual_seed(7)) > 0.5
    y = torch.arange(n) % CLASSES
    return 0.7 * templates[y].float() + 0.3 * torch.rand(n, *shape, generator=gen), y


@functools.cache
def _trained(name: str, shape: tuple[int, int, int]) -> nn.Module:
    """A model after a few Adam steps, so its predictions differ between inputs."""
    torch.manual_seed(0)
    model = _build(name, shape)
    x, y = _task(shape, 20, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    # Eight steps leave BN running stats near their initial values; re-estimate them
    # (dropout off) so the eval-mode model is the one that was trained.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the passes below
            if isinstance(module, nn.Dropout):
                module.eval()
        model(x)
    return model.eval()


def _fresh(name: str, shape: tuple[int, int, int]) -> nn.Module:
    return copy.deepcopy(_trained(name, shape))


def _centered_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| relative to the spread of the reference logits around their mean."""
    spread = (ref - ref.mean(dim=1, keepdim=True)).abs().max()
    return ((out.float() - ref).abs().max() / spread).item()


@contextlib.contextmanager
def _quantization(engine: str = "x86") -> Iterator[None]:
    """Select a quantized engine and hide torch.ao's deprecation noise, then restore."""
    previous = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = engine
        try:
            yield
        finally:
            torch.backends.quantized.engine = previous


# --- building --------------------------------------------------------------------------------


def test_model_names_lists_the_zoo() -> None:
    assert model_names() == [*NAMES, "lstm", "gru"]  # text models: tests/models/test_recurrent.py
    assert model_names("image") == NAMES


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_finite_logits(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = _build(name, shape)
    logits = model(torch.rand(3, *shape))
    assert logits.shape == (3, CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_non_square_and_other_class_counts(name: str) -> None:
    model = build_model(name, in_channels=3, image_size=(8, 28), num_classes=4)
    assert model.eval()(torch.rand(2, 3, 8, 28)).shape == (2, 4)


def test_build_is_deterministic_under_a_seed() -> None:
    torch.manual_seed(3)
    a = _build("lenet5", (1, 8, 8)).state_dict()
    torch.manual_seed(3)
    b = _build("lenet5", (1, 8, 8)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_classic_layouts_match_the_papers() -> None:
    # LeNet-1 on 28x28: 4@24x24 -> 4@12x12 -> 12@8x8 -> 12@4x4 -> 192 inputs to the classifier.
    assert _build("lenet1", (1, 28, 28)).classifier.fc1.in_features == 12 * 4 * 4
    # LeNet-5 sees 16@5x5 whether MNIST is 28x28 (padded, as in the paper) or 32x32.
    for size in (28, 32):
        lenet5 = _build("lenet5", (1, size, size))
        assert lenet5.classifier.fc1.in_features == 16 * 5 * 5
        assert [m.out_features for m in lenet5.classifier if isinstance(m, nn.Linear)] == [
            120,
            84,
            10,
        ]
        assert _n_params(lenet5) == 61706
    # 8x8 digits never collapse: two stages of same-padded conv + pool leave 2x2 maps.
    assert _build("lenet1", (1, 8, 8)).classifier.fc1.in_features == 12 * 2 * 2
    assert _build("lenet5", (1, 8, 8)).classifier.fc1.in_features == 16 * 2 * 2
    # ResNet-20: 19 convs + 1 linear = 20 weighted layers (plus 2 projection shortcuts),
    # about 0.27M parameters as in He et al. table 6.
    resnet = _build("resnet20", (3, 32, 32))
    convs = [n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)]
    assert len([n for n in convs if "shortcut" not in n]) == 19
    assert 0.26e6 < _n_params(resnet) < 0.28e6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "vgg"},
            r"unknown model 'vgg'; valid choices: mlp, lenet1, lenet5, nin, resnet20",
        ),
        ({"image_size": 2}, r"image_size must be \(height, width\) with each at least 4"),
        ({"image_size": (8, 8, 8)}, r"image_size must be \(height, width\)"),
        ({"image_size": "8"}, r"image_size must be an int or \(height, width\)"),
        ({"image_size": True}, r"image_size must be an int or \(height, width\)"),
        ({"in_channels": 0}, r"in_channels must be an integer >= 1, got 0"),
        ({"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
        ({"num_classes": 2.0}, r"num_classes must be an integer >= 2, got 2.0"),
    ],
)
def test_build_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"name": "lenet5", "in_channels": 1, "image_size": 8, "num_classes": 10} | kwargs
    name = args.pop("name")
    with pytest.raises(MitigateError, match=message):
        build_model(name, **args)


# --- quantization ----------------------------------------------------------------------------


def _is_quantized_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=[SHAPE_IDS[0], SHAPE_IDS[2]])
@pytest.mark.parametrize("name", NAMES)
def test_fx_post_training_quantization_agrees(
    name: str, shape: tuple[int, int, int], engine: str
) -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = _fresh(name, shape)
    calib, _ = _task(shape, 20, seed=1)
    test, _ = _task(shape, 32, seed=2)
    with _quantization(engine), torch.no_grad():
        reference = model(test)
        prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (calib[:1],))
        prepared(calib)
        quantized = convert_fx(prepared)
        out = quantized(test)
    assert any(_is_quantized_module(m) for m in quantized.modules())
    assert out.shape == (32, CLASSES) and torch.isfinite(out).all()
    assert _centered_error(out, reference) < 0.15
    assert reference.argmax(1).unique().numel() >= 4  # the agreement below means something
    agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agree >= 0.85


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", NAMES)
def test_fx_quantization_aware_training_runs(name: str, engine: str) -> None:
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    shape = SHAPES[0]
    x, y = _task(shape, 8, seed=3)
    with _quantization(engine):
        prepared = prepare_qat_fx(
            _fresh(name, shape).train(), get_default_qat_qconfig_mapping(engine), (x[:1],)
        )
        F.cross_entropy(prepared(x), y).backward()
        grads = [p.grad for p in prepared.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        quantized = convert_fx(prepared.eval())
        with torch.no_grad():
            out = quantized(x)
    assert out.shape == (8, CLASSES) and torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=[SHAPE_IDS[0], SHAPE_IDS[2]])
@pytest.mark.parametrize("name", NAMES)
def test_dynamic_and_half_precision_run(name: str, shape: tuple[int, int, int]) -> None:
    model = _fresh(name, shape)
    x, _ = _task(shape, 4, seed=2)
    with torch.no_grad():
        reference = model(x)
        with _quantization():
            dynamic = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8
            )
            out = dynamic(x)
        assert _centered_error(out, reference) < 0.1
        for dtype, tolerance in ((torch.float16, 0.02), (torch.bfloat16, 0.3)):
            half = copy.deepcopy(model).to(dtype)(x.to(dtype))
            assert half.dtype == dtype and torch.isfinite(half).all()
            assert _centered_error(half, reference) < tolerance


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    shape = SHAPES[0]
    model = _fresh(name, shape)
    path = tmp_path / "sub" / "model.pt"
    extra = {
        "seed": np.int64(3),
        "accuracy": 0.5,
        "tags": ("a", "b"),
        "config": {"lr": np.float32(0.25), "x": None},
    }
    save_checkpoint(path, model, extra)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    state_before = torch.random.get_rng_state()
    loaded, meta = load_checkpoint(path, expected_arch=name)
    assert torch.equal(torch.random.get_rng_state(), state_before)
    assert meta == {
        "seed": 3,
        "accuracy": 0.5,
        "tags": ["a", "b"],
        "config": {"lr": 0.25, "x": None},
        "arch": name,
        "input_shape": list(shape),
        "num_classes": CLASSES,
    }
    assert type(meta["seed"]) is int
    assert not loaded.training
    x = torch.rand(4, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_checkpoint_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, _build("mlp", (1, 8, 8)), {"run": 1})
    save_checkpoint(path, _build("lenet1", (1, 8, 8)), {"run": 2})
    model, meta = load_checkpoint(path)
    assert meta["run"] == 2 and meta["arch"] == "lenet1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_plain_module_needs_full_meta(tmp_path: Path) -> None:
    zoo = _build("mlp", (1, 8, 8))
    plain = nn.Module()
    plain.layers = zoo.layers  # same state-dict keys as the zoo MLP
    with pytest.raises(MitigateError, match=r"meta lacks arch, input_shape, num_classes"):
        save_checkpoint(tmp_path / "m.pt", plain, {})
    meta = {"arch": "mlp", "input_shape": (1, 8, 8), "num_classes": CLASSES}
    save_checkpoint(tmp_path / "m.pt", plain, meta)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), zoo(x))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"arch": "lenet5"}, r"meta says arch='lenet5' but the model has 'mlp'"),
        ({"num_classes": 3}, r"meta says num_classes=3 but the model has 10"),
        ({"when": object()}, r"meta\['when'\] is a object; checkpoint meta holds only"),
        ({"x": [1, {2: 3}]}, r"meta\['x'\]\[1\] keys must be strings"),
        ({"t": torch.ones(1)}, r"meta\['t'\] is a Tensor"),
    ],
)
def test_save_rejects_bad_meta(meta: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match=message):
        save_checkpoint(tmp_path / "m.pt", _build("mlp", (1, 8, 8)), meta)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_a_quantized_model(tmp_path: Path) -> None:
    model = _build("mlp", (1, 8, 8))
    with _quantization():
        dynamic = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        with pytest.raises(MitigateError, match=r"checkpoints hold full-precision models"):
            save_checkpoint(tmp_path / "m.pt", dynamic, {})
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_folder_path_fails(tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match=r"is a folder"):
        save_checkpoint(tmp_path, _build("mlp", (1, 8, 8)), {})


def _payload(name: str = "lenet1") -> dict:
    model = _build(name, (1, 8, 8))
    return {
        "format": "mitigate-checkpoint",
        "version": 1,
        "meta": {"arch": name, "input_shape": [1, 8, 8], "num_classes": CLASSES},
        "state_dict": model.state_dict(),
    }


def test_load_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MitigateError, match=r"^checkpoint file not found: .*nope\.pt$"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(MitigateError, match=r"checkpoint path is not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is not a mitigate checkpoint or is corrupt \(EOFError"),
        (b"hello, world", r"is not a mitigate checkpoint or is corrupt"),
        ("truncated", r"is not a mitigate checkpoint or is corrupt \(RuntimeError"),
        ([1, 2], r"is not a mitigate checkpoint \(no 'mitigate-checkpoint' tag\)"),
        ({"state_dict": {}}, r"is not a mitigate checkpoint \(no 'mitigate-checkpoint' tag\)"),
        ({"format": "mitigate-checkpoint", "version": 2}, r"is checkpoint version 2; this"),
        ({"format": "mitigate-checkpoint", "version": 1, "meta": {}}, r"corrupt .*meta needs"),
    ],
)
def test_load_refuses_files_that_are_not_checkpoints(
    content: object, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save(_payload(), path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        torch.save(content, path)
    with pytest.raises(MitigateError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


class _Trap:
    """Unpickling this creates a marker file: stands in for a stranger's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_load_refuses_a_malicious_pickle_without_running_it(writer: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _payload() | {"meta": {"arch": "lenet1", "trap": _Trap(marker)}}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(MitigateError, match=r"evil\.pt is not a safe mitigate checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    if writer == "torch.save":  # the trap is real: an unsafe load would have sprung it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, weights_only=False)
        assert marker.exists()


def test_load_refuses_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, _build("lenet1", (1, 8, 8)), {})
    with pytest.raises(MitigateError, match=r"holds a lenet1, the config asks for lenet5$"):
        load_checkpoint(path, expected_arch="lenet5")
    with pytest.raises(MitigateError, match=r"unknown model 'lenet7'; valid choices: mlp"):
        load_checkpoint(path, expected_arch="lenet7")


def test_load_names_the_first_mismatched_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    payload = _payload("lenet5")
    state = payload["state_dict"]
    del state["conv1.weight"], state["conv1.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(
        MitigateError,
        match=r"do not fit a lenet5 for input \[1, 8, 8\] and 10 classes; "
        r"missing: conv1\.weight, conv1\.bias; unexpected: extra\.weight$",
    ):
        load_checkpoint(path)

    payload = _payload("lenet5")
    payload["meta"]["input_shape"] = [1, 28, 28]  # classifier.fc1 expects 400 inputs, not 64
    torch.save(payload, path)
    with pytest.raises(MitigateError, match=r"wrong shape: classifier\.fc1\.weight \[120, 64\]"):
        load_checkpoint(path)


def test_load_reports_unusable_meta(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    for meta, message in [
        ({"arch": "vgg", "input_shape": [1, 8, 8], "num_classes": 10}, r"unknown model 'vgg'"),
        ({"arch": "mlp", "input_shape": [1, 8], "num_classes": 10}, r"input_shape must be"),
        ({"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 1}, r"unusable meta: num_cl"),
    ]:
        torch.save(_payload("mlp") | {"meta": meta}, path)
        with pytest.raises(MitigateError, match=message):
            load_checkpoint(path)


# --- layer table -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_layer_table_accounts_for_every_parameter(name: str) -> None:
    model = _build(name, (3, 32, 32))
    table = layer_table(model, (3, 32, 32))
    listed = sum(row["params"] for row in table)
    others = sum(
        p.numel()
        for m in model.modules()
        if not isinstance(m, (nn.Conv2d, nn.Linear))
        for p in m.parameters(recurse=False)
    )
    assert listed + others == _n_params(model)
    if name in ("mlp", "lenet1", "lenet5"):  # no batch norm: the table holds everything
        assert listed == _n_params(model)
        assert sum(row["param_share"] for row in table) == pytest.approx(1.0)
    assert sum(row["mac_share"] for row in table) == pytest.approx(1.0)
    assert all(row["macs"] > 0 for row in table)
    assert model.training  # mode restored


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.point = nn.Conv2d(8, 2, 1)
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point(self.grouped(x))


def test_layer_table_counts_known_layers() -> None:
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert layer_table(linear, (1, 8, 8)) == [
        {
            "name": "1",
            "type": "Linear",
            "params": 650,
            "param_share": 1.0,
            "macs": 64 * 10,
            "mac_share": 1.0,
        }
    ]
    # conv: output elements x (in_channels / groups) x kernel area; an unused layer costs 0.
    rows = {row["name"]: row for row in layer_table(_ConvNet(), (4, 10, 10))}
    assert rows["grouped"]["macs"] == 8 * 10 * 10 * (4 // 2) * 9
    assert rows["point"]["macs"] == 2 * 10 * 10 * 8
    assert rows["unused"]["macs"] == 0 and rows["unused"]["params"] == 12
    # ResNet-20 on CIFAR: about 41M multiply-accumulates, as usually quoted.
    macs = sum(r["macs"] for r in layer_table(_build("resnet20", (3, 32, 32)), (3, 32, 32)))
    assert 40e6 < macs < 42e6


def test_layer_table_rejects_a_bad_shape() -> None:
    with pytest.raises(MitigateError, match=r"input_shape must be the positive sizes"):
        layer_table(_build("mlp", (1, 8, 8)), (1, 0, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_load_refuses_non_finite_weights_naming_the_file_and_tensor(
    bad: float, tmp_path: Path
) -> None:
    payload = _payload()
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key].view(-1)[0] = bad
    path = tmp_path / "broken.pt"
    torch.save(payload, path)
    with pytest.raises(MitigateError, match=rf"broken\.pt holds NaN or infinite weights in {key}"):
        load_checkpoint(path)


def test_random_bytes_are_not_said_to_hold_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(MitigateError) as info:
        load_checkpoint(path)
    assert "Python objects" not in str(info.value) and "noise.pt" in str(info.value)
