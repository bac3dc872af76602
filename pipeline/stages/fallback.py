"""The mixed-precision fallback: when an INT8 graph misses its budget, keep the modules whose
quantization costs the most in FP32, one at a time, until the budget is met.

The search knows nothing of ONNX Runtime or calibration: it is given a graph writer (which
nodes to leave unquantized -> a graph file) and a scorer (a graph file -> agreement with FP32,
top-1 drop and, optionally, the mean squared logit error against FP32), so its policy (order,
stop rule, `max_fp32_layers`) is testable on its own.

Cost order: the logit error a module's FP32 copy removes (when the scorer measures it), then
the agreement it wins back. On a few hundred calibration images most modules win back zero or
one answer, so agreement alone orders them by chance; the logit error is continuous and is what
the answers that flip on unseen images follow.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pipeline.metrics import Budget, budget_met

# (destination, node names to keep in FP32) -> writes the graph at destination
GraphWriter = Callable[[Path, List[str]], None]
# graph file -> (top-1 agreement with FP32, top-1 drop in points[, mean squared logit error])
Scorer = Callable[[Path], Tuple[float, ...]]


@dataclass
class Int8Outcome:
    """How an INT8 graph was made and how it did on the calibration images.

    `agreement` and `top1_drop` are the values its budget was checked with on the calibration
    images (the scorer's: for the pipeline, a lower bound on agreement and the drop less its
    noise); the evaluation images' numbers are the validate stage's."""

    flavour: str
    agreement: float
    top1_drop: float
    fp32_layers: List[str] = field(default_factory=list)
    sensitivity: List[Dict[str, Any]] = field(default_factory=list)
    methods: List[str] = field(default_factory=list)  # the means that made the graph, in order
    logit_error: Optional[float] = None  # mean squared logit error against FP32 (calibration images)


def module_of(node_name: str) -> str:
    """`/vt.0/tokenizer/MatMul_1` -> `/vt.0/tokenizer`: the torch module that made the node."""
    return node_name.rsplit("/", 1)[0] if "/" in node_name else node_name


def quantizable_groups(fp32_path: Path, export_nodes: List[Dict[str, Any]], ops: Iterable[str]) -> Dict[str, List[str]]:
    """Module path -> names of the quantizable nodes it owns in the simplified graph.

    Simplification may rename nodes, so the module path is looked up in the export's node
    table: first by node name, then by the node's output tensor names.
    """
    import onnx

    by_name = {n["name"]: n["name"] for n in export_nodes}
    by_output = {out: n["name"] for n in export_nodes for out in n["outputs"]}
    wanted = set(ops)
    groups: Dict[str, List[str]] = {}
    for node in onnx.load(str(fp32_path)).graph.node:
        if node.op_type not in wanted:
            continue
        origin = by_name.get(node.name) or next((by_output[o] for o in node.output if o in by_output), node.name)
        groups.setdefault(module_of(origin), []).append(node.name)
    return groups


def _error(scored: Tuple[float, ...]) -> float:
    return float(scored[2]) if len(scored) > 2 and scored[2] is not None else 0.0


def measure_sensitivity(groups: Dict[str, List[str]], write: GraphWriter, score: Scorer, baseline: Tuple[float, ...],
                        work: Path) -> List[Dict[str, Any]]:
    """Per module, the agreement gained (and logit error removed) by keeping only it in FP32;
    costliest first. The probe graphs are written in a temporary folder under `work`."""
    sensitivity = []
    with tempfile.TemporaryDirectory(prefix=".sensitivity.", dir=work) as tmp:
        probe = Path(tmp) / "probe.onnx"
        for module, names in groups.items():
            write(probe, list(names))
            scored = score(probe)
            sensitivity.append({"module": module, "nodes": len(names), "agreement_without": scored[0],
                                "gain": scored[0] - baseline[0], "error_gain": _error(baseline) - _error(scored)})
    sensitivity.sort(key=lambda item: (item["error_gain"], item["gain"]), reverse=True)
    return sensitivity


@dataclass
class FallbackPolicy:
    """When to stop: the budget to meet and the most modules that may be kept in FP32."""

    budget: Optional[Budget]
    max_fp32_layers: int


def keep_costliest_in_fp32(
    flavour: str,
    destination: Path,
    groups: Dict[str, List[str]],
    probe: Tuple[GraphWriter, Scorer],
    policy: FallbackPolicy,
) -> Int8Outcome:
    """The fully quantized graph if it meets `budget`; else the costliest modules kept in FP32,
    added one at a time until the budget is met or `max_fp32_layers` are kept."""
    (write, score), budget, max_fp32_layers = probe, policy.budget, policy.max_fp32_layers
    write(destination, [])
    scored = score(destination)
    outcome = Int8Outcome(flavour, scored[0], scored[1], logit_error=scored[2] if len(scored) > 2 else None)
    if budget_met(budget, outcome.agreement, outcome.top1_drop) or max_fp32_layers == 0 or not groups:
        return outcome
    outcome.sensitivity = measure_sensitivity(groups, write, score, scored, destination.parent)
    for item in outcome.sensitivity[:max_fp32_layers]:
        outcome.fp32_layers.append(item["module"])
        write(destination, [n for module in outcome.fp32_layers for n in groups[module]])
        scored = score(destination)
        outcome.agreement, outcome.top1_drop = scored[0], scored[1]
        outcome.logit_error = scored[2] if len(scored) > 2 else None
        if budget_met(budget, outcome.agreement, outcome.top1_drop):
            break
    return outcome
