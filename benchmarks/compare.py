"""What a user waits for: the wall and process CPU time of one whole `mitigate compare`.

Runs the default compare (or the config given) into a fresh temporary folder, so no finished
cell is reused, and prints the wall time, this process's CPU time (user + system, threads
included: the figure to compare when other jobs share the machine), the cell count, the
machine line and a digest of the table's counts, removals and accuracies (the timings left
out): two runs whose digests match produced the same table.

Run: .venv/bin/python benchmarks/compare.py [--config configs/default.toml] [--seeds 3]
     [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import resource
import tempfile
import time

from mitigate.config import load_config, override
from mitigate.machine import describe_machine, machine_line
from mitigate.runs.compare import compare

# Per-cell figures that are timings, not results: the cell's wall time and q1's latencies.
TIMINGS = ("wall_time_s", "latency_*", "per_input_*")


def results_only(cell: dict) -> dict:
    """A cell's record without its timings (sizes, float shares and reroute rates stay)."""
    kept = {k: v for k, v in cell.items() if k != "wall_time_s"}
    if "cost" in kept:
        kept["cost"] = {
            k: v for k, v in kept["cost"].items() if not k.startswith(("latency", "per_input"))
        }
    return kept


def table_digest(cells: list[dict]) -> str:
    """A digest of every cell's results (counts, removals, accuracies, sizes), timings left
    out, in a fixed cell order."""
    kept = [results_only(c) for c in cells]
    kept.sort(key=lambda c: (c["seed"], c["strategy"], c["selector"], str(c["budget"])))
    text = json.dumps(kept, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a TOML config; the default when left out")
    parser.add_argument("--seeds", type=int, help="override compare.seeds")
    parser.add_argument("--strategies", help="override compare.strategies (comma-separated)")
    parser.add_argument("--profile", help="write a cProfile of the run to this file")
    parser.add_argument("--json", help="also write the cells (without timings) to this file")
    args = parser.parse_args()
    config = load_config(args.config)
    changes: dict = {}
    if args.seeds is not None:
        changes["compare__seeds"] = args.seeds
    if args.strategies:
        changes["compare__strategies"] = args.strategies.split(",")
    if changes:
        config = override(config, **changes)
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as out:
        cpu, wall = cpu_seconds(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = compare(config, out)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    if profiler is not None:
        profiler.dump_stats(args.profile)
    if args.json:
        kept = sorted(
            (results_only(c) for c in result.cells),
            key=lambda c: (c["seed"], c["strategy"], c["selector"], str(c["budget"])),
        )
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(kept, f, sort_keys=True, indent=1)
    print(machine_line(describe_machine()))
    print(f"cells: {len(result.cells)}  seeds: {config.compare.seeds}")
    print(f"wall: {wall:.1f} s  process CPU: {cpu:.1f} s")
    print(f"table digest (without {', '.join(TIMINGS)}): {table_digest(result.cells)}")


if __name__ == "__main__":
    main()
