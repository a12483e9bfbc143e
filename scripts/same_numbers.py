"""Do two checkouts of mitigate produce the same numbers? A check for refactors.

Runs the default ``evaluate``, ``score``, ``sensitivity``, ``retrain`` (once per strategy) and
``compare`` from each checkout, each with its own empty model cache (so base-model training is
compared too), and compares every number in the ``report.json`` files, leaving out what is
expected to differ: wall times, latencies, paths, provenance and versions.

Counts are per machine (int8 kernels differ across CPUs): run both checkouts on one machine.

Usage::

    python scripts/same_numbers.py run CHECKOUT OUT       # the reports of one checkout
    python scripts/same_numbers.py diff OUT_A OUT_B       # exit 1 if any number differs

``CHECKOUT`` is a source tree (e.g. ``git archive REV | tar -x -C DIR``); it runs with this
interpreter's installed dependencies and ``PYTHONPATH=CHECKOUT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

STRATEGIES = (
    "none",
    "recalibrate",
    "finetune",
    "qat",
    "distill",
    "settings",
    "fallback",
    "settings+fallback",
)
RUNS = {
    "evaluate": ["evaluate"],
    "score": ["score"],
    "sensitivity": ["sensitivity"],
    **{f"retrain-{s}": ["retrain", "--selector", "margin", "--strategy", s] for s in STRATEGIES},
    "compare": ["compare"],
}
# Keys whose values are timings, paths or versions: expected to differ between two runs.
IGNORED = {
    "wall_time_s",
    "provenance",
    "path",
    "cells_dir",
    "latency_ms",
    "latency_vs_reference",
    "latency_vs_fp",
    "latency_vs_q0",
    "mitigate_version",
    "torch_version",
    "machine",
    "cells",
}


def run(checkout: Path, out: Path, only: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(checkout), MITIGATE_CACHE_DIR=str(out / "cache"))
    main = "from mitigate.cli.app import main; main()"
    for name, args in RUNS.items():
        if only and name not in only:
            continue
        target = out / name
        if (target / "report.json").is_file():
            continue
        command = [sys.executable, "-c", main, *args, "--quiet", "--out", str(target)]
        print(" ".join(args), flush=True)
        subprocess.run(command, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)


def _diff(a: Any, b: Any, where: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                found.append(f"{where}.{key}: only in {'b' if key not in a else 'a'}")
                continue
            _diff(a[key], b[key], f"{where}.{key}", found)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{where}: {len(a)} items vs {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", found)
    elif a != b:
        found.append(f"{where}: {a!r} vs {b!r}")


def diff(a: Path, b: Path) -> int:
    status = 0
    for name in RUNS:
        ra, rb = a / name / "report.json", b / name / "report.json"
        if not (ra.is_file() and rb.is_file()):
            print(f"{name}: missing in {'a' if not ra.is_file() else 'b'}")
            status = 1
            continue
        found: list[str] = []
        _diff(json.loads(ra.read_text()), json.loads(rb.read_text()), name, found)
        print(f"{name}: {'same numbers' if not found else f'{len(found)} differences'}")
        for line in found[:20]:
            print("  " + line)
        status |= bool(found)
    return status


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        run(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve(), sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        sys.exit(diff(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
