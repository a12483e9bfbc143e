from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mitigate.atomic import read_json
from mitigate.cli.app import app

runner = CliRunner()


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    assert pattern in text, text


def test_sensitivity_prints_the_ranked_table_and_writes_the_report(tiny_config, tmp_path):
    out = tmp_path / "s"
    args = ["sensitivity", "-c", str(tiny_config), "-o", str(out), "--probe-size", "60"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Layer sensitivity: int8, 60 pool inputs picked by margin" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    report = read_json(out / "report.json")
    assert report["command"] == "sensitivity" and report["scheme"] == "int8"
    assert report["model"]["arch"] == "lenet1"
    probe = report["probe"]
    assert probe["size"] == 60 and probe["selector"] == "margin"
    assert probe["pool_size"] == 200  # 100 pool images x (clean + gaussian-noise/3)
    assert set(probe["groups"]) <= {"clean", "gaussian-noise/3"}  # rotate is held out
    assert sum(probe["groups"].values()) == 60
    layers = report["layers"]
    assert sorted(r["name"] for r in layers) == ["classifier.fc1", "conv1", "conv2"]
    assert [r["rank"] for r in layers] == [1, 2, 3]
    removed = [r["removed_by_float"] for r in layers]
    assert removed == sorted(removed, reverse=True)
    all_int8 = report["disagreements"]["all_int8"]
    assert all(r["disagreements_without"] + r["removed_by_float"] == all_int8 for r in layers)
    for row in layers:
        assert row["name"] in result.output


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--scheme", "int3"], "unknown quantization scheme 'int3'; valid choices: int8"),
        (["--scheme", "fp16"], "sensitivity needs a static int8 scheme"),
        (
            ["--scheme", "int8:float_layers=nope"],
            "'nope' is not a Conv/Linear layer; layers: conv1",
        ),
        (["--selector", "nope"], "unknown selector 'nope'; valid choices: margin"),
        (["--probe-size", "0"], "probe size must be an int >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_config, tmp_path, args, pattern):
    result = runner.invoke(app, ["sensitivity", "-c", str(tiny_config), "-o", str(tmp_path), *args])
    _one_line_error(result, pattern)
    assert not (tmp_path / "report.json").exists()


def test_the_command_module_does_not_import_torch():
    code = "import sys, mitigate.cli.sensitivity; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
