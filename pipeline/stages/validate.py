"""validate: every precision against the FP32 reference on the evaluation subset.

Accuracy: top-1, top-5, top-1 agreement with FP32, mean cosine similarity and max abs error of
the logits, and per image the top-1 class and its confidence (the report shows the images whose
answer changed). Speed: latency p50/p90/p99 per batch size after warm-up, and throughput. Any
backend's runners plug in (ONNX Runtime here, TensorRT on the device), so the comparison is the
same everywhere. Runners are opened one at a time and closed after use, so only one engine is
in memory and nothing is left allocated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from pipeline.artifacts import StageCache, StageResult, save_array
from pipeline.backends.base import Runner
from pipeline.config import Config
from pipeline.host import host_info
from pipeline.metrics import AccuracyMetrics, LatencyMetrics, accuracy_metrics, image_predictions, latency_metrics
from pipeline.names import FP32, FP32_TORCH

STAGE_VERSION = "3"  # 2: per-image predictions in results.json; 3: TensorRT graphs run with exact Q/DQ on the CPU proxy


@dataclass
class PrecisionResult:
    precision: str
    accuracy: AccuracyMetrics
    latency: List[LatencyMetrics]
    runner: Dict[str, Any]
    samples_ms: Dict[int, List[float]] = field(default_factory=dict)
    # Per image, in evaluation order: top1, confidence, reference_class_confidence (metrics.image_predictions)
    predictions: Dict[str, List[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """How latency is measured: batch sizes, warm-up calls and timed calls per batch size."""

    batch_sizes: Tuple[int, ...]
    warmup: int
    runs: int
    infer_batch: int = 32  # images per call for the accuracy pass (an engine takes at most its profile's max)


@dataclass
class EvaluationSet:
    """Preprocessed evaluation images, their labels and the FP32 reference logits."""

    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray


def infer_all(runner: Runner, images: np.ndarray, batch: int = 32) -> np.ndarray:
    chunks = [runner.infer(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(chunks, axis=0).astype(np.float32)


def measure(runner: Runner, evaluation: EvaluationSet, timing: Timing) -> PrecisionResult:
    logits = infer_all(runner, evaluation.images, timing.infer_batch)
    latencies, samples = [], {}
    for batch in timing.batch_sizes:
        timed = runner.time_batch(_batch_of(evaluation.images, batch), timing.warmup, timing.runs)
        latencies.append(latency_metrics(timed, batch))
        samples[batch] = [round(float(t), 4) for t in timed]
    accuracy = accuracy_metrics(logits, evaluation.labels, evaluation.reference)
    predictions = image_predictions(logits, evaluation.reference)
    return PrecisionResult(runner.name, accuracy, latencies, runner.describe(), samples, predictions)


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """`batch` images, repeating the set if it is smaller than the batch."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps, axis=0)[:batch])


def validate_all(runners: Dict[str, Callable[[], Runner]], evaluation: EvaluationSet, timing: Timing,
                 progress: bool = True) -> List[PrecisionResult]:
    """Measure each runner (made lazily, one at a time, closed after its measurement)."""
    from rich.progress import Progress

    results = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("validating", total=len(runners))
        for name, make in runners.items():
            bar.update(task, description=f"validating {name}")
            with make() as runner:
                results.append(measure(runner, evaluation, timing))
            bar.update(task, advance=1)
    return results


def results_to_json(results: List[PrecisionResult]) -> List[Dict[str, Any]]:
    return [asdict(r) for r in results]


@dataclass
class ValidationInputs:
    """What the validate stage measures: the graphs, the evaluation crops, the torch module."""

    models: Dict[str, Path]  # precision -> ONNX graph
    model_keys: Dict[str, str]  # precision -> content hash of that graph
    eval_crops: np.ndarray  # uint8 NCHW
    eval_labels: np.ndarray
    data_hash: str
    model: Any  # the loaded checkpoint (torch module and its hash)


def run_validation(config: Config, cache: StageCache, inputs: ValidationInputs, cpu_proxy: bool,
                   progress: bool = True) -> StageResult:
    """Measure FP32 (torch and ONNX Runtime) and each precision graph on the evaluation subset."""
    import onnxruntime

    from pipeline.backends.onnxruntime import OrtRunner, TorchRunner
    from pipeline.data import normalize
    from pipeline.stages.engine import session_settings

    vc = config.validate_
    settings = {**vc.model_dump(), "cpu_proxy": cpu_proxy, "host": host_info()["cpu"]}
    keys = {**inputs.model_keys, "evaluation_images": inputs.data_hash, "checkpoint": inputs.model.checkpoint_sha256}
    timing = Timing(tuple(vc.batch_sizes), vc.warmup, vc.runs)
    session = session_settings(config)

    def body(workdir: Path) -> Tuple[Dict[str, str], Dict[str, Any]]:
        images = np.ascontiguousarray(normalize(inputs.eval_crops, config.preprocessing.spec()))
        with OrtRunner(FP32, inputs.models[FP32], session) as fp32:  # the reference, then measured like the rest
            evaluation = EvaluationSet(images, inputs.eval_labels, infer_all(fp32, images))
            runners: Dict[str, Callable[[], Runner]] = {}
            if vc.torch_baseline and inputs.model.module is not None:  # an ONNX file given has no torch module
                runners[FP32_TORCH] = lambda: TorchRunner(inputs.model.module, vc.threads)
            for precision, path in inputs.models.items():
                runners[precision] = (lambda: fp32) if precision == FP32 else (lambda p=precision, f=path: OrtRunner(p, f, session))
            results = validate_all(runners, evaluation, timing, progress)
        (workdir / "results.json").write_text(json.dumps(results_to_json(results)))
        save_array(workdir / "fp32_logits.npy", evaluation.reference)
        return {"results": "results.json", "reference": "fp32_logits.npy"}, {"images": int(len(inputs.eval_labels))}

    return cache.run("validate", keys, settings, {"onnxruntime": onnxruntime.__version__}, body, STAGE_VERSION)
