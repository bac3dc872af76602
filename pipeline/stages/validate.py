"""validate: every precision against the FP32 reference on the evaluation subset.

Accuracy: top-1, top-5, top-1 agreement with FP32, mean cosine similarity and max abs error of
the logits. Speed: latency p50/p90/p99 per batch size after warm-up, and throughput. Any
backend's runners plug in (ONNX Runtime here, TensorRT on the device), so the comparison is the
same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.backends.base import Runner


@dataclass
class AccuracyMetrics:
    top1: float
    top5: float
    agreement: float  # top-1 agreement with the FP32 reference
    cosine_mean: float
    max_abs_error: float
    images: int


@dataclass
class LatencyMetrics:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float  # images per second at this batch size
    runs: int


@dataclass
class PrecisionResult:
    precision: str
    accuracy: AccuracyMetrics
    latency: list[LatencyMetrics]
    runner: dict[str, Any]
    samples_ms: dict[int, list[float]] = field(default_factory=dict)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> AccuracyMetrics:
    dot = np.sum(logits * reference, axis=1)
    norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = dot / np.maximum(norms, 1e-12)
    return AccuracyMetrics(
        top1=topk_accuracy(logits, labels, 1),
        top5=topk_accuracy(logits, labels, 5),
        agreement=float(np.mean(logits.argmax(1) == reference.argmax(1))),
        cosine_mean=float(np.mean(cosine)),
        max_abs_error=float(np.max(np.abs(logits - reference))),
        images=int(len(labels)),
    )


def latency_metrics(samples_ms: np.ndarray, batch: int) -> LatencyMetrics:
    mean = float(np.mean(samples_ms))
    return LatencyMetrics(
        batch=batch,
        p50_ms=float(np.percentile(samples_ms, 50)),
        p90_ms=float(np.percentile(samples_ms, 90)),
        p99_ms=float(np.percentile(samples_ms, 99)),
        mean_ms=mean,
        throughput_ips=batch * 1000.0 / mean,
        runs=int(len(samples_ms)),
    )


def infer_all(runner: Runner, images: np.ndarray, batch: int = 32) -> np.ndarray:
    chunks = [runner.infer(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(chunks, axis=0).astype(np.float32)


def measure(
    runner: Runner,
    images: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    batch_sizes: tuple[int, ...],
    warmup: int,
    runs: int,
) -> PrecisionResult:
    logits = infer_all(runner, images)
    latencies, samples = [], {}
    for batch in batch_sizes:
        timed = runner.time_batch(_batch_of(images, batch), warmup, runs)
        latencies.append(latency_metrics(timed, batch))
        samples[batch] = [round(float(t), 4) for t in timed]
    return PrecisionResult(runner.name, accuracy_metrics(logits, labels, reference), latencies, runner.describe(), samples)


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """`batch` images, repeating the set if it is smaller than the batch."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps, axis=0)[:batch])


def validate_all(
    runners: dict[str, Callable[[], Runner]],
    images: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    batch_sizes: tuple[int, ...],
    warmup: int,
    runs: int,
    progress: bool = True,
) -> list[PrecisionResult]:
    """Measure each runner (made lazily, one at a time, so only one engine is in memory)."""
    from rich.progress import Progress

    results = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("validating", total=len(runners))
        for name, make in runners.items():
            bar.update(task, description=f"validating {name}")
            results.append(measure(make(), images, labels, reference, batch_sizes, warmup, runs))
            bar.update(task, advance=1)
    return results


def results_to_json(results: list[PrecisionResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
