"""Every measure of "nothing was lost": accuracy against labels and against the FP32 reference,
latency percentiles, and the accuracy budget. One home, used by precision, validate and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Percentages computed from counts carry float noise (0.99 - 0.98 = 1.0000000000000009 points).
BUDGET_EPSILON = 1e-9


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the `k` largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


def agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose top-1 answer equals the reference's."""
    return float(np.mean(logits.argmax(1) == reference.argmax(1)))


def expected_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    """The agreement these logits' error predicts for images like these, flip by flip smoothed.

    Per image, the FP32 margin between its answer and the runner-up, and the difference the
    error makes between those two logits; with that difference's spread (root mean square over
    the images) sigma, an image flips with probability Phi(-margin / sigma). Unlike the count of
    flips, this moves continuously with the error and weighs every low-margin image, so on a few
    hundred images it is a steadier estimate of what unseen images will show.
    """
    import math

    rows = np.arange(len(reference))
    order = np.argsort(reference, axis=1)
    top, second = order[:, -1], order[:, -2]
    margin = reference[rows, top] - reference[rows, second]
    error = logits - reference
    spread = error[rows, second] - error[rows, top]
    sigma = float(np.sqrt(np.mean(spread**2)))
    if sigma == 0.0:
        return 1.0
    flips = [0.5 * math.erfc(float(m) / sigma / math.sqrt(2.0)) for m in margin]
    return float(1.0 - np.mean(flips))


# Two standard errors (one-sided 97.7%). Measured on the real-photo VT with 500 calibration and
# 2,000 evaluation photos: a 95% bound (1.645) let graphs through that agreed 98.9-99.0% on the
# evaluation photos; a 99% bound (2.326) asks for at most one changed answer in 500, which the
# ONNX Runtime graph (Add, Softmax and Mul quantized too) did not reach with 8 modules in FP32.
AGREEMENT_BOUND_Z = 2.0


def agreement_lower_bound(logits: np.ndarray, reference: np.ndarray, z: float = AGREEMENT_BOUND_Z) -> float:
    """A one-sided bound (z standard errors) under the lower of the measured and the expected
    agreement: what a budget check on a few hundred images can rely on."""
    n = len(reference)
    estimate = min(agreement(logits, reference), expected_agreement(logits, reference))
    return float(estimate - z * np.sqrt(max(estimate * (1.0 - estimate), 0.0) / max(n, 1)))


def top1_drop(reference_top1: float, top1: float) -> float:
    """Top-1 lost against the reference, in percentage points (negative: a gain)."""
    return 100.0 * (reference_top1 - top1)


def cosine_mean(logits: np.ndarray, reference: np.ndarray) -> float:
    dot = np.sum(logits * reference, axis=1)
    norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
    return float(np.mean(dot / np.maximum(norms, 1e-12)))


@dataclass
class AccuracyMetrics:
    top1: float
    top5: float
    agreement: float  # top-1 agreement with the FP32 reference
    cosine_mean: float
    max_abs_error: float
    images: int


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> AccuracyMetrics:
    return AccuracyMetrics(
        top1=topk_accuracy(logits, labels, 1),
        top5=topk_accuracy(logits, labels, 5),
        agreement=agreement(logits, reference),
        cosine_mean=cosine_mean(logits, reference),
        max_abs_error=float(np.max(np.abs(logits - reference))),
        images=int(len(labels)),
    )


@dataclass
class LatencyMetrics:
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_ips: float  # images per second at this batch size
    runs: int


def latency_metrics(samples_ms: np.ndarray, batch: int) -> LatencyMetrics:
    """Latency percentiles of `samples_ms`, the definition the C++ loader implements too.

    Linear interpolation between order statistics (numpy's default, "linear", Hyndman & Fan
    type 7): with the n samples sorted as x[0] <= ... <= x[n-1], percentile q (0..100) is at
    rank r = q / 100 * (n - 1), i = floor(r): x[i] + (r - i) * (x[i + 1] - x[i]) (x[i] when
    i = n - 1). p50 of [1, 2, 3, 4] is 2.5; p99 of 100 samples lies 1% of the way from x[98]
    to x[99]. Throughput is images per second at the mean latency.
    """
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


def interquartile_range(samples_ms: Any) -> float:
    """p75 - p25 of timed calls (as latency_metrics computes percentiles): the spread within which
    two latencies measured side by side are not told apart. 0.0 for fewer than two samples."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size < 2:
        return 0.0
    return float(np.percentile(values, 75) - np.percentile(values, 25))


class Budget(BaseModel):
    """How much a precision may lose against FP32 (`[budgets.<precision>]` in pipeline.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # like every config section

    max_top1_drop: float = Field(1.0, ge=0)  # percentage points below FP32
    min_agreement: float = Field(0.98, ge=0, le=1)  # top-1 agreement with FP32

    def met(self, agreement: float, drop: float) -> bool:
        return not self.misses(agreement, drop)

    def misses(self, agreement: float, drop: float, precision: str = "") -> list[str]:
        """One message per way the measurement misses this budget (empty: met)."""
        prefix = f"{precision}: " if precision else ""
        messages = []
        if drop > self.max_top1_drop + BUDGET_EPSILON:
            messages.append(
                f"{prefix}top-1 drop {drop:.2f} points exceeds budget {self.max_top1_drop:.2f} by "
                f"{drop - self.max_top1_drop:.2f}"
            )
        if agreement < self.min_agreement - BUDGET_EPSILON:
            messages.append(
                f"{prefix}top-1 agreement {agreement:.4f} below budget {self.min_agreement:.4f} by "
                f"{self.min_agreement - agreement:.4f}"
            )
        return messages


def budget_met(budget: Optional[Budget], agreement: float, drop: float) -> bool:
    """No budget configured means nothing to meet."""
    return budget is None or budget.met(agreement, drop)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


# Per-image confidences are rounded so a report of 10,000 images stays a few hundred KB; four
# decimals still order the gallery by confidence lost.
CONFIDENCE_DECIMALS = 4


def image_predictions(logits: np.ndarray, reference: np.ndarray) -> Dict[str, List[Any]]:
    """Per image: the top-1 class, its softmax confidence, and the confidence this graph gives
    to the reference's top-1 class (what the report's gallery sorts the changed answers by)."""
    probs = softmax(logits.astype(np.float64))
    top1 = probs.argmax(axis=1)
    reference_top1 = reference.argmax(axis=1)
    rows = np.arange(len(probs))
    return {
        "top1": [int(c) for c in top1],
        "confidence": np.round(probs[rows, top1], CONFIDENCE_DECIMALS).tolist(),
        "reference_class_confidence": np.round(probs[rows, reference_top1], CONFIDENCE_DECIMALS).tolist(),
    }
