"""One clock for every benchmark: CPU time of this process on the CPU, synchronised wall time on CUDA.

The machines are shared: another job on the same cores stretches wall-clock time but hardly the CPU time
this process itself spends, so ratios of CPU time stay comparable between runs of a busy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def clock(device: torch.device | str = "cpu") -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    start = clock(device)
    fn()
    return clock(device) - start


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> float:
    """Median over `repeats` timed calls, after one untimed warm-up call."""
    fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


CLOCK_NOTE = "CPU time of the benchmark process (wall time with CUDA synchronisation on a GPU)"
