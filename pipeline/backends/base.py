"""The interface every inference backend offers to the validate stage.

ONNX Runtime (CPU), torch eager and TensorRT (GPU) runners all implement it, so the report
compares any engine against the FP32 reference in exactly the same way. Runners hold sessions,
engines and device memory: they are context managers, and `close()` frees what they hold.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from pipeline.backends.timing import TimedCall, time_interleaved


class Runner(Protocol):
    """Runs one model: float32 NCHW `images` in, float32 `logits` out."""

    name: str

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed images."""
        ...

    def timed_call(self, images: np.ndarray) -> TimedCall:
        """The call on `images` that latency measures, with its clock (timing.time_interleaved
        times it alongside the other runners of the same runtime)."""
        ...

    def time_batch(self, images: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        """Latency of each of `runs` timed calls on `images`, in milliseconds, after `warmup` calls."""
        ...

    def describe(self) -> dict:
        """What was run and how (provider, threads, device, versions): recorded in the report."""
        ...

    def close(self) -> None:
        """Free sessions, engines and device memory; the runner is unusable afterwards."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class RunnerUnavailable(Exception):
    """A runtime cannot open this graph (it lacks an op, its compiler refuses a pattern): the
    graph is skipped on that runtime, with this one-line reason, and measured on the others."""


class ClosingRunner:
    """Context-manager behaviour for runners whose `close()` frees everything, and `time_batch`
    for runners that define `timed_call`."""

    def timed_call(self, images: np.ndarray) -> TimedCall:
        raise NotImplementedError

    def time_batch(self, images: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        """This runner alone: `timed_call` timed on its own."""
        return time_interleaved({"runner": self.timed_call(images)}, warmup, runs)["runner"]

    def close(self) -> None:
        """Nothing held beyond what garbage collection frees."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
