"""Text end to end: configs/text-lstm.toml on a small slice of the embedded tweets through the
pipeline stages and the CLI (retrain, evaluate, compare, train, sensitivity)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mitigate.cli.app import app
from mitigate.config import load_config, override
from mitigate.data.evalset import iter_batches, split_seed
from mitigate.errors import MitigateError
from mitigate.runs.base_model import base_model, model_meta, train_model
from mitigate.runs.calibration import calibration_inputs
from mitigate.runs.data import load_data, measurement_groups

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SMALL = {
    "data": {"train": 600, "val": 100, "calibration": 60, "pool": 150, "test": 150,
             "natural_size": 80, "max_len": 20},
    "train": {"epochs": 1},
    "shifts": {"families": ["char-typo", "word-dropout"], "severities": [3],
               "held_out": ["word-dropout"]},
    "quantization": {"schemes": ["int8-dynamic", "int4-weight"], "calibration_size": 40},
    "selection": {"budget": 20},
    "retrain": {"epochs": 1},
    "compare": {"selectors": ["margin"], "strategies": ["none", "distill"], "budgets": [20],
                "seeds": 1},
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small LSTMs: on a busy 2-core machine a 2nd thread only waits
    yield
    torch.set_num_threads(threads)


def _toml(table: dict, prefix: str = "") -> str:
    """Enough of a TOML writer for configs: scalars, lists and nested tables."""
    lines, tables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append(f"\n[{prefix}{key}]\n" + _toml(value, f"{prefix}{key}."))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "".join(tables) + "\n"


def _small_config(tmp_path: Path, name: str) -> Path:
    """A shipped text config with small sizes: the same config, only smaller."""
    raw = tomllib.loads((ROOT / "configs" / f"{name}.toml").read_text())
    for section, values in SMALL.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.toml"
    path.write_text(_toml(raw))
    return path


@pytest.fixture
def text_config(tmp_path: Path) -> Path:
    return _small_config(tmp_path, "text-lstm")


def test_text_data_flows_through_the_stages(text_config: Path) -> None:
    config = load_config(text_config)
    data = load_data(config)
    assert data.modality == "text" and data.input_shape == (20,)
    assert data.families == ["char-typo", "word-dropout"] and data.held_out == ("word-dropout",)
    vocabulary = data.splits.train.vocabulary
    assert all(s.vocabulary is vocabulary for s in data.splits.as_dict().values())
    natural = data.naturals["tweets-airline"]
    assert len(natural) == 80 and natural.vocabulary is vocabulary
    x = calibration_inputs(config, data)
    assert x.shape == (40, 20) and x.dtype == torch.int64
    shifted = calibration_inputs(override(config, quantization__calibration_source="shifted"), data)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    groups = measurement_groups(config, data)
    assert [g.name for g in groups] == [
        "clean", "char-typo/3", "word-dropout/3", "natural:tweets-airline",
    ]  # fmt: skip
    batch = list(
        iter_batches(data.splits.test, groups, batch_size=100, seed=0, naturals=data.naturals)
    )
    test = data.splits.test
    assert torch.equal(
        batch[2].x, test.batch(torch.arange(100), "char-typo", 3, split_seed(0, "test"))
    )
    assert sum(len(b.y) for b in batch) == 3 * 150 + 80
    with pytest.raises(
        MitigateError, match="model 'lenet5' reads image inputs but dataset 'tweets'"
    ):
        train_model(override(config, model__arch="lenet5"), data)
    with pytest.raises(
        MitigateError, match="'mixup' perturbs image pixels and cannot train on text"
    ):
        train_model(override(config, train__method="mixup"), data)
    with pytest.raises(
        MitigateError, match="unknown shift for text 'fog'; valid choices: char-typo"
    ):
        load_data(override(config, shifts__held_out="fog"))


def test_checkpoints_carry_the_vocabulary(text_config: Path, tmp_path: Path) -> None:
    from mitigate.models import save_checkpoint

    config = load_config(text_config)
    data = load_data(config)
    model, info = base_model(config, data)
    meta = model_meta(config, data)
    assert meta["vocabulary"] == list(data.splits.train.vocabulary.tokens)
    assert meta["max_len"] == 20 and meta["vocab_size"] == len(meta["vocabulary"])
    save_checkpoint(tmp_path / "lstm.pt", model, meta)
    again, source = base_model(config, data, checkpoint=tmp_path / "lstm.pt")
    assert source["source"] == "checkpoint"
    other = override(config, data__train=500)  # another training split: another vocabulary
    with pytest.raises(MitigateError, match="trained with another vocabulary"):
        base_model(other, load_data(other), checkpoint=tmp_path / "lstm.pt")


@pytest.mark.parametrize(("name", "arch"), [("text-lstm", "lstm"), ("text-gru", "gru")])
def test_retrain_cli_runs_end_to_end_on_text(name: str, arch: str, tmp_path: Path) -> None:
    config, out = _small_config(tmp_path, name), tmp_path / "retrain"
    args = ["retrain", "-c", str(config), "--strategy", "finetune", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["arch"] == arch and report["scheme_before"] == "int8-dynamic"
    assert report["selection"]["n"] == 20 and report["used_labels"] is True
    total = report["totals"]["all"]
    assert total["before"] - total["removed"] + total["introduced"] == total["after"]
    assert {g["name"] for g in report["groups"]} >= {"clean", "natural:tweets-airline"}


def test_other_commands_on_text(text_config: Path, tmp_path: Path) -> None:
    evaluated = runner.invoke(app, ["evaluate", "-c", str(text_config), "-o", str(tmp_path / "e")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["totals"]["all"]["n"] == 3 * 150 + 80
    assert set(report["totals"]["all"]["disagreements"]) == {"int8-dynamic", "int4-weight", "any"}
    compared = runner.invoke(app, ["compare", "-c", str(text_config), "-o", str(tmp_path / "c")])
    assert compared.exit_code == 0, compared.output
    cells = json.loads((tmp_path / "c" / "report.json").read_text())
    assert "distill" in json.dumps(cells)
    trained = runner.invoke(
        app, ["train", "-c", str(text_config), "--method", "qat", "-o", str(tmp_path / "t")]
    )
    assert trained.exit_code == 0, trained.output
    assert "int8-dynamic model converted from QAT" in trained.output
    scored = runner.invoke(app, ["score", "-c", str(text_config), "-o", str(tmp_path / "s")])
    assert scored.exit_code == 0, scored.output
    rows = json.loads((tmp_path / "s" / "report.json").read_text())
    assert "margin" in json.dumps(rows) and "int8-dynamic" in json.dumps(rows)
    refused = runner.invoke(app, ["sensitivity", "-c", str(text_config)])
    assert refused.exit_code == 2
    assert "static int8, which does not apply to 'lstm'" in refused.output
    uncalibrated = runner.invoke(app, ["calibrate", "-c", str(text_config)])
    assert uncalibrated.exit_code == 2
    assert "static int8 calibration, which does not apply to 'lstm'" in uncalibrated.output
    static = runner.invoke(app, ["evaluate", "-c", str(text_config), "--schemes", "int8"])
    assert static.exit_code == 2 and "static int8 cannot quantize recurrent layers" in static.output


def test_natural_shifts_from_a_csv(text_config: Path, tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.csv"
    rows = [("the flight was late again", "negative"), ("thanks for a great crew", "positive")]
    reviews.write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in rows * 3))
    config = override(load_config(text_config), data__natural=f"text-csv:{reviews}")
    with pytest.raises(MitigateError, match="has classes negative, positive; the model predicts"):
        load_data(config)
    reviews.write_text(reviews.read_text() + "no opinion,neutral\n")
    natural = load_data(config).naturals[f"text-csv:{reviews}"]
    assert len(natural) == 7 and natural.batch(slice(None)).shape == (7, 20)
    # Classes are matched by name, whatever order the file's labels sort in.
    reviews.write_text("text,label\nbad,0\nok,1\ngood,2\n")
    named = override(config, data__natural=f"text-csv:{reviews}")
    with pytest.raises(MitigateError, match="has classes 0, 1, 2"):
        load_data(named)
    reviews.write_text("text,label\nbad,negative\ngood,positive\nmeh,neutral\n")
    natural = load_data(config).naturals[f"text-csv:{reviews}"]
    assert natural.labels.tolist() == [0, 2, 1] and natural.classes[1] == "neutral"
