"""Two reports side by side, for CI: what changed in accuracy and latency per precision, and
whether the candidate regressed against the baseline.

The rules (README "Comparing two builds"):
- accuracy: for each precision of the baseline, the candidate's top-1 may not drop more than the
  precision's budget allows (`[budgets.<precision>] max_top1_drop`, Budget() defaults for a
  precision without one, FP32 included), and when both reports evaluated the same images, the
  candidate's answers must agree with the baseline's on at least `min_agreement` of them;
- latency: p50 at batch 1 is a regression when it is slower by more than `max_slowdown` (10%)
  AND by more than `min_slowdown_ms` (0.1 ms): the relative rule ignores noise on big numbers,
  the absolute one noise on sub-millisecond ones. Latency is compared only when both reports
  were measured on the same machine (same device, or same host CPU and core count, and neither
  or both on the CPU proxy); otherwise the comparison says so and judges accuracy only;
- a precision the baseline measured and the candidate did not is a regression.
The torch eager baseline is no engine and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pipeline.metrics import Budget, top1_drop
from pipeline.names import FP32_TORCH
from pipeline.report.gate import latency_at, result_of


@dataclass(frozen=True)
class LatencyRule:
    max_slowdown: float = 0.10  # fraction of the baseline's p50
    min_slowdown_ms: float = 0.1

    def regressed(self, before_ms: float, after_ms: float) -> bool:
        return after_ms > before_ms * (1 + self.max_slowdown) and after_ms - before_ms > self.min_slowdown_ms


@dataclass
class PrecisionChange:
    precision: str
    top1_before: Optional[float]  # %
    top1_after: Optional[float]  # %
    agreement: Optional[float]  # share of images where both give the same answer (same images only)
    p50_before: Optional[float]  # ms, batch 1
    p50_after: Optional[float]
    regressions: List[str] = field(default_factory=list)

    @property
    def top1_change(self) -> Optional[float]:
        return None if self.top1_before is None or self.top1_after is None else self.top1_after - self.top1_before

    @property
    def p50_change(self) -> Optional[float]:
        """Relative change of p50 (0.12: 12% slower)."""
        if not self.p50_before or self.p50_after is None:
            return None
        return self.p50_after / self.p50_before - 1


@dataclass
class Comparison:
    candidate: str
    baseline: str
    rows: List[PrecisionChange]
    notes: List[str]
    rule: LatencyRule

    @property
    def regressions(self) -> List[str]:
        return [m for row in self.rows for m in row.regressions]


def measured_on(report: Dict[str, Any]) -> str:
    """Where the latencies were measured: the device, or the host CPU (and whether a proxy)."""
    devices = sorted(
        {str(r.get("runner", {}).get("device")) for r in report["results"] if r.get("runner", {}).get("device")}
    )
    if devices:
        return "device " + ", ".join(devices)
    host = report.get("host", {})
    proxy = " (CPU proxy)" if report.get("cpu_proxy") else ""
    return f"{host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores{proxy}"


def same_images(candidate: Dict[str, Any], baseline: Dict[str, Any]) -> bool:
    """Both reports evaluated the same images in the same order (per-image answers comparable)."""
    a, b = candidate.get("evaluation_set_sha256"), baseline.get("evaluation_set_sha256")
    labels_a = (candidate.get("per_image") or {}).get("labels")
    labels_b = (baseline.get("per_image") or {}).get("labels")
    return bool(a and a == b and labels_a is not None and labels_a == labels_b)


def _answer_agreement(candidate: Dict[str, Any], baseline: Dict[str, Any]) -> Optional[float]:
    a, b = candidate.get("predictions", {}).get("top1"), baseline.get("predictions", {}).get("top1")
    if not a or not b or len(a) != len(b):
        return None
    return sum(x == y for x, y in zip(a, b)) / len(a)


def _budget(candidate: Dict[str, Any], baseline: Dict[str, Any], precision: str) -> Budget:
    budget = candidate.get("budgets", {}).get(precision) or baseline.get("budgets", {}).get(precision)
    return Budget(**budget) if budget else Budget()


def compare_reports(
    candidate: Dict[str, Any], baseline: Dict[str, Any], rule: LatencyRule = LatencyRule()
) -> Comparison:
    comparable_images = same_images(candidate, baseline)
    comparable_latency = measured_on(candidate) == measured_on(baseline)
    notes = []
    if not comparable_images:
        notes.append(
            "the reports evaluated different images (or one has no per-image answers): answers are not "
            "compared image by image, only top-1"
        )
    if not comparable_latency:
        notes.append(
            f"latency not compared: measured on {measured_on(candidate)} (candidate) and "
            f"{measured_on(baseline)} (baseline)"
        )
    rows = []
    for before in baseline["results"]:
        precision = before["precision"]
        if precision == FP32_TORCH:
            continue
        after = result_of(candidate, precision)
        if after is None:
            rows.append(
                PrecisionChange(
                    precision,
                    100 * before["accuracy"]["top1"],
                    None,
                    None,
                    None,
                    None,
                    [f"{precision}: measured in the baseline, missing in the candidate"],
                )
            )
            continue
        rows.append(
            _compare_precision(
                before, after, _budget(candidate, baseline, precision), comparable_images, comparable_latency, rule
            )
        )
    added = [
        r["precision"]
        for r in candidate["results"]
        if r["precision"] != FP32_TORCH and result_of(baseline, r["precision"]) is None
    ]
    if added:
        notes.append(f"new in the candidate (nothing to compare with): {', '.join(added)}")
    return Comparison(candidate["bundle"], baseline["bundle"], rows, notes, rule)


def _compare_precision(
    before: Dict[str, Any], after: Dict[str, Any], budget: Budget, same: bool, timed: bool, rule: LatencyRule
) -> PrecisionChange:
    precision = before["precision"]
    agreement = _answer_agreement(after, before) if same else None
    lat_before, lat_after = latency_at(before, 1), latency_at(after, 1)
    change = PrecisionChange(
        precision,
        100 * before["accuracy"]["top1"],
        100 * after["accuracy"]["top1"],
        agreement,
        lat_before["p50_ms"] if lat_before else None,
        lat_after["p50_ms"] if lat_after else None,
    )
    drop = top1_drop(before["accuracy"]["top1"], after["accuracy"]["top1"])
    # Without per-image answers there is no agreement to judge: only the top-1 rule applies.
    misses = budget.misses(1.0 if agreement is None else agreement, drop)
    change.regressions += [
        f"{precision}: {m.replace('top-1 agreement', 'agreement with the baseline')} (vs baseline)" for m in misses
    ]
    if (
        timed
        and change.p50_before is not None
        and change.p50_after is not None
        and rule.regressed(change.p50_before, change.p50_after)
    ):
        change.regressions.append(
            f"{precision}: p50 at batch 1 {change.p50_after:.3f} ms vs {change.p50_before:.3f} ms in the baseline "
            f"({100 * (change.p50_change or 0):+.1f}%, over the {100 * rule.max_slowdown:g}% and "
            f"{rule.min_slowdown_ms:g} ms allowed)"
        )
    return change
