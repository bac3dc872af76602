"""ONNX Runtime CPU backend: the engine of the embedded `cpu` target, and the CPU proxy that
validates precision graphs on hosts that cannot build the target's TensorRT engine."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.stages.checks import cpu_session


@dataclass(frozen=True)
class SessionSettings:
    """Recorded in the report and manifest: how the session that was measured was configured."""

    graph_optimization: str = "all"
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    execution_mode: str = "sequential"
    provider: str = "CPUExecutionProvider"


class OrtRunner:
    """Runner protocol over an ONNX Runtime CPU session."""

    def __init__(self, name: str, model: Path, settings: SessionSettings = SessionSettings()) -> None:
        self.name = name
        self.model = model
        self.settings = settings
        self.session = cpu_session(model, threads=settings.intra_op_threads, level=settings.graph_optimization)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def time_batch(self, images: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        for _ in range(warmup):
            self.session.run(None, feed)
        timings = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            start = time.perf_counter()
            self.session.run(None, feed)
            timings[i] = (time.perf_counter() - start) * 1000.0
        return timings

    def describe(self) -> dict:
        import onnxruntime

        threads = self.settings.intra_op_threads or os.cpu_count()
        return {
            "backend": "onnxruntime",
            "onnxruntime": onnxruntime.__version__,
            "model": self.model.name,
            **asdict(self.settings),
            "threads_used": threads,
            "cpu": platform.processor() or platform.machine(),
        }


def save_optimized(model: Path, destination: Path, settings: SessionSettings) -> None:
    """Write the graph ONNX Runtime will run after its optimizations.

    Saved at the "extended" level: "all" adds layout transformations specific to this CPU's
    instruction set, which ONNX Runtime warns are not portable to other machines.
    """
    cpu_session(model, threads=settings.intra_op_threads, optimized_path=destination, level="extended")


class TorchRunner:
    """torch eager FP32: the baseline that the engines' speed-ups are measured against."""

    def __init__(self, module, threads: int = 0) -> None:
        import torch

        self.name = "fp32-torch"
        self.module = module.eval()
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)

    def infer(self, images: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self.torch.from_numpy(np.ascontiguousarray(images))).numpy()

    def time_batch(self, images: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        batch = self.torch.from_numpy(np.ascontiguousarray(images))
        timings = np.empty(runs, dtype=np.float64)
        with self.torch.inference_mode():
            for _ in range(warmup):
                self.module(batch)
            for i in range(runs):
                start = time.perf_counter()
                self.module(batch)
                timings[i] = (time.perf_counter() - start) * 1000.0
        return timings

    def describe(self) -> dict:
        return {"backend": "torch-eager", "torch": self.torch.__version__, "threads_used": self.torch.get_num_threads()}
