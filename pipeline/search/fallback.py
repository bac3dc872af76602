"""The mixed-precision fallback: when an INT8 graph misses its budget, keep the modules whose
quantization costs the most in FP32, as few as meet the budget.

The search knows nothing of ONNX Runtime or calibration: it is given a graph writer (which
nodes to leave unquantized -> a graph file) and scorers (a graph file -> a `Score`), so its
policy (order, stop rule, `max_fp32_layers`, probe count) is testable on its own.

Two phases, so that its cost grows with the modules once, not with modules x photos x steps:
- rank: one probe per module (only it in FP32), scored on a seeded subset of the calibration
  photos (`rank`): the logit error a module's FP32 copy removes orders them, then the agreement
  it wins back. On a few hundred photos most modules win back zero or one answer, so agreement
  alone orders them by chance; the logit error is continuous, stable on a subset, and is what
  the answers that flip on unseen photos follow.
- confirm, on every calibration photo (`score`): first the longest prefix allowed
  (`max_fp32_layers`): when even that misses the budget, the search stops there and says so;
  else a bisection finds the shortest prefix of the ranking that meets it (about log2 of
  `max_fp32_layers` probes instead of one per module).
A deadline (`FallbackPolicy.deadline`) stops either phase early; the search then keeps the best
graph found and says so.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from pipeline.graphs.query import read_graph
from pipeline.metrics import Budget, budget_met
from pipeline.progress import ProgressFn, Step, silent

# (destination, node names to keep in FP32) -> writes the graph at destination
GraphWriter = Callable[[Path, List[str]], None]
# The cost below which keeping a module in FP32 counts as free, as a share of what keeping every
# module would cost: profiles of sub-0.01 ms nodes are noise, and a module INT8 does not speed up
# is ranked by the error it removes alone.
LATENCY_FLOOR_SHARE = 0.01
# Prices are rounded to this share of that total before they order the modules: a profile's
# run-to-run noise is a few percent of a node's time, and two cold builds of the same model on the
# same CPU should keep the same modules (prices within one step tie, and the error they remove
# decides).
PRICE_STEP_SHARE = 0.02


@dataclass(frozen=True)
class Score:
    """A graph against FP32 on calibration photos: top-1 agreement, top-1 drop in points and,
    when measured, the mean squared logit error."""

    agreement: float
    top1_drop: float
    logit_error: Optional[float] = None

    @classmethod
    def of(cls, value: Union["Score", Sequence[float]]) -> "Score":
        """A Score from a Score or an (agreement, drop[, logit error]) tuple."""
        if isinstance(value, Score):
            return value
        return cls(
            float(value[0]), float(value[1]), float(value[2]) if len(value) > 2 and value[2] is not None else None
        )

    @property
    def error(self) -> float:
        return self.logit_error if self.logit_error is not None else 0.0

    def meets(self, budget: Optional[Budget]) -> bool:
        return budget_met(budget, self.agreement, self.top1_drop)


# graph file -> its Score (or an (agreement, drop[, logit error]) tuple)
Scorer = Callable[[Path], Union[Score, Tuple[float, ...]]]


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
    probes: Dict[str, int] = field(default_factory=dict)  # graphs written and scored, per phase
    notes: List[str] = field(default_factory=list)  # why the search stopped where it did

    def take(self, score: Score) -> None:
        self.agreement, self.top1_drop, self.logit_error = score.agreement, score.top1_drop, score.logit_error


def module_of(node_name: str) -> str:
    """`/vt.0/tokenizer/MatMul_1` -> `/vt.0/tokenizer`: the torch module that made the node."""
    return node_name.rsplit("/", 1)[0] if "/" in node_name else node_name


def quantizable_groups(fp32_path: Path, export_nodes: List[Dict[str, Any]], ops: Iterable[str]) -> Dict[str, List[str]]:
    """Module path -> names of the quantizable nodes it owns in the simplified graph.

    Simplification may rename nodes, so the module path is looked up in the export's node
    table: first by node name, then by the node's output tensor names.
    """

    by_name = {n["name"]: n["name"] for n in export_nodes}
    by_output = {out: n["name"] for n in export_nodes for out in n["outputs"]}
    wanted = set(ops)
    groups: Dict[str, List[str]] = {}
    for node in read_graph(fp32_path).node:
        if node.op_type not in wanted:
            continue
        origin = by_name.get(node.name) or next((by_output[o] for o in node.output if o in by_output), node.name)
        groups.setdefault(module_of(origin), []).append(node.name)
    return groups


def measure_sensitivity(
    groups: Dict[str, List[str]],
    write: GraphWriter,
    score: Scorer,
    baseline: Score,
    watch: Optional["SearchWatch"] = None,
    work: Optional[Path] = None,
) -> List[Dict[str, Any]]:
    """Per module, the agreement gained (and logit error removed) by keeping only it in FP32;
    costliest first. With `watch`, each probe is counted and reported, and past its deadline
    the modules not yet probed are left out of the ranking. The probe graphs are written in a
    temporary folder under `work` (the stage's own folder, swept if a build is killed)."""
    watch = watch or SearchWatch()
    sensitivity = []
    with tempfile.TemporaryDirectory(prefix=".sensitivity.", dir=work) as tmp:
        probe = Path(tmp) / "probe.onnx"
        for index, (module, names) in enumerate(groups.items()):
            if watch.past_deadline():
                watch.notes.append(f"time bound reached while ranking: {index} of {len(groups)} modules ranked")
                break
            write(probe, list(names))
            scored = Score.of(score(probe))
            watch.probed("rank", index + 1, len(groups), module)
            sensitivity.append(
                {
                    "module": module,
                    "nodes": len(names),
                    "agreement_without": scored.agreement,
                    "gain": scored.agreement - baseline.agreement,
                    "error_gain": baseline.error - scored.error,
                }
            )
    sensitivity.sort(key=lambda item: (item["error_gain"], item["gain"]), reverse=True)
    return sensitivity


@dataclass
class SearchWatch:
    """What the search reports while it runs: probes per phase, progress, the deadline."""

    progress: ProgressFn = silent
    task: str = "fallback"
    deadline: Optional[float] = None  # time.monotonic() after which the search keeps the best graph found
    probes: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def probed(self, phase: str, done: int, total: int, detail: str = "") -> None:
        self.probes[phase] = self.probes.get(phase, 0) + 1
        self.progress(Step(f"{self.task}: {phase}", done, total, detail))


@dataclass
class FallbackPolicy:
    """When to stop: the budget to meet and the most modules that may be kept in FP32."""

    budget: Optional[Budget]
    max_fp32_layers: int


# (the fully quantized graph, module -> its nodes) -> module -> milliseconds keeping it in FP32 costs
Pricer = Callable[[Path, Dict[str, List[str]]], Dict[str, float]]


@dataclass
class SearchProbe:
    """How the search makes and judges graphs: `score` decides (every calibration photo);
    `rank` orders the modules (a seeded subset; `score` when not given); `price`, when given,
    makes the order latency-aware: logit error removed per millisecond lost (node_cost)."""

    write: GraphWriter
    score: Scorer
    rank: Optional[Scorer] = None
    price: Optional[Pricer] = None


def keep_costliest_in_fp32(
    flavour: str,
    destination: Path,
    groups: Dict[str, List[str]],
    probe: Union[SearchProbe, Tuple[GraphWriter, Scorer]],
    policy: FallbackPolicy,
    watch: Optional[SearchWatch] = None,
) -> Int8Outcome:
    """The fully quantized graph if it meets the budget; else the shortest prefix of the
    costliest modules that does, kept in FP32 (at most `max_fp32_layers`; when even those miss
    the budget, all of them, and a note says so). The graph at `destination` is the outcome's."""
    probe = probe if isinstance(probe, SearchProbe) else SearchProbe(*probe)
    watch = watch or SearchWatch(task=flavour)
    probe.write(destination, [])
    scored = Score.of(probe.score(destination))
    outcome = Int8Outcome(flavour, scored.agreement, scored.top1_drop, logit_error=scored.logit_error)
    if scored.meets(policy.budget) or policy.max_fp32_layers == 0 or not groups:
        return outcome
    baseline = scored if probe.rank is None else Score.of(probe.rank(destination))
    kept_ms = probe.price(destination, groups) if probe.price is not None else None
    outcome.sensitivity = measure_sensitivity(
        groups, probe.write, probe.rank or probe.score, baseline, watch, destination.parent
    )
    # Only modules whose FP32 copy removes some error (or wins back an answer) are candidates:
    # keeping any other buys nothing.
    helpful = {item["module"] for item in outcome.sensitivity if item["error_gain"] > 0 or item["gain"] > 0}
    ranked = [module for module in _ranked(outcome.sensitivity, kept_ms) if module in helpful]
    _shortest_prefix(outcome, ranked[: policy.max_fp32_layers], (probe, destination, groups), policy.budget, watch)
    outcome.probes, outcome.notes = dict(watch.probes), list(watch.notes)
    return outcome


def _ranked(sensitivity: List[Dict[str, Any]], kept_ms: Optional[Dict[str, float]]) -> List[str]:
    """The search's order: by the logit error each module's FP32 copy removes, per millisecond
    it costs when priced (each entry then records its `cost_ms`)."""
    from pipeline.search.node_cost import latency_order

    if kept_ms is None:
        return [item["module"] for item in sensitivity]
    total = sum(max(ms, 0.0) for ms in kept_ms.values())
    step = max(PRICE_STEP_SHARE * total, 1e-6)
    priced = {module: round(ms / step) * step for module, ms in kept_ms.items()}
    for item in sensitivity:
        item["cost_ms"] = round(priced.get(item["module"], 0.0), 5)
    floor = max(LATENCY_FLOOR_SHARE * total, 1e-6)
    order = latency_order({item["module"]: item["error_gain"] for item in sensitivity}, priced, floor)
    position = {module: i for i, module in enumerate(order)}
    sensitivity.sort(key=lambda item: position[item["module"]])
    return order


def _shortest_prefix(
    outcome: Int8Outcome,
    ranked: List[str],
    where: Tuple[SearchProbe, Path, Dict[str, List[str]]],
    budget: Optional[Budget],
    watch: SearchWatch,
) -> None:
    """Bisect for the shortest prefix of `ranked` that meets the budget (the longest first)."""
    probe, destination, groups = where
    written: Dict[int, Score] = {}

    def graph(count: int) -> Path:
        return destination.with_name(f"{destination.stem}.fp32-{count}{destination.suffix}")

    def attempt(count: int) -> Score:
        probe.write(graph(count), [n for module in ranked[:count] for n in groups[module]])
        written[count] = Score.of(probe.score(graph(count)))
        watch.probed("confirm", len(written), max(len(written), 1 + math.ceil(math.log2(max(len(ranked), 1)))))
        return written[count]

    if not ranked:
        return
    longest = attempt(len(ranked))
    low, high = 0, len(ranked)  # the shortest prefix that meets the budget lies in (low, high]
    if not longest.meets(budget):
        watch.notes.append(f"budget not reached with the {len(ranked)} costliest module(s) in FP32 (the most allowed)")
    while longest.meets(budget) and high - low > 1 and not watch.past_deadline():
        middle = (low + high) // 2
        low, high = (low, middle) if attempt(middle).meets(budget) else (middle, high)
    if high - low > 1 and longest.meets(budget):
        watch.notes.append(f"time bound reached while confirming: kept {high} module(s), fewer may do")
    graph(high).replace(destination)
    for count in written:
        graph(count).unlink(missing_ok=True)
    outcome.fp32_layers = ranked[:high]
    outcome.take(written[high])
