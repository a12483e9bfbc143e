"""Peak resident memory of ``mitigate evaluate`` (and ``retrain``) when the test split grows.

Writes a synthetic 28x28 grey-scale dataset (one seeded template per class plus noise, stored
as ``uint8`` in an ``.npz`` that ``data.dataset = "npz"`` reads), trains one small base model
on it, then runs each command through the real CLI in a fresh subprocess at ``--test N`` and
at ``--factor`` times that, with every shift family at every severity (27 families x 5
severities + clean on images: 136 groups, so 2,000 test images are 272,000 scanned inputs).
Each child's peak resident set is read from the kernel when it exits (``os.wait4``'s
``ru_maxrss``), next to its wall and CPU time.

The claim under test: peak memory grows by no more than the per-input result arrays (labels
of the FP model and of every copy, group, index, true label, margin: 64 bytes an input for
four schemes) when the test split grows ``--factor`` times; each command's last line prints
that bound for the inputs added (``allowed``) beside what the run measured (``grew``).

Sizes: the issue's size is 2,000 test images (272,000 inputs). The default measures 400 and
2,000 test images, so its larger run *is* the issue's size: about 15 minutes per command on 2
shared cores (65,500 inputs took 200 s wall, 104 s CPU, here). Starting from 2,000 (up to
10,000: 1.36 million inputs) would take over an hour per command. ``--test 100`` (13,100 and
65,500 inputs) gives the figures in docs/results.md in about 5 minutes per command.

Usage:
    python benchmarks/memory.py [--test 400] [--factor 5] [--commands evaluate retrain]
        [--families all] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMES = ("int8", "int8-dynamic", "fp16", "int4-weight")
# Bytes per scanned input the report's arrays need: group (int32), index, true label, FP label
# and one label per scheme (int64), the FP margin (float32).
RESULT_BYTES = 4 + 8 * 3 + 8 * len(SCHEMES) + 4
COMMANDS = {
    "evaluate": ["evaluate"],
    "retrain": ["retrain", "--strategy", "settings+fallback", "--selector", "margin"],
}


def synthetic_npz(path: Path, *, n: int, n_test: int, seed: int) -> None:
    """``x``/``y`` (train, val, calibration, pool) and ``x_test``/``y_test``: ``uint8
    [n, 28, 28]`` images of 10 classes, each a fixed random template under fresh noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 28, 28))

    def images(count: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(count) % 10  # every class equally often, so stratified splits fit
        x = 0.7 * templates[y] + 0.3 * rng.random((count, 28, 28))
        return np.rint(x * 255).astype(np.uint8), y.astype(np.int64)

    x, y = images(n)
    x_test, y_test = images(n_test)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)


def write_config(path: Path, npz: Path, *, test: int, args: argparse.Namespace) -> None:
    families = ", ".join(f'"{f}"' for f in args.families)
    schemes = ", ".join(f'"{s}"' for s in SCHEMES)
    path.write_text(
        f"""seed = {args.seed}
[data]
dataset = "npz"
data_dir = "{npz}"
train = {args.train}
val = 0
calibration = 200
pool = {args.pool}
test = {test}
[train]
epochs = 1
[shifts]
families = [{families}]
held_out = []
[quantization]
schemes = [{schemes}]
[retrain]
probe_size = {args.pool}
[eval]
batch_size = {args.batch}
"""
    )


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run the CLI in a fresh process; its (peak RSS in MiB, wall s, CPU s)."""
    started = time.perf_counter()
    code = "from mitigate.cli.app import main; main()"
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit code {child.returncode}")
    # Linux reports ru_maxrss in KiB.
    return usage.ru_maxrss / 1024, time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=400, help="the smaller test split")
    parser.add_argument("--factor", type=int, default=5, help="the larger one is this many x")
    parser.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=["evaluate"])
    parser.add_argument("--families", nargs="+", default=["all"], help="shift families")
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--pool", type=int, default=1000, help="pool images (retrain)")
    parser.add_argument("--batch", type=int, default=512, help="eval batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    if args.test < 10 or args.factor < 2:
        parser.error("--test must be >= 10 (one image per class) and --factor >= 2")

    from mitigate.machine import describe_machine, machine_line

    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        npz = work / "synthetic28.npz"
        sizes = [args.test, args.test * args.factor]
        synthetic_npz(npz, n=args.train + 200 + args.pool, n_test=sizes[-1], seed=args.seed)
        env = {**os.environ, "MITIGATE_CACHE_DIR": str(work / "cache")}
        configs = {}
        for test in sizes:
            configs[test] = work / f"test{test}.toml"
            write_config(configs[test], npz, test=test, args=args)
        # One base model for every run, trained outside the measured children.
        models = work / "models"
        run_child(["train", "-c", str(configs[sizes[0]]), "-o", str(models), "-q"], env)
        (checkpoint,) = models.glob("*.pt")

        print(machine_line(describe_machine()))
        print(f"schemes {', '.join(SCHEMES)}; {RESULT_BYTES} result bytes per input")
        print(f"{'command':>9} | {'test':>6} | {'inputs':>9} | {'peak MiB':>9} | wall s | cpu s")
        for command in args.commands:
            peaks = {}
            for test in sizes:
                out = work / f"{command}-{test}"
                argv = [*COMMANDS[command], "-c", str(configs[test]), "-m", str(checkpoint)]
                peak, wall, cpu = run_child([*argv, "-o", str(out), "-q"], env)
                inputs = _inputs(out)
                peaks[test] = (peak, inputs)
                print(
                    f"{command:>9} | {test:>6} | {inputs:>9} | {peak:9.1f} | "
                    f"{wall:6.1f} | {cpu:5.1f}"
                )
            (small, n_small), (large, n_large) = peaks[sizes[0]], peaks[sizes[-1]]
            allowed = (n_large - n_small) * RESULT_BYTES / 2**20
            grew = large - small
            verdict = "within" if grew <= allowed else "over"
            print(
                f"{command}: peak ratio {large / small:.3f} for {args.factor}x the test split; "
                f"grew {grew:.1f} MiB, allowed {allowed:.1f} MiB (result arrays) -> {verdict}"
            )


def _inputs(out: Path) -> int:
    """Scanned test inputs, read from the run's ``predictions.npz``."""
    names = sorted(out.glob("**/predictions*.npz"))
    with np.load(names[0]) as f:
        return int(f["label"].shape[0])


if __name__ == "__main__":
    main()
