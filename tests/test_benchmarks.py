"""The fit benchmark runs to the end and its contenders really do the same steps.

Timings are not asserted (they belong to the benchmark, on a quiet machine); what is checked
is what would make its ratios meaningless: a contender ending with other weights than the
plain loop, or a summary line that no longer says what it measured.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_fit_benchmark_contenders_end_with_the_same_weights(monkeypatch, capsys):
    threads = torch.get_num_threads()
    argv = ["fit.py", "--epochs", "1", "--repeats", "2", "--validation-only"]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        runpy.run_path(str(BENCHMARKS / "fit.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    rounds = [line for line in lines if re.match(r"\s+\d+ \|", line)]
    assert len(rounds) == 2
    assert all(line.rstrip().endswith("| True") for line in rounds), rounds
    firsts = [line.split("|")[1].strip() for line in rounds]
    assert firsts == ["mitigate", "bare"]  # the first contender rotates
    summary = next(line for line in lines if "mitigate / bare median" in line)
    assert re.search(
        r"95% CI \d\.\d{3}-\d\.\d{3}, (meets|misses|within noise of) the 1\.02x goal", summary
    )
    assert re.search(r"mitigate / plain \d\.\d{3}", summary)
    assert "Lightning's floor (bare / plain)" in summary


def test_ort_latency_benchmark_times_every_runtime(monkeypatch, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    config = tmp_path / "tiny.toml"
    config.write_text(
        "[data]\ntrain = 300\nval = 50\ncalibration = 50\npool = 100\ntest = 100\n"
        '[model]\narch = "lenet1"\n[train]\nepochs = 1\n'
        '[shifts]\nfamilies = ["rotate"]\nseverities = [3]\n'
    )
    threads = torch.get_num_threads()
    argv = ["ort_latency.py", "--rounds", "2", "--calls", "1", "--config", str(config)]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        runpy.run_path(str(BENCHMARKS / "ort_latency.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for label in ("fp (torch)", "int8", "ort-int8", "ort-fp32"):
        assert re.search(rf"^{re.escape(label)}\s+\d+\.\d{{3}}\s+\d+\.\d{{3}}$", out, re.M), out
    for pair in ("ort-int8 / ort-fp32", "ort-int8 / int8"):
        assert re.search(rf"latency {pair}: \d+\.\d\dx wall, \d+\.\d\dx CPU", out), out


def test_memory_benchmark_measures_both_sizes_in_fresh_processes(monkeypatch, capsys, tmp_path):
    argv = ["memory.py", "--test", "10", "--factor", "2", "--families", "brightness"]
    argv += ["--train", "100", "--pool", "50", "--keep", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(BENCHMARKS / "memory.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|") for line in lines if re.match(r"\s+evaluate \|", line)]
    assert [int(r[1]) for r in rows] == [10, 20]
    # clean + brightness at 5 severities: every test image is scanned in 6 groups
    assert [int(r[2]) for r in rows] == [60, 120]
    assert all(float(r[3]) > 0 for r in rows)
    summary = next(line for line in lines if line.startswith("evaluate: peak ratio"))
    assert re.search(r"grew -?\d+\.\d MiB, allowed \d+\.\d MiB .* -> (within|over)$", summary)
    assert (tmp_path / "evaluate-20" / "report.json").is_file()


def test_quantize_memory_benchmark_reports_every_scheme_and_stage(monkeypatch, capsys):
    argv = ["quantize_memory.py", "--models", "2", "--size", "8"]
    monkeypatch.setattr(sys, "argv", [*argv, "--schemes", "int8,int8-dynamic"])
    runpy.run_path(str(BENCHMARKS / "quantize_memory.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    number = r"\s+-?\d+\.\d\d"
    stages = "".join(rf"\s+{s}{number}" for s in ("prepare", "calibrate", "convert", "forward"))
    assert re.fullmatch(rf"int8\s+whole{number}{stages}", lines[1]), lines
    assert re.fullmatch(rf"int8-dynamic\s+whole{number}", lines[2]), lines
