"""The one warm-up and timing loop every runner uses: several runners of one runtime are timed
in turn, one call each per round, so a busy moment of the machine falls on all of them alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np


class HostClock:
    """Wall-clock timer; a GPU runner passes a clock of CUDA events with the same two methods."""

    def __init__(self) -> None:
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0


@dataclass(frozen=True)
class TimedCall:
    """One runner's call to time: `clock` has `start()` and `stop() -> ms` (None: the host
    clock); `settle` runs once after the warm-up (e.g. a stream synchronize, so queued warm-up
    work is not timed)."""

    call: Callable[[], Any]
    clock: Optional[Any] = None
    settle: Optional[Callable[[], Any]] = None


def time_interleaved(calls: Dict[str, TimedCall], warmup: int, runs: int) -> Dict[str, np.ndarray]:
    """Milliseconds of `runs` calls of each of `calls`, after `warmup` untimed calls of each.

    Round-robin: round i times call i of every runner, in the order given, so each runner's
    samples see the same machine state (a busy core, a clock change) as the others'.
    """
    clocks = {name: timed.clock or HostClock() for name, timed in calls.items()}
    for timed in calls.values():
        for _ in range(warmup):
            timed.call()
        if timed.settle is not None:
            timed.settle()
    timings = {name: np.empty(runs, dtype=np.float64) for name in calls}
    for i in range(runs):
        for name, timed in calls.items():
            clocks[name].start()
            timed.call()
            timings[name][i] = clocks[name].stop()
    return timings
