from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mitigate.atomic import read_json
from mitigate.cli.app import app
from mitigate.counting import summarize
from mitigate.scanning import Predictions

runner = CliRunner()


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    assert pattern in text, text


def test_evaluate_writes_a_report_that_recounts_from_the_predictions(tiny_config, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--config", str(tiny_config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Disagreement rate per shift" in result.output
    report = read_json(out / "report.json")
    pred = Predictions.load(out / "predictions.npz")
    recount = summarize(pred)
    for key in (
        "groups",
        "by_shift",
        "by_severity",
        "by_class",
        "totals",
        "worst_group",
        "schemes",
    ):
        assert report[key] == recount[key]
    assert [g["name"] for g in report["groups"]] == ["clean", "gaussian-noise/3", "rotate/3"]
    assert report["groups"][2]["held_out"] is True
    assert report["totals"]["all"]["n"] == 300 == len(pred)
    assert report["model"]["source"] in ("trained", "cache")  # another test may train it first
    assert set(report["schemes"]) == {"int8", "int4-weight"}
    assert np.array_equal(np.sort(np.unique(pred.index)), np.arange(100))

    again = runner.invoke(app, ["evaluate", "--config", str(tiny_config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    second = read_json(out / "report.json")
    assert second["model"]["source"] == "cache"
    assert second["groups"] == report["groups"]  # same seed, same numbers


def test_cli_options_override_the_config(tiny_config, tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "-c",
            str(tiny_config),
            "-o",
            str(out),
            "--schemes",
            "fp16,int8:engine=qnnpack",
            "--shifts",
            "jpeg",
            "--severities",
            "1,5",
        ],
    )
    assert result.exit_code == 0, result.output
    report = read_json(out / "report.json")
    assert report["schemes"] == ["fp16", "int8:engine=qnnpack"]
    assert [g["name"] for g in report["groups"]] == ["clean", "jpeg/1", "jpeg/5"]


def test_train_then_evaluate_that_checkpoint(tiny_config, tmp_path):
    result = runner.invoke(app, ["train", "-c", str(tiny_config), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    (ckpt,) = (tmp_path / "m").glob("*.pt")
    result = runner.invoke(
        app, ["evaluate", "-c", str(tiny_config), "-m", str(ckpt), "-o", str(tmp_path / "e")]
    )
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "e" / "report.json")["model"]["source"] == "checkpoint"


def test_natural_shift_from_an_npz_file(tiny_config, tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(
        tmp_path / "other.npz", x=(d.images[-60:] * 255 / 16).astype(np.uint8), y=d.target[-60:]
    )
    config = tmp_path / "natural.toml"
    config.write_text(
        tiny_config.read_text().replace(
            "[data]", f'[data]\nnatural = ["npz:{tmp_path / "other.npz"}"]'
        )
    )
    result = runner.invoke(app, ["evaluate", "-c", str(config), "-o", str(tmp_path / "n")])
    assert result.exit_code == 0, result.output
    report = read_json(tmp_path / "n" / "report.json")
    natural = report["groups"][-1]
    assert natural["name"].startswith("natural:") and natural["n"] == 60
    assert report["totals"]["natural"]["n"] == 60


@pytest.mark.parametrize(
    ("args", "config_text", "message"),
    [
        (["--schemes", "int3"], None, "unknown quantization scheme 'int3'; valid choices: int8"),
        (
            ["--shifts", "sunburn"],
            None,
            "'sunburn'; valid choices: gaussian-noise",
        ),
        (["--severities", "7"], None, "severity 7 is out of range"),
        ([], '[model]\narch = "vgg"\n', "unknown model 'vgg'; valid choices: mlp, lenet1"),
        ([], "[data]\ndatset = 1\n", "unknown config key 'data.datset'"),
        (
            [],
            '[data]\ndataset = "mnist"\ndata_dir = "/nonexistent/mnist"\n',
            "/nonexistent/mnist does not exist",
        ),
        ([], '[data]\ndataset = "imagenet"\n', "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(tiny_config, tmp_path, args, config_text, message):
    config = tiny_config
    if config_text is not None:
        config = tmp_path / "bad.toml"
        config.write_text(config_text)
    result = runner.invoke(app, ["evaluate", "-c", str(config), "-o", str(tmp_path / "x"), *args])
    _one_line_error(result, message)
    assert not (tmp_path / "x" / "report.json").exists()


def test_bad_checkpoints_get_one_line_and_exit_code_2(tiny_config, tmp_path):
    runner.invoke(app, ["train", "-c", str(tiny_config), "-o", str(tmp_path / "m")])
    (ckpt,) = (tmp_path / "m").glob("*.pt")
    other = tmp_path / "other.toml"
    other.write_text(tiny_config.read_text().replace('arch = "lenet1"', 'arch = "lenet5"'))
    result = runner.invoke(app, ["evaluate", "-c", str(other), "-m", str(ckpt)])
    _one_line_error(result, "holds a lenet1")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    _one_line_error(
        runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-m", str(corrupt)]), "corrupt.pt"
    )
    missing = tmp_path / "missing.pt"
    _one_line_error(
        runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-m", str(missing)]), "missing.pt"
    )


def test_a_failed_run_keeps_the_previous_report(tiny_config, tmp_path):
    out = tmp_path / "keep"
    assert runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-o", str(out)]).exit_code == 0
    before = (out / "report.json").read_bytes()
    result = runner.invoke(
        app, ["evaluate", "-c", str(tiny_config), "-o", str(out), "--schemes", "int3"]
    )
    assert result.exit_code == 2
    assert (out / "report.json").read_bytes() == before


def test_help_and_version_do_not_import_torch():
    code = "import sys, mitigate.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mitigate ")
