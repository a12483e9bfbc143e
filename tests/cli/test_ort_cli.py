"""Every command runs with an ort-* scheme on the tiny config, a user's .onnx file is measured
with --quantized, and without the extra an ort-* scheme exits 2 with the install command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from mitigate.atomic import read_json
from mitigate.cli.app import app

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def evaluated(tiny_config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ort") / "evaluate"
    _run(
        "evaluate",
        "-c",
        str(tiny_config_file),
        "--schemes",
        "int8,ort-int8,ort-fp32",
        "-o",
        str(out),
    )
    return out


def test_evaluate_measures_ort_beside_torch_ao(evaluated):
    report = read_json(evaluated / "report.json")
    assert report["schemes"] == ["int8", "ort-int8", "ort-fp32"]
    # the export computes what torch computes: no disagreement, and the report says so
    assert report["totals"]["all"]["disagreements"]["ort-fp32"] == 0
    sessions = report["onnxruntime"]
    assert set(sessions) == {"ort-int8", "ort-fp32"}
    assert sessions["ort-fp32"]["export"]["agrees_with_torch"] is True
    assert sessions["ort-int8"]["optimization"] == "all"
    assert report["deployment"]["models"]["ort-int8"]["size_bytes"] > 0
    assert "ONNX Runtime sessions" in (evaluated / "report.md").read_text()


def test_score_and_sensitivity_run_with_ort_int8(tiny_config_file, tmp_path):
    _run("score", "-c", str(tiny_config_file), "--schemes", "ort-int8", "-o", str(tmp_path / "s"))
    assert read_json(tmp_path / "s" / "report.json")["schemes"] == ["ort-int8"]
    _run(
        "sensitivity",
        "-c",
        str(tiny_config_file),
        "--scheme",
        "ort-int8",
        "-o",
        str(tmp_path / "l"),
    )
    report = read_json(tmp_path / "l" / "report.json")
    assert report["scheme"] == "ort-int8"
    assert {row["name"] for row in report["layers"]} == {"conv1", "conv2", "classifier.fc1"}


def test_retrain_settings_fallback_guard_in_ort_terms(tiny_config_file, tmp_path):
    out = tmp_path / "r"
    _run(
        "retrain",
        "-c",
        str(tiny_config_file),
        "--scheme",
        "ort-int8",
        "--strategy",
        "settings+fallback+guard",
        "-o",
        str(out),
    )
    report = read_json(out / "report.json")
    assert report["scheme_before"] == "ort-int8"
    assert report["scheme_after"].startswith("ort-int8")  # an ORT setting, not a torch.ao one
    table = report["notes"]["settings"]["table"]
    assert {"calibration", "activations"} <= set(table[0])
    assert len(table) > 1


def test_retrain_that_trains_re_exports_the_new_model(tiny_config_file, tmp_path):
    out = tmp_path / "f"
    _run(
        "retrain",
        "-c",
        str(tiny_config_file),
        "--scheme",
        "ort-int8",
        "--strategy",
        "finetune",
        "-o",
        str(out),
    )
    assert read_json(out / "report.json")["scheme_after"] == "ort-int8"


def test_user_onnx_file_is_measured_with_quantized(evaluated, tiny_config_file, tmp_path):
    from mitigate.models import load_checkpoint
    from mitigate.quantization import quantize

    report = read_json(evaluated / "report.json")
    model, _ = load_checkpoint(report["model"]["path"])
    shipped = tmp_path / "shipped.onnx"
    torch.manual_seed(0)
    q = quantize(model.eval(), "ort-int8:calibration=percentile", torch.rand(32, 1, 8, 8))
    shipped.write_bytes(q.inner.model_bytes)
    out = tmp_path / "q"
    _run("evaluate", "-c", str(tiny_config_file), "--quantized", str(shipped), "-o", str(out))
    measured = read_json(out / "report.json")
    label = f"onnx:path={shipped}"
    assert measured["schemes"] == [label]
    assert measured["onnxruntime"][label]["source"] == str(shipped)
    assert measured["totals"]["all"]["n"] == report["totals"]["all"]["n"]

    missing = runner.invoke(
        app, ["evaluate", "-c", str(tiny_config_file), "--quantized", str(tmp_path / "no.onnx")]
    )
    assert missing.exit_code == 2 and "no ONNX file" in missing.output


def test_without_the_extra_ort_scheme_exits_2_with_the_install_command(tiny_config_file):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from mitigate.cli.app import main\n"
        f"sys.argv = ['mitigate', 'evaluate', '-c', {str(tiny_config_file)!r}, "
        "'--schemes', 'ort-int8']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr + done.stdout
    text = (done.stdout + done.stderr).strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1
    assert "pip install 'mitigate[onnx]'" in text


def test_compare_runs_ort_int8_strategies(tiny_config_file, tmp_path):
    out = tmp_path / "c"
    _run(
        "compare",
        "-c",
        str(tiny_config_file),
        "--scheme",
        "ort-int8",
        "--strategies",
        "none,fallback",
        "--seeds",
        "1",
        "-o",
        str(out),
    )
    report = read_json(out / "report.json")
    assert report["scheme"] == "ort-int8"
    assert {row["strategy"] for row in report["rows"]} == {"none", "fallback"}


def test_calibrate_says_where_ort_settings_are_searched(tiny_config_file):
    result = runner.invoke(app, ["calibrate", "-c", str(tiny_config_file), "--scheme", "ort-int8"])
    assert result.exit_code == 2
    assert "retrain --scheme ort-int8 --strategy settings" in result.output
