"""What makes the `qat` and `distill` strategies work: one setting changed at a time.

Each setting runs `mitigate compare` (distill and qat; selectors margin and random plus the
no-selection control; one budget) over several seeds on the embedded default, and prints the
mean net removal of int8 disagreements against the original FP model with its 95% CI, on all
test inputs and on the held-out shift families. Results are cached per setting under --out,
so a rerun only prints.

Run: .venv/bin/python benchmarks/qat_distill_sweep.py [--seeds 3] [--budget 100]
"""

from __future__ import annotations

import argparse

from mitigate.config import Config, override
from mitigate.runs.compare import compare

BASELINE = {"retrain__epochs": 5, "retrain__lr": 5e-4}
SETTINGS = {
    "baseline (5 epochs, lr 5e-4, T 2)": {},
    "1 epoch, lr 1e-4 (reference run)": {"retrain__epochs": 1, "retrain__lr": 1e-4},
    "1 epoch": {"retrain__epochs": 1},
    "10 epochs": {"retrain__epochs": 10},
    "lr 1e-4": {"retrain__lr": 1e-4},
    "lr 2e-3": {"retrain__lr": 2e-3},
    "freeze BN + observers after epoch 1": {
        "train__freeze_bn_epoch": 1,
        "train__freeze_observer_epoch": 1,
    },
    "temperature 1": {"train__distill_temperature": 1.0},
    "temperature 4": {"train__distill_temperature": 4.0},
    "selected inputs weighted 5x": {"train__selected_weight": 5.0},
}


def fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    ci = "" if stats["ci95"] is None else f" ±{100 * stats['ci95']:.0f}"
    return f"{100 * stats['mean']:+.0f}%{ci}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--out", default="runs/qat_distill_sweep")
    parser.add_argument("--only", help="run only settings whose name contains this text")
    args = parser.parse_args()
    header = f"{'setting':40} {'strategy':9} {'selector':9} {'net removal':>13} {'held-out':>13}"
    print(f"{header} {'Δacc q1':>8}")
    for name, change in SETTINGS.items():
        if args.only and args.only not in name:
            continue
        config = override(
            Config(),
            **{**BASELINE, **change},
            compare__strategies=["distill", "qat"],
            compare__selectors=["margin", "random"],
            compare__budgets=[args.budget],
            compare__seeds=args.seeds,
        )
        report = compare(config, args.out).report
        for row in sorted(report["rows"], key=lambda r: (r["strategy"], r["selector"])):
            acc = row["accuracy_change"]["mean"]
            print(
                f"{name:40} {row['strategy']:9} {row['selector']:9} {fmt(row['all']):>13} "
                f"{fmt(row['held_out_shifts']):>13} {100 * acc:+7.1f}"
            )


if __name__ == "__main__":
    main()
