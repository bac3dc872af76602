"""The interface every inference backend offers to the validate stage.

ONNX Runtime (CPU) and TensorRT (GPU) runners both implement it, so the report compares any
engine against the FP32 reference in exactly the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Runner(Protocol):
    """Runs one model: float32 NCHW `images` in, float32 `logits` out."""

    name: str

    def infer(self, images: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed images."""
        ...

    def time_batch(self, images: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        """Latency of each of `runs` timed calls on `images`, in milliseconds, after `warmup` calls."""
        ...

    def describe(self) -> dict:
        """What was run and how (provider, threads, device, versions): recorded in the report."""
        ...
