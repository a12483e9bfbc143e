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
