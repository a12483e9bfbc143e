from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mitigate.calibration.settings import ENGINES, GRANULARITIES, OBSERVERS, SAMPLINGS, SOURCES
from mitigate.cli.app import app
from mitigate.config import CalibrationConfig
from mitigate.quantization import OBSERVERS as QUANT_OBSERVERS

runner = CliRunner()

SMALL = [
    "--sources",
    "clean,mixed",
    "--sizes",
    "16",
    "--samplings",
    "random",
    "--augmentations",
    "0",
    "--observers",
    "histogram,minmax",
    "--granularities",
    "per-channel",
    "--engines",
    "x86,qnnpack",
    "--extra",
    "",
    "--seeds",
    "1",
]


def test_calibrate_writes_a_sorted_table_and_best_that_evaluate_picks_up(tiny_config, tmp_path):
    out = tmp_path / "cal"
    result = runner.invoke(app, ["calibrate", "-c", str(tiny_config), *SMALL, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "best worst-group disagreement first" in result.output.replace("\n", " ")
    assert "recommended calibration:" in result.output
    report = json.loads((out / "report.json").read_text())
    best = json.loads((out / "best.json").read_text())
    assert best["preset"] == report["best"] == report["rows"][0]["setting"]
    assert report["seeds"] == [0] and report["cells"]["reused"] == 0
    # 5 one-factor rows (baseline, mixed, 16, minmax, qnnpack), plus maybe the combination
    assert len(report["rows"]) in (5, 6)
    markdown = (out / "report.md").read_text()
    assert "| varied | inputs | acc |" in markdown and report["best"] in markdown

    # a rerun resumes every cell
    again = runner.invoke(app, ["calibrate", "-c", str(tiny_config), *SMALL, "-o", str(out), "-q"])
    assert again.exit_code == 0, again.output
    assert (
        json.loads((out / "report.json").read_text())["cells"]["reused"] == report["cells"]["total"]
    )

    ev = tmp_path / "ev"
    result = runner.invoke(
        app, ["evaluate", "-c", str(tiny_config), "--calibration", "best", "-o", str(ev)]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((ev / "report.json").read_text())["config"]
    assert config["calibration"]["preset"] == best["preset"]
    assert best["scheme"] in config["quantization"]["schemes"]
    assert "int4-weight" in config["quantization"]["schemes"]


def test_a_named_preset_reaches_evaluate(tiny_config, tmp_path):
    result = runner.invoke(
        app,
        ["evaluate", "-c", str(tiny_config), "--calibration", "mixed-16-minmax-qnnpack"]
        + ["--schemes", "int8", "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schemes"] == ["int8:engine=qnnpack:observer=minmax"]
    assert report["config"]["calibration"]["preset"] == (
        "mixed-16-random-aug0-minmax-perchannel-qnnpack"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["calibrate", "--sources", "clean,soup"], "unknown calibration source 'soup'"),
        (["calibrate", "--engines", "arm"], "unknown calibration engine 'arm'"),
        (["calibrate", "--grid", "half"], "unknown calibration grid 'half'"),
        (["calibrate", "--sizes", "ten"], "must be int"),
        (["calibrate", "--families", "rotate"], "held out"),
        (["evaluate", "--calibration", "clean-soup"], "unknown token 'soup'"),
        (["retrain", "--calibration", "nope.json"], "calibration preset file not found"),
    ],
)
def test_bad_options_exit_2_with_one_line(tiny_config, tmp_path, args, message):
    result = runner.invoke(app, [*args, "-c", str(tiny_config), "-o", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_choices_match_the_registries():
    assert OBSERVERS == QUANT_OBSERVERS
    c = CalibrationConfig()
    assert set(c.sources) == set(SOURCES) and set(c.samplings) == set(SAMPLINGS)
    assert set(c.engines) == set(ENGINES) and set(c.granularities) == set(GRANULARITIES)
    assert set(c.observers) == set(OBSERVERS)


RANKED = "16-ranked-minmax-qnnpack"  # ranks the calibration candidates with the FP model


@pytest.fixture(scope="module")
def other_checkpoint(tiny_config_file, tmp_path_factory):
    """A model trained with another seed than the cached base model: a different ranker."""
    folder = tmp_path_factory.mktemp("model")
    result = runner.invoke(
        app, ["train", "-c", str(tiny_config_file), "--seed", "7", "-o", str(folder), "-q"]
    )
    assert result.exit_code == 0, result.output
    (path,) = folder.glob("*.pt")
    return path


def test_a_ranked_preset_ranks_with_the_checkpoint_given(tiny_config_file, other_checkpoint):
    """``--calibration <ranked preset> --model CKPT`` ranks with CKPT, not the base model."""
    import torch

    from mitigate.calibration import parse_setting
    from mitigate.config import load_config, override
    from mitigate.models import load_checkpoint
    from mitigate.runs.calibration import baseline_setting, calibration_set
    from mitigate.runs.session import Session

    config = override(load_config(tiny_config_file), calibration__preset=RANKED)
    session = Session.open(config, checkpoint=other_checkpoint)
    setting = parse_setting(RANKED, baseline_setting(config))
    mine, _ = load_checkpoint(other_checkpoint)
    base = Session.open(config).model
    by_checkpoint = calibration_set(config, session.data, setting, model=mine.eval())
    by_base = calibration_set(config, session.data, setting, model=base)
    assert torch.equal(session.calibration, by_checkpoint)
    assert not torch.equal(by_checkpoint, by_base)  # so the test can tell the two apart


def test_the_cli_and_a_python_caller_calibrate_alike(tiny_config_file, other_checkpoint, tmp_path):
    """The same preset from ``--calibration`` and from ``[calibration] preset`` in Python: the
    same schemes (observer and engine from the preset) and the same int8 labels."""
    import numpy as np

    import mitigate
    from mitigate.config import load_config, override
    from mitigate.scanning import Predictions

    args = ["evaluate", "-c", str(tiny_config_file), "--schemes", "int8"]
    args += ["--calibration", RANKED, "--model", str(other_checkpoint), "-o", str(tmp_path), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    cli = json.loads((tmp_path / "report.json").read_text())
    config = override(
        load_config(tiny_config_file), quantization__schemes=["int8"], calibration__preset=RANKED
    )
    library = mitigate.evaluate(config, checkpoint=other_checkpoint)
    assert library.report["schemes"] == cli["schemes"] == ["int8:engine=qnnpack:observer=minmax"]
    assert library.report["config"] == cli["config"]
    labels = Predictions.load(tmp_path / "predictions.npz").variants[cli["schemes"][0]]
    np.testing.assert_array_equal(library.predictions.variants[cli["schemes"][0]], labels)
