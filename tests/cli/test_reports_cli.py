"""Every report command's files: plots, report.md, report.html, --json, provenance, crashes,
and the CLI conventions they share (flags, exit codes, completion)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from mitigate.atomic import read_json
from mitigate.cli.app import app
from mitigate.reports.writer import LOCK_FILE, MANIFEST

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"

# command -> (extra arguments that keep it fast, the plots it must write)
COMMANDS = {
    "evaluate": ([], {"disagreement-by-shift.png", "disagreement-by-severity.png"}),
    "score": (["--scores", "margin,kl,random,oracle"], {"roc.png", "margin-histogram.png"}),
    "sensitivity": (["--probe-size", "40"], {"layer-sensitivity.png"}),
    "retrain": (["--strategy", "none", "--budget", "10"], {"removed-introduced.png"}),
    "compare": (
        ["--selectors", "margin", "--strategies", "none,recalibrate", "--budgets", "5,10"]
        + ["--seeds", "1"],
        {"net-removal-vs-budget.png", "removal-vs-cost.png"},
    ),
}


@pytest.fixture(scope="module")
def runs(tiny_config_file, tmp_path_factory):
    """Each command once on the tiny config with ``-q --json --format html``."""
    root = tmp_path_factory.mktemp("reports")
    results = {}
    # The conftest's per-test cache fixture has not run yet at module scope: use the same dir.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITIGATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        for name, (extra, _) in COMMANDS.items():
            out = root / name
            args = [name, "-c", str(tiny_config_file), "-o", str(out), "-q", "--json"]
            args += ["--format", "html", *extra]
            results[name] = (runner.invoke(app, args), out, args)
    return results


@pytest.mark.parametrize("command", list(COMMANDS))
def test_json_on_stdout_is_the_report_and_nothing_else(runs, command):
    result, out, _ = runs[command]
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # the whole of stdout parses: nothing else there
    assert printed == read_json(out / "report.json")
    assert printed["command"] == command
    assert "wrote" not in result.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_plots_are_pngs_embedded_in_markdown_and_html(runs, command):
    result, out, _ = runs[command]
    assert result.exit_code == 0, result.output
    expected = COMMANDS[command][1]
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == expected
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    markdown = (out / "report.md").read_text()
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)) == pngs
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    manifest = read_json(out / MANIFEST)["files"]
    assert {"report.json", "report.md", "report.html", *pngs} <= set(manifest)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_provenance_names_the_exact_command_versions_and_seed(runs, command):
    _, out, args = runs[command]
    report = read_json(out / "report.json")
    recorded = report["provenance"]["command"]
    assert recorded.startswith(f"mitigate {command} ") and "--config " in recorded
    for flag in ("--out", "--quiet", "--json", "--format html", *args[9::2]):
        assert flag in recorded  # every option given, by its long name, and no default
    assert "--seed " not in recorded  # defaults are left out
    assert report["mitigate_version"] and report["torch_version"]
    assert report["seed"] == 0
    markdown = (out / "report.md").read_text()
    assert f"- command: `{recorded}`" in markdown
    assert "torch " + report["torch_version"] in markdown and "wall time" in markdown


def test_a_crash_mid_report_keeps_the_previous_report_and_the_cells(runs, tmp_path, monkeypatch):
    from mitigate.reports import figures

    _, original, args = runs["compare"]
    out = tmp_path / "compare"
    shutil.copytree(original, out)
    args = [*args[:4], str(out), *args[5:]]
    report_files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cells = {p: p.read_bytes() for p in (out / "cells").rglob("*.json")}
    real_save = figures.save_png

    def save_then_crash(fig, path, **kwargs):
        real_save(fig, path, **kwargs)  # the first file of the new report is written ...
        raise RuntimeError("killed mid-report")  # ... then the run dies

    monkeypatch.setattr(figures, "save_png", save_then_crash)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    crashed = runner.invoke(app, args)
    assert crashed.exit_code == 1
    (line,) = crashed.output.strip().splitlines()
    assert line.startswith("error: internal failure: RuntimeError: killed mid-report; traceback")
    saved = line.rsplit("saved to ", 1)[1]
    assert "killed mid-report" in Path(saved).read_text() and saved.startswith(str(tmp_path))
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_FILE}
    assert kept == report_files  # the lock file (held for the run) may stay
    assert {p: p.read_bytes() for p in (out / "cells").rglob("*.json")} == cells
    assert json.loads((out / "report.json").read_text())["command"] == "compare"
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["cells"]  # no staging left

    monkeypatch.setattr(figures, "save_png", real_save)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["cells"]["reused"] == report["cells"]["total"]  # the rerun resumed


def test_human_output_without_json(tiny_config, tmp_path):
    out = tmp_path / "s"
    args = ["sensitivity", "-c", str(tiny_config), "-o", str(out), "--probe-size", "40"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Layer sensitivity" in result.stdout
    assert f"wrote {out / 'report.json'}, {out / 'report.md'}" in result.stdout.replace("\n", "")
    assert not (out / "report.html").exists()


@pytest.mark.parametrize("command", ["evaluate", "score", "retrain"])
def test_scanning_shows_a_counter_of_every_input(command, tiny_config, tmp_path, monkeypatch):
    import contextlib

    from mitigate.cli.common import Output

    shown: dict[str, list[int]] = {}

    @contextlib.contextmanager
    def recording_bar(self, description, total):
        counts = shown.setdefault(description, [])
        yield lambda n=1, description=None: counts.append(n)

    monkeypatch.setattr(Output, "bar", recording_bar)
    out = tmp_path / command
    args = [command, "-c", str(tiny_config), "-o", str(out), *COMMANDS[command][0]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = read_json(out / "report.json")
    if command != "retrain":
        assert sum(shown["scanning inputs"]) == report["n"]
        return
    n = report["totals"]["all"]["n"]
    assert sum(shown["measuring f0 and q0"]) == sum(shown["measuring f1 and q1"]) == n
    assert sum(shown["scanning the pool"]) > 0  # the pool: clean + the seen shifts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--bogus"], "No such option: --bogus"),
        (["evaluate", "--format", "pdf"], "Invalid value for '--format'"),
        (["score", "--seed", "x"], "Invalid value for '--seed'"),
        (["compare", "--seeds", "0"], "Invalid value for '--seeds'"),
        (["evalute"], "No such command 'evalute'. Did you mean 'evaluate'?"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line and "--help" in line


def test_an_out_that_is_a_file_fails_before_any_work(tiny_config, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-o", str(target)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out {target} is a file, not a directory"


def test_an_unexpected_exception_is_exit_1_with_the_traceback_saved(
    tiny_config, tmp_path, monkeypatch
):
    import mitigate.runs.evaluate

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero [in the scan]")

    monkeypatch.setattr(mitigate.runs.evaluate, "evaluate", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = runner.invoke(app, ["evaluate", "-c", str(tiny_config), "-o", str(tmp_path / "e")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "internal failure: ZeroDivisionError: division by zero [in the scan]" in line
    (saved,) = tmp_path.glob("mitigate-traceback-*.txt")
    text = saved.read_text()
    assert text.startswith("mitigate evaluate --config") and "Traceback" in text
    assert not (tmp_path / "e").exists()

    monkeypatch.setenv("MITIGATE_DEBUG", "1")
    debug = runner.invoke(app, ["evaluate", "-c", str(tiny_config)])
    assert isinstance(debug.exception, ZeroDivisionError)


REPORT_FLAGS = {"--config", "-c", "--out", "-o", "--seed", "--quiet", "-q", "--json", "--model"}


@pytest.mark.parametrize("command", [*COMMANDS, "train"])
def test_every_command_has_the_common_flags(command):
    params = get_command(app).commands[command].params
    opts = {opt for p in params for opt in p.opts}
    if command == "train":
        assert {"--config", "-c", "--out", "-o", "--seed", "--quiet", "-q", "--json"} <= opts
        return
    assert REPORT_FLAGS | {"-m", "--format"} <= opts
    assert ("--schemes" if command in ("evaluate", "score") else "--scheme") in opts


def test_version_and_shell_completion():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mitigate ")
    completion = runner.invoke(
        app,
        [],
        prog_name="mitigate",
        env={"_MITIGATE_COMPLETE": "complete_bash", "COMP_WORDS": "mitigate ev", "COMP_CWORD": "1"},
    )
    assert completion.exit_code == 0 and completion.output.split() == ["evaluate"]


def test_help_imports_neither_torch_nor_matplotlib():
    code = (
        "import sys, mitigate.cli.app; "
        "print([m for m in ('torch', 'matplotlib', 'sklearn', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    main = (
        "import sys; sys.argv = ['mitigate', '--help']; from mitigate.cli.app import main; main()"
    )
    help_run = subprocess.run([sys.executable, "-c", main], capture_output=True, text=True)
    assert help_run.returncode == 0 and "evaluate" in help_run.stdout
