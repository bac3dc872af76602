"""torch eager FP32: the baseline every graph's speed is measured against (host only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.backends.base import ClosingRunner
from pipeline.backends.timing import TimedCall
from pipeline.names import FP32_TORCH


class TorchRunner(ClosingRunner):
    """torch eager FP32: the baseline that the engines' speed-ups are measured against."""

    def __init__(self, module, threads: int = 0) -> None:
        import torch

        self.name = FP32_TORCH
        self.module = module.eval()
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)

    def infer(self, images: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(np.ascontiguousarray(images))).numpy()

    def timed_call(self, images: np.ndarray) -> TimedCall:
        batch = self.torch.from_numpy(np.ascontiguousarray(images))

        def call() -> Any:
            with self.torch.inference_mode():
                return self.module(batch)

        return TimedCall(call)

    def describe(self) -> dict:
        return {"backend": "torch-eager", "torch": self.torch.__version__, "threads_used": self.torch.get_num_threads()}
