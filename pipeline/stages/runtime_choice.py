"""runtime_choice: which CPU runtime ships each graph of the cpu target.

Validation measured every graph on each runtime the target allows (ONNX Runtime, OpenVINO), for
accuracy and for latency. Per precision:

- a runtime that could not open the graph is out (its reason is kept);
- of the others, those whose measurement meets the precision's accuracy budget come first (each
  runtime's own INT8 arithmetic is what was measured: OpenVINO's u8/s8 kernels are not ONNX
  Runtime's exact Q/DQ);
- `runtime = "auto"`: the faster at batch 1 (p50) ships when it is faster by more than the two
  measurements' spread (pipeline.report.gate.timing_spread); otherwise ONNX Runtime, the
  runtime every bundle can run;
- `runtime = "onnxruntime"` / `"openvino"`: that runtime, unless it could not open the graph or
  misses a budget the other meets.

The reason is a sentence the report prints beside the choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from pipeline.metrics import Budget, budget_met, interquartile_range, top1_drop
from pipeline.names import FP32_TORCH, REFERENCE, with_variants
from pipeline.report.gate import latency_at, samples_at

ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"


@dataclass
class Measured:
    """One graph on one runtime, as the choice and the report see it."""

    runtime: str
    version: str
    p50_ms: Optional[float]  # batch 1
    spread_ms: float
    agreement: float
    top1_drop: float  # points
    meets_budget: bool


@dataclass
class RuntimeChoice:
    precision: str
    runtime: str  # the runtime that ships the graph
    reason: str
    measured: List[Measured] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)  # runtime -> why it could not open the graph


def runtime_of(result: Dict[str, Any]) -> str:
    """The runtime a result was measured on (results made before runtimes were recorded: ONNX Runtime)."""
    return result.get("runtime") or ONNXRUNTIME


def reference_result(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The FP32 graph on ONNX Runtime: the reference every precision is compared against."""
    return next(r for r in results if r["precision"] == REFERENCE and runtime_of(r) == ONNXRUNTIME)


def _measured(result: Dict[str, Any], reference_top1: float, budget: Optional[Budget]) -> Measured:
    accuracy, runtime, batch1 = result["accuracy"], runtime_of(result), latency_at(result, 1)
    drop = top1_drop(reference_top1, accuracy["top1"])
    return Measured(
        runtime,
        str(result.get("runner", {}).get(runtime, "")),
        batch1["p50_ms"] if batch1 else None,
        interquartile_range(samples_at(result, 1)),
        accuracy["agreement"],
        drop,
        budget_met(budget, accuracy["agreement"], drop),
    )


def choose_runtimes(
    results: List[Dict[str, Any]],
    skipped: List[Dict[str, str]],
    setting: str,
    budget_of: Callable[[str], Optional[Budget]],
    reference_top1: float,
) -> Dict[str, RuntimeChoice]:
    """Per precision measured on a CPU runtime, the runtime that ships it and why."""
    by_precision: Dict[str, List[Dict[str, Any]]] = {}
    for result in results:
        if result["precision"] != FP32_TORCH and runtime_of(result) in (ONNXRUNTIME, OPENVINO):
            by_precision.setdefault(result["precision"], []).append(result)
    choices = {}
    for precision, measured in by_precision.items():
        rows = [_measured(r, reference_top1, budget_of(precision)) for r in measured]
        out = {s["runtime"]: s["reason"] for s in skipped if s["precision"] == precision}
        choices[precision] = _choose(precision, rows, out, setting)
    return choices


def runtime_choices(
    config: Any, target: Any, results: List[Dict[str, Any]], skipped: List[Dict[str, str]]
) -> Dict[str, RuntimeChoice]:
    """A build's choice: {} for TensorRT targets and for a cpu target measured on ONNX Runtime
    alone (nothing to choose), else per precision the runtime that ships it."""
    from pipeline.stages.engine import cpu_runtimes

    if target.backend != "onnxruntime" or len(cpu_runtimes(target)) < 2:
        return {}
    budgets = with_variants(dict(config.budgets))  # int8-trt-fp16 is judged by int8-trt's budget
    return choose_runtimes(results, skipped, target.runtime, budgets.get, reference_result(results)["accuracy"]["top1"])


