"""Resident memory each new quantized model leaves behind, per scheme and per stage.

A settings search quantizes the FP model once per candidate. If each new int8 model keeps
memory after it is dropped, the search's peak grows with the number of candidates, whatever
the test split. This script makes ``--models`` models of one LeNet-5 per scheme (after a
warm-up), each run on one batch and then dropped, and prints the resident memory (``statm``,
after a full garbage collection) gained per model; for the static schemes it also splits it by
stage: prepare, + calibrate, + convert, + the first forward pass.

Usage:
    python benchmarks/quantize_memory.py [--models 15] [--size 28]
                                         [--schemes int8,int8:engine=qnnpack,int8-dynamic]
"""

from __future__ import annotations

import argparse
import gc
import warnings
from pathlib import Path

import torch

from mitigate.models import build_model
from mitigate.quantization import parse_scheme, quantize, static
from mitigate.quantization.schemes import Int8Static

STAGES = ("prepare", "calibrate", "convert", "forward")


def resident_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def per_model(make, models: int, warm_up: int = 3) -> float:
    """MiB of resident memory gained per call of ``make`` (its result dropped each time)."""
    for _ in range(warm_up):
        make()
    gc.collect()
    start = resident_mib()
    for _ in range(models):
        make()
    gc.collect()
    return (resident_mib() - start) / models


def staged(model, scheme: Int8Static, x: torch.Tensor, stage: str) -> None:
    """Quantize ``model`` up to ``stage`` (and run the result once at ``forward``)."""
    prepared = static.prepare(model, scheme, x[:1])
    if stage == "prepare":
        return
    static.calibrate(prepared, [x])
    if stage == "calibrate":
        return
    converted = static.convert(prepared, scheme.engine)
    if stage == "convert":
        return
    with static._engine(scheme.engine), torch.no_grad():
        converted(x[:64])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=15)
    parser.add_argument("--size", type=int, default=28, help="image side (LeNet-5 input)")
    parser.add_argument("--schemes", default="int8,int8:engine=qnnpack,int8-dynamic")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch.ao's deprecation notes
    torch.manual_seed(0)
    size = (args.size, args.size)
    model = build_model("lenet5", in_channels=1, image_size=size, num_classes=10).eval()
    x = torch.rand(256, 1, *size)

    print(f"MiB of resident memory kept per new model ({args.models} models, LeNet-5 {size})")
    for name in args.schemes.split(","):
        scheme = parse_scheme(name)

        def whole(scheme=scheme) -> None:
            with torch.no_grad():
                quantize(model, scheme, x)(x[:64])

        line = f"{name:24s} whole {per_model(whole, args.models):6.2f}"
        if isinstance(scheme, Int8Static):
            for stage in STAGES:
                kept = per_model(lambda s=stage, q=scheme: staged(model, q, x, s), args.models)
                line += f"  {stage} {kept:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
