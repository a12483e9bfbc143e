"""Streaming top-k: time and peak memory of selecting the top k from a pool scored in batches.

Streams ``random`` scores (a stateless hash of the pool index, so every batching sees the same
scores) through :class:`mitigate.selectors.StreamingTopK` in batches, for each pool size, and
prints time and peak memory. The claim under test: memory is O(budget + batch), not O(pool),
so the peak at 1,000,000 inputs stays within 10% of the peak at 100,000.

Memory is measured torch-aware: the torch profiler records every tensor allocation and free
on the CPU (``profile_memory=True``); the peak is the highest running total of live tensor
bytes allocated during the run. ``tracemalloc`` would miss tensors entirely (torch allocates
outside Python's allocator). Timing comes from a separate run without the profiler.

The in-memory column scores the whole pool at once and calls ``select``: the O(pool) baseline.

Usage:
    python benchmarks/select_topk.py [--sizes 100000 1000000] [--budget 1000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from mitigate.selectors import StreamingTopK, random_score, select


def stream(n: int, k: int, batch: int, seed: int) -> torch.Tensor:
    top = StreamingTopK(k)
    for start in range(0, n, batch):
        index = torch.arange(start, min(start + batch, n))
        top.update(random_score(index, seed=seed), index)
    return top.result()


def in_memory(n: int, k: int, seed: int) -> torch.Tensor:
    return select(random_score(torch.arange(n), seed=seed), k)


def seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_tensor_bytes(fn: Callable[[], object]) -> int | None:
    """Highest running total of CPU tensor bytes allocated while ``fn`` runs (None if the
    profiler does not expose its allocation events in this torch version)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        running = itertools.accumulate(
            e.nbytes() for e in events if e.device_type() == DeviceType.CPU
        )
    except AttributeError:
        return None
    return max(itertools.chain([0], running))


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timing: best of this many")
    args = parser.parse_args()

    print(
        f"top {args.budget} of N random scores, batches of {args.batch}, torch {torch.__version__}"
    )
    print(
        f"{'N':>10} | {'stream s':>8} | {'stream peak MiB':>15} | {'in-memory peak MiB':>18} | same"
    )
    peaks: dict[int, int | None] = {}
    for n in args.sizes:
        result = stream(n, args.budget, args.batch, args.seed)
        same = torch.equal(result, in_memory(n, args.budget, args.seed))
        took = seconds(lambda n=n: stream(n, args.budget, args.batch, args.seed), args.repeats)
        peaks[n] = peak_tensor_bytes(lambda n=n: stream(n, args.budget, args.batch, args.seed))
        whole = peak_tensor_bytes(lambda n=n: in_memory(n, args.budget, args.seed))
        print(f"{n:>10} | {took:8.3f} | {mib(peaks[n]):>15} | {mib(whole):>18} | {same}")

    small, large = min(args.sizes), max(args.sizes)
    if small != large and peaks[small] and peaks[large] is not None:
        ratio = peaks[large] / peaks[small]  # type: ignore[operator]
        verdict = "within 10%" if ratio <= 1.10 else "NOT within 10%"
        print(f"stream peak ratio N={large} / N={small}: {ratio:.3f} ({verdict})")


if __name__ == "__main__":
    main()
