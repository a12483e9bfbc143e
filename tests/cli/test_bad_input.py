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
    (["evaluate", "--model", "lenet6"], None, "unknown model 'lenet6': give a checkpoint file"),
    (["evaluate"], "[data]\nchannels = 2", "'data.channels' in {config} must be 0 (as stored)"),
    (["evaluate"], "[data]\nmean = [0.5]", "must be as many finite numbers as data.std"),
    (["evaluate"], "[data]\nmean = [0.5]\nstd = [0]", "'data.std' in {config} must be numbers"),
    (["evaluate"], "[model]\nkwargs = 3", "'model.kwargs' in {config} must be dict"),
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


@pytest.mark.skipif(os.name != "posix", reason="runs are locked with fcntl.flock")
def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path, tiny_config):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the first run's")
    with open(out / ".mitigate-lock", "a+") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        result = runner.invoke(app, ["evaluate", "--config", str(tiny_config), "--out", str(out)])
        _one_line_error(result, "is in use by another mitigate run (pid 4242)")
    assert (out / "report.md").read_text() == "the first run's"


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(tmp_path, tiny_config):
    out = tmp_path / "out"
    stage = out / ".staging-k1ll3d"
    stage.mkdir(parents=True)
    (stage / "report.json").write_text("{}")
    cells = out / "cells" / "abc"
    cells.mkdir(parents=True)
    (cells / "seed0.json").write_text("{}")  # a finished cell: kept
    leftovers = [out / ".report.json.x1.tmp", cells / ".seed1.json.y2.tmp.npz"]
    for path in leftovers:
        path.write_text("half")
    (out / "notes.txt").write_text("mine")  # not mitigate's: kept
    bad = ["evaluate", "--config", str(tiny_config), "--out", str(out), "--schemes", "int3"]
    result = runner.invoke(app, bad)  # refused after claiming the folder
    assert result.exit_code == 2, result.output
    assert not stage.exists() and not any(p.exists() for p in leftovers)
    assert (cells / "seed0.json").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_failure_after_ctrl_c_is_reported_as_the_interrupt(monkeypatch, tmp_path, tiny_config):
    """Ctrl-C inside torch's import leaves a module half initialized; the failure that follows
    is the interrupt's doing: exit 130, "interrupted", no traceback file."""
    import tempfile

    import mitigate.runs.evaluate
    from mitigate.cli import common

    def broken_import(*args, **kwargs):
        common.INTERRUPTED.set()  # what the SIGINT handler records
        raise ImportError("cannot import name 'sympy' (partially initialized module)")

    monkeypatch.setattr(mitigate.runs.evaluate, "evaluate", broken_import)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    try:
        result = runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-o", str(tmp_path / "e")])
    finally:
        common.INTERRUPTED.clear()
    assert result.exit_code == 130 and result.output.strip() == "error: interrupted"
    assert not list(tmp_path.glob("mitigate-traceback-*")) and not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [('{"x": 1}', "no 'calibration' entry"), ("nope", "Expecting value")],
)
def test_a_malformed_calibration_preset_says_what_is_wrong(tmp_path, tiny_config, content, words):
    preset = tmp_path / "preset.json"
    preset.write_text(content)
    args = ["evaluate", "--config", str(tiny_config), "--calibration", str(preset)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o")])
    _one_line_error(result, f"cannot read calibration preset {preset}: {words}")
