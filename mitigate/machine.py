"""What machine measured a report: int8 counts depend on it.

The same seed gives the same counts on one machine and torch build, not across them: x86's
int8 kernels differ with and without VNNI (and its reduced 7-bit activation range exists
for CPUs without it), and training's float sums differ with the vector width. Every report
records what it ran on, so two reports can be compared knowingly.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

__all__ = ["INT8_FEATURES", "describe_machine", "machine_line"]

# The CPU flags that change int8 or float kernels (Linux /proc/cpuinfo names).
INT8_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimddp",  # ARM dot product (qnnpack, int8 GEMM)
    "i8mm",
)


def describe_machine() -> dict[str, Any]:
    """``{"cpu", "arch", "isa", "features", "threads", "quantized_engines"}``: the CPU's name
    and architecture, the vector ISA torch dispatches to (``AVX512``, ``AVX2``, ...), the
    int8-relevant CPU flags present (Linux only; empty elsewhere), torch's intra-op threads
    and the quantized engines this torch build offers.

    Example:
        >>> sorted(describe_machine())
        ['arch', 'cpu', 'features', 'isa', 'quantized_engines', 'threads']
    """
    import torch

    name, flags = _cpuinfo()
    return {
        "cpu": name or platform.processor() or "unknown",
        "arch": platform.machine(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "features": [f for f in INT8_FEATURES if f in flags],
        "threads": torch.get_num_threads(),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    """The model name and flags of the first CPU in ``/proc/cpuinfo`` (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 "flags", ARM "Features"
            flags = set(value.split())
    return name, flags


def machine_line(machine: dict[str, Any]) -> str:
    """One line for reports: ``AMD EPYC (x86_64, AVX512; avx512_vnni, avx_vnni), 2 threads``."""
    features = ", ".join(machine.get("features") or []) or "no int8 extensions listed"
    return (
        f"{machine.get('cpu')} ({machine.get('arch')}, {machine.get('isa')}; {features}), "
        f"{machine.get('threads')} threads"
    )
