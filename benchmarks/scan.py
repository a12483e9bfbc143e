"""Scan throughput and memory on the embedded default.

1. Throughput: the scan (FP model + every quantized copy, labels and margin kept per input)
   against the same models' forward passes alone over the same pre-built batches. Printed as a
   ratio of inputs per second (goal >= 0.9), median of interleaved repeats in one process,
   because absolute timings on shared machines are noise.
2. Memory: peak traced memory (tracemalloc; numpy arrays are traced, the transient torch batch
   tensors are not) of a scan over N and 10N lazily shifted inputs, next to the bytes the
   per-input arrays themselves need. Goal: the growth is the per-input arrays, nothing more.

Run: .venv/bin/python benchmarks/scan.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import torch

from mitigate.config import Config
from mitigate.data.evalset import build_groups, iter_batches
from mitigate.runs.session import Session
from mitigate.scanning import scan


@torch.no_grad()
def forward_only(model, variants, batches) -> None:
    for batch in batches:
        model(batch.x)
        for variant in variants.values():
            variant(batch.x)


def throughput(model, variants, batches, groups, repeats: int) -> tuple[float, float, float]:
    ratios, forward_times, scan_times = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward_only(model, variants, batches)
        t1 = time.perf_counter()
        scan(model, variants, batches, groups=groups)
        t2 = time.perf_counter()
        forward_times.append(t1 - t0)
        scan_times.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return (
        statistics.median(ratios),
        statistics.median(forward_times),
        statistics.median(scan_times),
    )


def traced_peak(model, variants, data, groups, seed: int) -> tuple[int, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    pred = scan(
        model, variants, iter_batches(data, groups, batch_size=512, seed=seed), groups=groups
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrays = pred.group.nbytes + pred.index.nbytes + pred.label.nbytes + pred.reference.nbytes
    arrays += sum(v.nbytes for v in pred.variants.values()) + sum(
        v.nbytes for v in pred.scores.values()
    )
    return peak, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    config = Config()
    session = Session.open(config)
    data, model = session.data, session.model
    variants = session.quantize(config.quantization.schemes)
    test = data.splits.test
    groups = build_groups(data.families, config.shifts.severities)
    batches = list(iter_batches(test, groups, batch_size=512, seed=config.seed))
    n = sum(len(b.y) for b in batches)

    ratio, t_forward, t_scan = throughput(model, variants, batches, groups, args.repeats)
    print(f"models: fp + {', '.join(variants)}; inputs per pass: {n}")
    print(f"forward passes alone: {n / t_forward:10.0f} inputs/s")
    print(f"scan:                 {n / t_scan:10.0f} inputs/s")
    print(f"throughput ratio scan / forward-only: {ratio:.3f}", end="  ")
    print(f"(goal >= 0.9, median of {args.repeats})")

    every = build_groups(data.families, config.shifts.severities)
    small, large = every[:5], every[:50]  # exactly 10x the inputs
    peak_small, arrays_small = traced_peak(model, variants, test, small, config.seed)
    peak_large, arrays_large = traced_peak(model, variants, test, large, config.seed)
    n_small = len(test) * len(small)
    n_large = len(test) * len(large)
    print()
    print(f"{'inputs':>8} {'peak traced':>12} {'per-input arrays':>17}")
    print(f"{n_small:>8} {peak_small / 2**20:>10.2f}MB {arrays_small / 2**20:>15.2f}MB")
    print(f"{n_large:>8} {peak_large / 2**20:>10.2f}MB {arrays_large / 2**20:>15.2f}MB")
    growth, expected = peak_large - peak_small, arrays_large - arrays_small
    print(
        f"growth {growth / 2**20:.2f}MB for {n_large / n_small:.1f}x inputs; "
        f"per-input arrays grew {expected / 2**20:.2f}MB (ratio {growth / expected:.2f}; "
        "about 2 is expected: the per-batch pieces and their concatenation coexist at the end)"
    )


if __name__ == "__main__":
    main()
