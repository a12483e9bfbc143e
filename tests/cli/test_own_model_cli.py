"""Every command runs on a model outside the zoo, named as ``--model pkg.module:factory``: the
example's ``SmallCNN``, trained once on the tiny config's digits and then reused from the cache."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mitigate.cli.app import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
MODEL = ["--model", "examples.own_model:build"]
# One small run of each command (calibrate: a two-setting grid).
COMMANDS = [
    "evaluate",
    "score",
    "sensitivity --scheme int8",
    "retrain --strategy settings+fallback --budget 20",
    "compare --strategies fallback --selectors margin --budgets 20 --seeds 1",
    "calibrate --sources clean --sizes 16 --samplings random --augmentations 0 --observers "
    "minmax --granularities per-channel --engines x86 --extra '' --seeds 1",
]


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("own-cache")


@pytest.fixture
def in_repo(monkeypatch, own_cache):
    """Run from the repository root (where ``examples`` imports from), with one cache for the
    module so the model is trained once."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MITIGATE_CACHE_DIR", str(own_cache))


def test_train_writes_the_factory_models_weights_that_weights_reads_back(
    in_repo, tiny_config, tmp_path
):
    result = runner.invoke(app, ["train", "-c", str(tiny_config), *MODEL, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    weights = next(tmp_path.glob("*.pt"))
    assert weights.name.startswith("examples.own_model_build-standard")
    out = tmp_path / "evaluated"
    args = ["evaluate", "-c", str(tiny_config), *MODEL, "--weights", str(weights), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == {
        "arch": "examples.own_model:build",
        "source": "weights",
        "path": str(weights),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.split()[0])
def test_every_command_runs_on_the_examples_model(in_repo, tiny_config, tmp_path, command):
    args = shlex.split(command)
    out = tmp_path / args[0]
    result = runner.invoke(app, [*args, "-c", str(tiny_config), *MODEL, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["model"]["factory"] == "examples.own_model:build"
    if "model" in report:  # a grid over seeds names no one model
        assert report["model"]["arch"] == "examples.own_model:build"


def test_a_model_the_cli_cannot_find_is_one_line(in_repo, tiny_config):
    for model, words in [
        ("examples.own_model:nothing", "module examples.own_model has no 'nothing'"),
        ("lenet6", "unknown model 'lenet6': give a checkpoint file, a zoo name"),
        ("nowhere/model.pt", "checkpoint file not found: nowhere/model.pt"),
    ]:
        result = runner.invoke(app, ["evaluate", "-c", str(tiny_config), "--model", model])
        assert result.exit_code == 2 and result.output.startswith("error:"), result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1
