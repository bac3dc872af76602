"""The one warm-up and timing loop every runner uses (host clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np


class HostClock:
    """Wall-clock timer; a GPU runner passes a clock of CUDA events with the same two methods."""

    def __init__(self) -> None:
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0


def time_calls(
    call: Callable[[], Any],
    warmup: int,
    runs: int,
    clock: Optional[Any] = None,
    settle: Optional[Callable[[], Any]] = None,
) -> np.ndarray:
    """Milliseconds of each of `runs` calls of `call`, after `warmup` untimed calls.

    `clock` has `start()` and `stop() -> ms` (default: the host clock); `settle` runs once after
    the warm-up (e.g. a stream synchronize, so queued warm-up work is not timed).
    """
    clock = clock or HostClock()
    for _ in range(warmup):
        call()
    if settle is not None:
        settle()
    timings = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        clock.start()
        call()
        timings[i] = clock.stop()
    return timings
