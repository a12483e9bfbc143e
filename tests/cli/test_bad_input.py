"""Bad input, as a careless user types it: every case exits 2 with one ``error:`` line that
names the problem, before any work (nothing trained, nothing written)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mitigate.cli.app import app

runner = CliRunner()

# (command line after the command, extra config lines or None, words the error must hold)
CASES = [
    (["evaluate", "--out", ""], None, "--out is empty"),
    (["compare", "--out", " "], None, "--out is empty"),
    (["evaluate", "--seed", str(2**32)], None, "'seed' in command line must be an integer in"),
    (["evaluate", "--seed", "-1"], None, "'seed' in command line must be an integer in"),
    (["compare", "--seed", str(2**32 - 2)], None, "seed + seeds - 1 <= 4294967295"),
    (["evaluate", "--schemes", ""], None, "'quantization.schemes' in command line must be one"),
    (["compare", "--strategies", ""], None, "'compare.strategies' in command line must be one"),
    (["compare", "--budgets", ""], None, "'compare.budgets' in command line must be one"),
    (["compare", "--budgets", "50,-1"], None, "counts >= 1 or fractions in (0, 1]"),
    (["evaluate"], "[eval]\nbatch_size = 0", "'eval.batch_size' in {config} must be an integer"),
    (["evaluate"], "[eval]\nbatch_size = -1", "'eval.batch_size' in {config} must be an integer"),
    (["evaluate"], "[shifts]\nseverities = []", "'shifts.severities' in {config} must be one"),
    (["evaluate"], "[shifts]\nfamilies = []", "'shifts.families' in {config} must be one"),
    (["retrain"], "[retrain]\nguard_catch = 0", "'retrain.guard_catch' in {config} must be a"),
    (["retrain"], "[retrain]\nmax_float_params = 2", "must be a share in [0, 1]"),
    (["evaluate", "--schemes", "int4-weight:group_size=-4"], None, "takes an integer >= 0"),
]


def _one_line_error(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error:") and words in text, text


@pytest.mark.parametrize(("args", "extra", "words"), CASES)
def test_bad_input_is_one_line_and_exit_2_before_any_work(
    tmp_path, monkeypatch, tiny_config, args, extra, words
):
    def no_work(*_args, **_kwargs):
        raise AssertionError("bad input must be refused before any data is loaded")

    monkeypatch.setattr("mitigate.runs.session.load_data", no_work)
    monkeypatch.chdir(tmp_path)  # an empty --out would write here
    config = tiny_config
    if extra is not None:
        config = tmp_path / "bad.toml"
        config.write_text(extra + "\n")  # the rest stays the default: nothing is loaded
        words = words.format(config=config)
    result = runner.invoke(app, [*args, "--config", str(config)])
    _one_line_error(result, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tiny.toml", *(["bad.toml"] if extra is not None else [])]
    )  # nothing written


def test_a_config_that_is_a_folder_is_named_as_one(tmp_path):
    result = runner.invoke(app, ["evaluate", "--config", str(tmp_path)])
    _one_line_error(result, "is a directory, not a TOML file")


def test_an_out_that_is_a_file_or_cannot_be_written_is_refused(tmp_path, tiny_config):
    afile = tmp_path / "report.md"
    afile.write_text("kept")
    result = runner.invoke(app, ["evaluate", "--config", str(tiny_config), "--out", str(afile)])
    _one_line_error(result, "is a file, not a directory")
    assert afile.read_text() == "kept"
    if not Path("/proc/self").is_dir() or os.name != "posix":
        pytest.skip("needs a folder nobody can create files in (/proc)")
    result = runner.invoke(app, ["evaluate", "--config", str(tiny_config), "--out", "/proc/x/y"])
    _one_line_error(result, "cannot write in /proc")
