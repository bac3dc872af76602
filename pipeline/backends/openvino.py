"""OpenVINO CPU backend: the cpu target's second runtime.

OpenVINO reads the same ONNX graphs ONNX Runtime runs (the bundle ships the graph, OpenVINO
compiles it where it runs) and maps Q/DQ pairs onto its own u8/s8 kernels, which on some CPUs
and graphs are faster than ONNX Runtime's. Its arithmetic is not ONNX Runtime's, so a graph is
measured for accuracy on the runtime that ships it (pipeline.stages.runtime_choice).

Inference runs in f32 (`INFERENCE_PRECISION_HINT`): on CPUs with bf16 or AMX OpenVINO would
otherwise lower FP32 layers to bf16 on its own, and the precision of a graph is the project's
choice, measured against its budget, not the runtime's.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from pipeline.backends.base import ClosingRunner, RunnerUnavailable
from pipeline.backends.timing import TimedCall

RUNTIME = "openvino"


@dataclass(frozen=True)
class OpenVinoSettings:
    """Recorded in the report and manifest: how the compiled model that was measured was configured."""

    device: str = "CPU"
    threads: int = 0  # 0: OpenVINO's default (one per physical core)
    performance_hint: str = "LATENCY"
    inference_precision: str = "f32"

    def properties(self) -> dict:
        props = {"PERFORMANCE_HINT": self.performance_hint, "INFERENCE_PRECISION_HINT": self.inference_precision}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = self.threads
        return props


def openvino_version() -> Optional[str]:
    """OpenVINO's version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def compile_error_line(exc: BaseException) -> str:
    """OpenVINO's refusal of a graph as one line (its messages span many lines and name C++ files)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # Its messages start with "Exception from src/...cpp:NN:" and "Check ... failed at ...": the
    # reason is in the lines after those.
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))] or lines
    text = " ".join(useful)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class OpenVinoRunner(ClosingRunner):
    """Runner protocol over an OpenVINO compiled model on the CPU."""

    def __init__(self, name: str, model: Path, settings: OpenVinoSettings = OpenVinoSettings()) -> None:
        import openvino

        self.name, self.model, self.settings = name, Path(model), settings
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(str(model)), settings.device, settings.properties())
        self.request = self.compiled.create_infer_request()

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(images, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def timed_call(self, images: np.ndarray) -> TimedCall:
        feed = {0: np.ascontiguousarray(images, dtype=np.float32)}
        return TimedCall(lambda: self.request.infer(feed))

    def describe(self) -> dict:
        return {
            "backend": RUNTIME,
            RUNTIME: openvino_version(),
            "model": self.model.name,
            **asdict(self.settings),
            "threads_used": int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
        }

    def close(self) -> None:
        self.request = None
        self.compiled = None  # OpenVINO frees the compiled model with the object


def open_runner(name: str, model: Path, settings: OpenVinoSettings) -> OpenVinoRunner:
    """The runner, or RunnerUnavailable naming in one line why OpenVINO cannot compile the graph."""
    try:
        return OpenVinoRunner(name, model, settings)
    except ImportError:
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types for graphs it cannot take
        raise RunnerUnavailable(compile_error_line(exc)) from None
