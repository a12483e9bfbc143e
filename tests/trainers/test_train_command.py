"""``mitigate train --method ...``: every method from the registry, clean output, checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mitigate.cli.app import app
from mitigate.cli.train import METHOD_CHOICES
from mitigate.models import load_checkpoint
from mitigate.runs.base_model import cache_dir
from mitigate.trainers import method_names

runner = CliRunner()

TINY = """
seed = 0
[data]
train = 200
val = 50
calibration = 50
pool = 50
test = 100
[model]
arch = "lenet1"
[train]
epochs = 2
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _run(*args: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == []
    return result


def test_help_lists_the_registry():
    assert tuple(method_names()) == METHOD_CHOICES
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert all(name in result.output for name in METHOD_CHOICES)


def test_unknown_method_is_one_line_listing_the_choices(tiny):
    result = runner.invoke(app, ["train", "-c", str(tiny), "--method", "sgd"])
    assert result.exit_code == 2
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and text.startswith("error:")
    assert "unknown training method 'sgd'; valid choices: standard, mixup, adversarial" in text


def test_qat_prints_float_and_int8_accuracy_and_saves_the_float_model(tiny, tmp_path):
    result = _run("-c", str(tiny), "--method", "qat", "-o", str(tmp_path))
    assert "lenet1 (qat, seed 0): clean test accuracy" in result.output
    assert "int8 model converted from QAT: clean test accuracy" in result.output
    model, meta = load_checkpoint(tmp_path / "lenet1-qat-seed0.pt", expected_arch="lenet1")
    assert meta["train_method"] == "qat" and meta["qat_trained"] is True
    assert meta["qat_scheme"] == "int8" and 0 <= meta["qat_test_accuracy"] <= 1
    assert type(model).__name__ == "LeNet1"


def test_distill_matches_the_cached_standard_model(tiny, tmp_path):
    result = _run("-c", str(tiny), "--method", "distill", "-o", str(tmp_path))
    assert "lenet1 (distill, seed 0): clean test accuracy" in result.output
    assert "QAT" not in result.output
    assert list(cache_dir().glob("base-digits-lenet1-*.pt"))  # the teacher, trained and cached
    _, meta = load_checkpoint(tmp_path / "lenet1-distill-seed0.pt")
    assert meta["train_method"] == "distill" and "qat_trained" not in meta


def test_method_comes_from_the_config_file(tiny, tmp_path):
    tiny.write_text(TINY.replace("epochs = 2", "epochs = 1\nmethod = 'adversarial'\nadv_steps = 2"))
    result = _run("-c", str(tiny), "-o", str(tmp_path))
    assert "lenet1 (adversarial, seed 0)" in result.output
    assert (tmp_path / "lenet1-adversarial-seed0.pt").is_file()
