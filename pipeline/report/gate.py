"""The numbers every part of the report reads: the gate (accuracy budgets and the target's
latency budget), the precision chosen for the latency budget, and the summary rows.

The choice: among the precisions within their accuracy budgets (and, when some meet it, the
latency budget), the simplest (fp32, fp16, int8, int8-trt) that no other beats by more than the
timing spread, the larger interquartile range of the two precisions' interleaved timed calls at
batch 1. A precision that is faster only within the noise is not worth the risk of shipping it.

Everything here reads report.json's dictionary only, so the host build, the device finish, the
re-render and the comparison of two bundles all judge a report the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, List, Optional, Tuple

from pipeline.metrics import Budget, interquartile_range, top1_drop
from pipeline.names import FP16, FP32, FP32_TORCH, INT8, INT8_TRT, INT8_TRT_FP16, REFERENCE

# From the simplest precision to ship and run to the most involved: the latency choice keeps the
# simpler of two precisions unless the other is faster by more than the timing spread.
SIMPLEST_FIRST = (FP32, FP16, INT8, INT8_TRT, INT8_TRT_FP16)


@dataclass(frozen=True)
class GateFailure:
    precision: str
    message: str


def result_of(report: Dict[str, Any], precision: str) -> Optional[Dict[str, Any]]:
    return next((r for r in report["results"] if r["precision"] == precision), None)


def latency_at(result: Dict[str, Any], batch: int) -> Optional[Dict[str, Any]]:
    return next((lat for lat in result["latency"] if lat["batch"] == batch), None)


def accuracy_failures(report: Dict[str, Any]) -> List[GateFailure]:
    """Each precision's measurement against its `[budgets.<precision>]` (top-1 drop, agreement)."""
    reference = result_of(report, REFERENCE)
    failures: List[GateFailure] = []
    if reference is None:
        return failures
    for precision, budget in report.get("budgets", {}).items():
        result = result_of(report, precision)
        if result is None:
            continue
        acc = result["accuracy"]
        drop = top1_drop(reference["accuracy"]["top1"], acc["top1"])
        failures += [GateFailure(precision, m) for m in Budget(**budget).misses(acc["agreement"], drop, precision)]
    return failures


def check_gate(report: Dict[str, Any]) -> List[GateFailure]:
    """Budgets of pipeline.toml against the measured results (top-1 drop, agreement, latency)."""
    failures = accuracy_failures(report)
    return failures + _latency_failures(report, {f.precision for f in failures})


def fastest_precision(report: Dict[str, Any], excluded: AbstractSet[str] = frozenset()) -> Optional[Tuple[str, float]]:
    """The engine with the lowest p50 at batch 1 (torch eager is a baseline, not an engine)."""
    candidates = []
    for r in report["results"]:
        lat1 = latency_at(r, 1)
        if r["precision"] != FP32_TORCH and r["precision"] not in excluded and lat1 is not None:
            candidates.append((lat1["p50_ms"], r["precision"]))
    return (min(candidates)[1], min(candidates)[0]) if candidates else None


@dataclass(frozen=True)
class LatencyChoice:
    """The precision chosen for the target's latency budget, and the fastest one measured."""

    precision: str
    p50_ms: float  # at batch 1
    fastest: str
    fastest_p50_ms: float
    spread_ms: float  # the spread the fastest had to beat the chosen one by (0 when it is the chosen one)


def samples_at(result: Dict[str, Any], batch: int) -> List[float]:
    """The timed calls of `result` at `batch` (keys are ints in memory, strings in report.json)."""
    samples = result.get("samples_ms") or {}
    return list(samples.get(batch, samples.get(str(batch), [])))


def timing_spread(a: Dict[str, Any], b: Dict[str, Any], batch: int = 1) -> float:
    """The larger interquartile range of the two results' timed calls at `batch`."""
    return max(interquartile_range(samples_at(a, batch)), interquartile_range(samples_at(b, batch)))


def clearly_faster(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """`a`'s p50 at batch 1 is below `b`'s by more than the timing spread of the two."""
    return latency_at(a, 1)["p50_ms"] < latency_at(b, 1)["p50_ms"] - timing_spread(a, b)


def _simplicity(precision: str) -> int:
    return SIMPLEST_FIRST.index(precision) if precision in SIMPLEST_FIRST else len(SIMPLEST_FIRST)


def choose_precision(report: Dict[str, Any], excluded: AbstractSet[str] = frozenset()) -> Optional[LatencyChoice]:
    """The simplest engine within its accuracy budget (and the latency budget, when some meet
    it) that no other such engine is clearly faster than (see the module's docstring)."""
    candidates = [
        r
        for r in report["results"]
        if r["precision"] != FP32_TORCH and r["precision"] not in excluded and latency_at(r, 1) is not None
    ]
    if not candidates:
        return None
    budget_ms = report.get("latency_budget_ms")
    meeting = [r for r in candidates if budget_ms and latency_at(r, 1)["p50_ms"] <= budget_ms]
    candidates = sorted(meeting or candidates, key=lambda r: _simplicity(r["precision"]))
    chosen = next(r for r in candidates if not any(clearly_faster(other, r) for other in candidates))
    fastest = min(candidates, key=lambda r: latency_at(r, 1)["p50_ms"])
    spread = timing_spread(fastest, chosen) if fastest is not chosen else 0.0
    return LatencyChoice(
        chosen["precision"],
        latency_at(chosen, 1)["p50_ms"],
        fastest["precision"],
        latency_at(fastest, 1)["p50_ms"],
        spread,
    )


def _latency_failures(report: Dict[str, Any], accuracy_failed: AbstractSet[str]) -> List[GateFailure]:
    """The target's latency budget: met when some precision within its accuracy budget is fast enough.

    A CPU proxy measurement says nothing about the device's latency, so it is not gated.
    """
    budget_ms = report.get("latency_budget_ms")
    if not budget_ms or report.get("cpu_proxy"):
        return []
    fastest = fastest_precision(report, accuracy_failed)
    if fastest is None or fastest[1] <= budget_ms:
        return []
    name, p50 = fastest
    return [
        GateFailure(
            "latency",
            f"latency: fastest precision within the accuracy budgets, {name}, has p50 {p50:.3f} ms at batch 1, "
            f"over the {budget_ms:g} ms budget by {p50 - budget_ms:.3f} ms",
        )
    ]


def summary_rows(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per measured runner: what the final table and the Markdown show."""
    reference = result_of(report, REFERENCE)
    torch_row = result_of(report, FP32_TORCH)
    base1 = latency_at(torch_row, 1) if torch_row else None
    rows = []
    for r in report["results"]:
        lat1 = latency_at(r, 1)
        rows.append(
            {
                "precision": r["precision"],
                "top1": 100 * r["accuracy"]["top1"],
                "top5": 100 * r["accuracy"]["top5"],
                "drop": top1_drop(reference["accuracy"]["top1"], r["accuracy"]["top1"]) if reference else None,
                "agreement": 100 * r["accuracy"]["agreement"],
                "cosine": r["accuracy"]["cosine_mean"],
                "max_abs": r["accuracy"]["max_abs_error"],
                "p50_b1": lat1["p50_ms"] if lat1 else None,
                "p99_b1": lat1["p99_ms"] if lat1 else None,
                "speedup_vs_torch": (base1["p50_ms"] / lat1["p50_ms"]) if (lat1 and base1) else None,
                "throughput": max((lat["throughput_ips"] for lat in r["latency"]), default=None),
            }
        )
    return rows
