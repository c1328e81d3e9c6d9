"""What the machine sustains, measured in the benchmark's own run: the dense-GEMM rate that a
unit of work's counted FLOPs are read against (utilisation = achieved / sustained).

Why measure it in the same run: these machines are shared, so a rate taken another day (or by
another process) says little about the cores this run had; the ratio of two measurements taken
side by side does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def gemm_rate(
    device: torch.device | str = "cpu", size: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 7
) -> float:
    """Median GFLOP/s of a ``size``³ matrix product (2·size³ FLOPs) on ``device`` and ``dtype``
    with the threads torch has now."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def utilisation(flops: int, median_s: float, rate_gflops: float) -> dict[str, Any]:
    """The benchmark line's entries: the unit's FLOPs, the rate it achieved, the machine's GEMM
    rate, their ratio and the floor (the unit at the GEMM rate)."""
    achieved = flops / median_s / 1e9
    return {
        "unit_gflop": round(flops / 1e9, 3),
        "achieved_gflops": round(achieved, 2),
        "gemm_gflops": round(rate_gflops, 2),
        "utilisation": round(achieved / rate_gflops, 3),
        "floor_s": round(flops / rate_gflops / 1e9, 4),
    }


def measured(
    step: Callable[[], Any], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[int, float]:
    """(counted FLOPs of one ``step()``, the machine's GEMM rate now): call before timing."""
    from segnas.hardware.costs import count_training_flops

    return count_training_flops(step), gemm_rate(device, dtype=dtype)
