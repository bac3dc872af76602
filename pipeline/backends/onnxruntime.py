"""ONNX Runtime CPU backend: the session factory, the engine of the embedded `cpu` target, and
the CPU proxy that validates precision graphs on hosts that cannot build the target's TensorRT
engine. Also the torch eager runner, the baseline the speed-ups are measured against."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from pipeline.backends.base import ClosingRunner
from pipeline.backends.timing import TimedCall
from pipeline.names import TENSORRT_GRAPHS

OPTIMIZATION_LEVELS = ("basic", "extended", "all")


@dataclass(frozen=True)
class SessionSettings:
    """Recorded in the report and manifest: how the session that was measured was configured."""

    graph_optimization: str = "all"
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    execution_mode: str = "sequential"
    provider: str = "CPUExecutionProvider"
    # False: Q/DQ pairs stay float ops (exact Q/DQ arithmetic) instead of fused integer kernels.
    qdq_fusion: bool = True


def precision_settings(precision: str, base: SessionSettings = SessionSettings()) -> SessionSettings:
    """How `precision`'s graph is run: a TensorRT graph (its CPU proxy) with exact Q/DQ, what
    TensorRT computes; every other graph with ONNX Runtime's fused integer kernels."""
    return replace(base, qdq_fusion=precision not in TENSORRT_GRAPHS)


def cpu_session(
    model: Union[Path, bytes],
    threads: int = 0,
    optimized_path: Path | None = None,
    level: str = "all",
    qdq_fusion: bool = True,
    spinning: bool = True,
):
    """An ONNX Runtime CPU session (`session_options`); optionally saves the optimized graph it runs."""
    import onnxruntime as ort

    options = session_options(threads, level, qdq_fusion, spinning)
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def session_options(threads: int = 0, level: str = "all", qdq_fusion: bool = True, spinning: bool = True) -> Any:
    """The SessionOptions every ONNX Runtime CPU session of the project is opened with.

    `qdq_fusion=False` keeps QuantizeLinear/DequantizeLinear as float ops (every other
    optimization stays): the arithmetic TensorRT's INT8 kernels do (32-bit accumulation), where
    ONNX Runtime's fused s8s8/u8s8 kernels on x86 without VNNI add up byte products in 16 bits
    and saturate.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not qdq_fusion:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        # Idle worker threads otherwise spin for a while after each run, taking the cores from
        # whatever runs next: timed side by side (validation interleaves its runners), every
        # runner but the last slowed down (paper-size FP32: 63 ms spinning, see README).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return options


def runtime_error_line(exc: BaseException) -> Optional[str]:
    """ONNX Runtime's own refusal of a model (Fail, InvalidGraph, NotImplemented, ...) as one line
    without its status prefix, or None when `exc` did not come from ONNX Runtime."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return None
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    text = re.sub(r"^Load model from .*? failed:\s*", "", text)  # the caller names the file
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_batched(session: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Logits of `images` through an ONNX Runtime session, `batch` images at a time."""
    input_name = session.get_inputs()[0].name
    outputs = [session.run(None, {input_name: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(outputs, axis=0).astype(np.float32)


def onnx_logits(onnx_path: Path, images: np.ndarray, qdq_fusion: bool = True) -> np.ndarray:
    """Logits of an ONNX file on the CPU, with ONNX Runtime's default optimizations."""
    return run_batched(cpu_session(onnx_path, qdq_fusion=qdq_fusion), images)


def save_optimized(model: Path, destination: Path, settings: SessionSettings) -> None:
    """Write the graph ONNX Runtime will run after its optimizations, made with `settings`
    (Q/DQ fused or kept exact), so a session opened on it with the same settings runs what a
    session on `model` runs.

    Saved at the "extended" level: "all" adds layout transformations specific to this CPU's
    instruction set, which ONNX Runtime warns are not portable to other machines; a session
    opened on the saved graph at `settings.graph_optimization` adds them where it runs.
    """
    cpu_session(
        model,
        threads=settings.intra_op_threads,
        optimized_path=destination,
        level="extended",
        qdq_fusion=settings.qdq_fusion,
    )


class OrtRunner(ClosingRunner):
    """Runner protocol over an ONNX Runtime CPU session."""

    def __init__(self, name: str, model: Path, settings: Optional[SessionSettings] = None) -> None:
        settings = settings or precision_settings(name)  # as given, else how `name`'s graph is run
        self.name = name
        self.model = model
        self.settings = settings
        self.session = cpu_session(
            model,
            threads=settings.intra_op_threads,
            level=settings.graph_optimization,
            qdq_fusion=settings.qdq_fusion,
            spinning=False,
        )
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    def timed_call(self, images: np.ndarray) -> TimedCall:
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return TimedCall(lambda: self.session.run(None, feed))

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

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory with the object
