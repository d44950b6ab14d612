"""Wall-clock timing of a step function (synchronising a CUDA device around the timed region), and the
autocast each Lightning precision the benchmarks time stands for."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# Lightning precision -> autocast dtype (None: no autocast); the precisions the benchmarks can time
AUTOCAST = {"32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def autocast(precision: str, *, device: str) -> torch.autocast:
    """The autocast context Lightning runs a step in at ``precision`` (disabled for ``32-true``)."""
    dtype = AUTOCAST[precision]
    return torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None)


def seconds_per_step(step: Callable[[], None], *, device: str, steps: int, warmup: int = 1) -> float:
    """Mean seconds per call of ``step`` over ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps
