"""validate: every precision against the FP32 reference on the evaluation subset.

Accuracy: top-1, top-5, top-1 agreement with FP32, mean cosine similarity and max abs error of
the logits, and per image the top-1 class and its confidence (the report shows the images whose
answer changed). Speed: latency p50/p90/p99 per batch size after warm-up, and throughput; the
runners of one runtime are timed together, one call of each per round, so a busy moment of the
machine falls on every precision alike (the latency choice in report_gate compares them). Any
backend's runners plug in (ONNX Runtime here, TensorRT on the device), so the comparison is the
same everywhere. Each runtime's runners are closed before the next runtime's are opened, so
nothing is left allocated.

The cpu target may run its graphs on two runtimes (`[targets.cpu] runtime`): with "auto" (or
"openvino") every graph is measured on ONNX Runtime and on OpenVINO, accuracy included, since
their INT8 arithmetic differs; a graph a runtime cannot compile is skipped there with its reason.
Which runtime ships each graph is decided from these results (pipeline.stages.runtime_choice).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import StageResult, save_array, sha256_file
from pipeline.backends.base import Runner, RunnerUnavailable
from pipeline.backends.openvino import RUNTIME, open_runner, openvino_version
from pipeline.backends.timing import time_interleaved
from pipeline.host import host_info
from pipeline.metrics import AccuracyMetrics, LatencyMetrics, accuracy_metrics, image_predictions, latency_metrics
from pipeline.names import FP32, FP32_TORCH

# 2: per-image predictions in results.json; 3: TensorRT graphs run with exact Q/DQ on the CPU proxy; 4: interleaved
# timing; 5: runtime per result, OpenVINO
STAGE_VERSION = "5"


@dataclass
class PrecisionResult:
    precision: str
    accuracy: AccuracyMetrics
    latency: List[LatencyMetrics]
    runner: Dict[str, Any]
    samples_ms: Dict[int, List[float]] = field(default_factory=dict)
    # Per image, in evaluation order: top1, confidence, reference_class_confidence (metrics.image_predictions)
    predictions: Dict[str, List[Any]] = field(default_factory=dict)
    runtime: str = ""  # "onnxruntime", "openvino", "torch", "tensorrt"


@dataclass
class Skipped:
    """A graph a runtime could not open, and why (one line)."""

    precision: str
    runtime: str
    reason: str


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


# Runner name -> a function that opens it (typing.Callable: evaluated at run time, also on Python 3.8).
Factories = Dict[str, Callable[[], Runner]]


def accuracy_of(runner: Runner, evaluation: EvaluationSet, timing: Timing) -> PrecisionResult:
    """Accuracy and per-image answers of one runner (latency is added by `time_together`)."""
    logits = infer_all(runner, evaluation.images, timing.infer_batch)
    accuracy = accuracy_metrics(logits, evaluation.labels, evaluation.reference)
    predictions = image_predictions(logits, evaluation.reference)
    return PrecisionResult(runner.name, accuracy, [], runner.describe(), {}, predictions)


def time_together(runners: List[Runner], evaluation: EvaluationSet, timing: Timing) -> Dict[str, Dict[int, np.ndarray]]:
    """Per runner and batch size, the milliseconds of its timed calls, the runners interleaved
    call by call (timing.time_interleaved) so that none is favoured by a quiet moment."""
    samples: Dict[str, Dict[int, np.ndarray]] = {r.name: {} for r in runners}
    for batch in timing.batch_sizes:
        images = _batch_of(evaluation.images, batch)
        timed = time_interleaved({r.name: r.timed_call(images) for r in runners}, timing.warmup, timing.runs)
        for name, ms in timed.items():
            samples[name][batch] = ms
    return samples


def _with_latency(result: PrecisionResult, samples: Dict[int, np.ndarray]) -> PrecisionResult:
    result.latency = [latency_metrics(ms, batch) for batch, ms in samples.items()]
    result.samples_ms = {batch: [round(float(t), 4) for t in ms] for batch, ms in samples.items()}
    return result


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """`batch` images, repeating the set if it is smaller than the batch."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps, axis=0)[:batch])


def validate_all(
    runtimes: Dict[str, Factories],
    evaluation: EvaluationSet,
    timing: Timing,
    progress: bool = True,
    skipped: Optional[List[Skipped]] = None,
) -> List[PrecisionResult]:
    """Measure every runner, one runtime at a time (runtime name -> its runners).

    The runners of one runtime are open together: each one's accuracy pass, then their timed
    calls interleaved. Runtimes that would disturb each other's timing (thread pools of ONNX
    Runtime and torch) are measured apart, and each runtime's runners are closed before the
    next runtime's are opened. A runner whose runtime cannot open its graph (RunnerUnavailable)
    is left out and appended to `skipped`.
    """
    from rich.progress import Progress

    results: List[PrecisionResult] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("validating", total=sum(len(f) + 1 for f in runtimes.values()))

        def step(description: str) -> None:
            bar.update(task, description=description, advance=1)

        for runtime, factories in runtimes.items():
            results += _measure_runtime(
                runtime, factories, evaluation, timing, step, skipped if skipped is not None else []
            )
    return results


def _measure_runtime(
    runtime: str,
    factories: Factories,
    evaluation: EvaluationSet,
    timing: Timing,
    step: Callable[[str], None],
    skipped: List[Skipped],
) -> List[PrecisionResult]:
    """The runners of one runtime: open together, accuracy one by one, then timed interleaved."""
    with ExitStack() as stack:
        opened, results = [], []
        for name, make in factories.items():
            try:
                opened.append(stack.enter_context(make()))
            except RunnerUnavailable as exc:
                skipped.append(Skipped(name, runtime, str(exc)))
                step(f"{runtime} cannot run {name}")
                continue
            results.append(accuracy_of(opened[-1], evaluation, timing))
            results[-1].runtime = runtime
            step(f"validated {name} on {runtime}")
        samples = time_together(opened, evaluation, timing) if opened else {}
        step(f"timed {runtime}: {', '.join(r.name for r in opened)}, interleaved")
    return [_with_latency(result, samples[result.precision]) for result in results]


def results_to_json(results: List[PrecisionResult]) -> List[Dict[str, Any]]:
    return [asdict(r) for r in results]


@dataclass
class ValidationInputs:
    """What the validate stage measures: the graphs, the evaluation crops, the torch module."""

    models: Dict[str, Path]  # precision -> ONNX graph (the cpu target: ONNX Runtime's optimized graph)
    model_keys: Dict[str, str]  # precision -> content hash of that graph
    eval_crops: np.ndarray  # uint8 NCHW
    eval_labels: np.ndarray
    data_hash: str
    model: Any  # the loaded checkpoint (torch module and its hash)
    # precision -> the graph OpenVINO compiles (the precision stage's, not ONNX Runtime's
    # optimized one, whose fused contrib ops only ONNX Runtime reads); empty: ONNX Runtime only
    openvino_models: Dict[str, Path] = field(default_factory=dict)


def run_validate(ctx: Any, inputs: ValidationInputs) -> StageResult:
    """Measure FP32 (torch and ONNX Runtime) and each precision graph on the evaluation subset,
    and on OpenVINO too when `inputs.openvino_models` names graphs."""
    import onnxruntime

    from pipeline.backends.eager import TorchRunner
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.data import normalize
    from pipeline.stages.engine import openvino_settings, session_settings

    config, cache, cpu_proxy, progress = ctx.config, ctx.cache, ctx.cpu_proxy, ctx.options.progress
    vc = config.validate_
    settings = {**vc.model_dump(), "cpu_proxy": cpu_proxy, "host": host_info()["cpu"]}
    keys = {**inputs.model_keys, "evaluation_images": inputs.data_hash, "checkpoint": inputs.model.checkpoint_sha256}
    timing = Timing(tuple(vc.batch_sizes), vc.warmup, vc.runs)
    versions = {"onnxruntime": onnxruntime.__version__}
    if inputs.openvino_models:  # the graphs OpenVINO measures, and which OpenVINO
        keys["openvino_graphs"] = {p: sha256_file(path) for p, path in inputs.openvino_models.items()}
        versions["openvino"] = str(openvino_version())

    def body(workdir: Path) -> Tuple[Dict[str, str], Dict[str, Any]]:
        images = np.ascontiguousarray(normalize(inputs.eval_crops, config.preprocessing.spec()))
        with OrtRunner(
            FP32, inputs.models[FP32], session_settings(config, FP32)
        ) as fp32:  # the reference, then measured like the rest
            evaluation = EvaluationSet(images, inputs.eval_labels, infer_all(fp32, images))
            runtimes: Dict[str, Factories] = {}
            if vc.torch_baseline and inputs.model.module is not None:  # an ONNX file given has no torch module
                runtimes["torch"] = {FP32_TORCH: lambda: TorchRunner(inputs.model.module, vc.threads)}
            runtimes["onnxruntime"] = {
                precision: (lambda: fp32)
                if precision == FP32
                else (lambda p=precision, f=path: OrtRunner(p, f, session_settings(config, p)))
                for precision, path in inputs.models.items()
            }
            if inputs.openvino_models:
                runtimes[RUNTIME] = {
                    precision: (lambda p=precision, f=path: open_runner(p, f, openvino_settings(config)))
                    for precision, path in inputs.openvino_models.items()
                }
            skipped: List[Skipped] = []
            results = validate_all(runtimes, evaluation, timing, progress, skipped)
        (workdir / "results.json").write_text(json.dumps(results_to_json(results)))
        save_array(workdir / "fp32_logits.npy", evaluation.reference)
        details = {"images": int(len(inputs.eval_labels)), "skipped": [asdict(s) for s in skipped]}
        return {"results": "results.json", "reference": "fp32_logits.npy"}, details

    return cache.run("validate", keys, settings, versions, body, STAGE_VERSION)


def summary(result: StageResult) -> str:
    """The stage's line in the build log."""
    return f"{result.record.details.get('images', '?')} images"
