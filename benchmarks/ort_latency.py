"""ONNX Runtime int8 latency against ORT FP32 and torch.ao int8, on the default model.

The default config's base model (cached, or trained once) is quantized three ways: ``int8``
(torch.ao, x86 engine), ``ort-int8`` (static QDQ, fused integer kernels at ORT's default
optimization level) and ``ort-fp32`` (the export run in ORT). Each round times every model on
the same batch, in a rotating order (interleaved, so machine noise hits all alike); the
printed figures are medians of per-round ratios, with wall and process CPU time, since
absolute timings on a shared machine are noise. Both runtimes get the same thread count.

Run: .venv/bin/python benchmarks/ort_latency.py [--rounds 30] [--batch 64] [--threads 1]
[--config another.toml]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from mitigate.config import load_config
from mitigate.machine import describe_machine, machine_line
from mitigate.quantization import quantize
from mitigate.runs.session import Session

SCHEMES = ("int8", "ort-int8", "ort-fp32")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@torch.no_grad()
def time_once(model, x: torch.Tensor, calls: int) -> tuple[float, float]:
    """Wall and process CPU seconds of ``calls`` forward passes."""
    w0, c0 = time.perf_counter(), cpu_s()
    for _ in range(calls):
        model(x)
    return time.perf_counter() - w0, cpu_s() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="inputs per call (1: one input)")
    parser.add_argument("--calls", type=int, default=20, help="calls per model per round")
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes")
    parser.add_argument("--config", default=None, help="a config other than the default")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    session = Session.open(load_config(args.config), schemes=["int8"])
    fp = session.model.eval()
    calibration = session.calibration
    models = {"fp (torch)": fp}
    for name in SCHEMES:
        scheme = name if name == "int8" else f"{name}:threads={args.threads}"
        models[name] = quantize(fp, scheme, calibration)
    x = session.timing_batch(max(args.batch, 1))[: args.batch]
    labels = list(models)
    for m in models.values():  # warm up: ORT builds its kernels on the first run
        time_once(m, x, 3)
    wall: dict[str, list[float]] = {k: [] for k in labels}
    cpu: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(args.rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            w, c = time_once(models[label], x, args.calls)
            wall[label].append(w / args.calls)
            cpu[label].append(c / args.calls)

    def ratio(a: str, b: str, table: dict[str, list[float]]) -> float:
        return statistics.median(p / q for p, q in zip(table[a], table[b], strict=True))

    print(machine_line(describe_machine()))
    print(
        f"{'default' if args.config is None else args.config} model "
        f"({session.config.model.arch}), batch {args.batch}, "
        f"{args.threads} thread(s), {args.rounds} rounds x {args.calls} calls"
    )
    print(f"{'model':<12} {'median ms/call':>15} {'cpu ms/call':>12}")
    for label in labels:
        print(
            f"{label:<12} {1000 * statistics.median(wall[label]):>15.3f} "
            f"{1000 * statistics.median(cpu[label]):>12.3f}"
        )
    for a, b in (("ort-int8", "ort-fp32"), ("ort-int8", "int8"), ("int8", "fp (torch)")):
        print(
            f"latency {a} / {b}: {ratio(a, b, wall):.2f}x wall, {ratio(a, b, cpu):.2f}x CPU "
            "(median of per-round ratios)"
        )


if __name__ == "__main__":
    main()
