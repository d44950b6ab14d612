"""What a CPU figure was measured on: the CPU's name and vector flags, the cores this process may use and
torch's threads, and the fp32 matrix-multiply rate those threads reach (the practical peak a convolution
can approach), beside the nominal peak from the clock and the vector width.

Every benchmark that prints a CPU figure prints :func:`cpu_description` with it (docs/performance.md).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

# flags that decide the speed of fp32 / bf16 convolutions (oneDNN picks its kernels by them)
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, set[str], float | None]:
    """(model name, flags, MHz of the first CPU) from ``/proc/cpuinfo``; the platform's name elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), set(), None

    def first(key: str) -> str | None:
        return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == key), None)

    mhz = first("cpu MHz")
    return first("model name") or "?", set((first("flags") or "").split()), float(mhz) if mhz else None


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_description() -> str:
    """One line: model, clock, the vector flags present, logical CPUs usable / present, torch threads."""
    name, flags, mhz = _cpuinfo()
    simd = "+".join(flag for flag in SIMD_FLAGS if flag in flags) or "no AVX2"
    clock = f", {mhz / 1000:.2f} GHz" if mhz else ""
    return (f"{name}{clock} ({simd}; {usable_cores()} of {os.cpu_count()} logical CPUs usable, "
            f"{torch.get_num_threads()} torch threads)")


def nominal_peak_gflops() -> float | None:
    """fp32 FLOP/s from the clock: threads x GHz x FLOP per cycle, taking two FMA units per core
    (2 x 8 lanes x 2 = 32 FLOP/cycle with AVX2, 64 with AVX512). An upper bound that assumes one thread
    per physical core and no clock drop under vector load; None where the clock is unknown."""
    _, flags, mhz = _cpuinfo()
    if mhz is None or "fma" not in flags:
        return None
    per_cycle = 64 if "avx512f" in flags else 32
    return torch.get_num_threads() * mhz / 1000 * per_cycle


def sgemm_gflops(*, size: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 GFLOP/s of ``torch.mm`` on two ``size`` x ``size`` matrices (best of ``repeats``):
    2 size^3 FLOP per product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