def _choose(precision: str, rows: List[Measured], skipped: Dict[str, str], setting: str) -> RuntimeChoice:
    by_runtime = {m.runtime: m for m in rows}
    if len(by_runtime) == 1:
        only = rows[0]
        reason = (
            "the only runtime measured"
            if not skipped
            else f"{_other(only.runtime)} cannot run it ({skipped[_other(only.runtime)]})"
        )
        return RuntimeChoice(precision, only.runtime, reason, rows, skipped)
    meeting = [m for m in rows if m.meets_budget]
    if len(meeting) == 1:
        ship, other = meeting[0], by_runtime[_other(meeting[0].runtime)]
        reason = (
            f"{other.runtime} misses the accuracy budget there ({100 * other.agreement:.2f} % agreement, "
            f"{other.top1_drop:+.2f} pts); {ship.runtime} meets it ({100 * ship.agreement:.2f} %, "
            f"{ship.top1_drop:+.2f} pts)"
        )
        return RuntimeChoice(precision, ship.runtime, reason, rows, skipped)
    if setting in (ONNXRUNTIME, OPENVINO):
        return RuntimeChoice(precision, setting, f'runtime = "{setting}"', rows, skipped)
    return _faster(precision, by_runtime[ONNXRUNTIME], by_runtime[OPENVINO], rows, skipped)


def _faster(
    precision: str, ort: Measured, ov: Measured, rows: List[Measured], skipped: Dict[str, str]
) -> RuntimeChoice:
    if ort.p50_ms is None or ov.p50_ms is None:
        return RuntimeChoice(precision, ONNXRUNTIME, "no batch-1 timing to compare", rows, skipped)
    spread = max(ort.spread_ms, ov.spread_ms)
    if ov.p50_ms < ort.p50_ms - spread:
        reason = (
            f"faster: {ov.p50_ms:.3f} ms against onnxruntime's {ort.p50_ms:.3f} ms at batch 1 "
            f"({ort.p50_ms / ov.p50_ms:.2f}x)"
        )
        return RuntimeChoice(precision, OPENVINO, reason, rows, skipped)
    if ort.p50_ms < ov.p50_ms - spread:
        reason = (
            f"faster: {ort.p50_ms:.3f} ms against openvino's {ov.p50_ms:.3f} ms at batch 1 "
            f"({ov.p50_ms / ort.p50_ms:.2f}x)"
        )
    else:
        reason = (
            f"openvino {ov.p50_ms:.3f} ms is within the {spread:.3f} ms spread of onnxruntime's {ort.p50_ms:.3f} ms"
        )
    return RuntimeChoice(precision, ONNXRUNTIME, reason, rows, skipped)


def _other(runtime: str) -> str:
    return OPENVINO if runtime == ONNXRUNTIME else ONNXRUNTIME


def shipped_results(results: List[Dict[str, Any]], choices: Dict[str, RuntimeChoice]) -> List[Dict[str, Any]]:
    """The results of the runners that ship (every other runner's result is left out): one per precision."""

    def ships(result: Dict[str, Any]) -> bool:
        choice = choices.get(result["precision"])
        return choice is None or runtime_of(result) == choice.runtime

    # In the order the precisions were measured in (each precision's first result), whichever
    # runtime ships it: the tables list fp32, fp16, int8, ... whatever runs where.
    position: Dict[str, int] = {}
    for result in results:
        position.setdefault(result["precision"], len(position))
    return sorted((r for r in results if ships(r)), key=lambda r: position[r["precision"]])


def optimized_graphs(engine: Any, models: Dict[str, Any], choices: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The ONNX Runtime optimized graphs the bundle carries: those of the graphs ONNX Runtime
    ships (`choices`: the report's `runtimes`; OpenVINO compiles the graph itself where it runs)."""
    return {p: engine.output(p) for p in models if choices.get(p, {}).get("runtime", ONNXRUNTIME) == ONNXRUNTIME}


def as_json(choices: Dict[str, RuntimeChoice]) -> Dict[str, Any]:
    return {precision: asdict(choice) for precision, choice in choices.items()}
