"""precision: the graphs a target needs beyond FP32, made from one cached calibration.

- `fp16`: casts in the graph (pipeline.graphs.fp16).
- `int8`, `int8-trt`: Q/DQ graphs (pipeline.graphs.quantize) from the calibrate stage's ranges.
  When one misses its accuracy budget on the calibration images, the means are tried in order of
  cost: a quantization-aware fine-tune of its weights (pipeline.search.qat, `finetune_steps`),
  then the fallback search (pipeline.search.fallback), which keeps its costliest modules in FP32
  and says which. Each graph's `methods` list says what was used.
- `int8-trt-fp16`: the final `int8-trt` graph with FP16 outside its Q/DQ pairs, for strongly
  typed TensorRT (pipeline.graphs.fp16.qdq_to_fp16).

The evaluation images are never seen here: every decision is scored on the calibration images.
TensorRT graphs are scored with exact Q/DQ arithmetic (what TensorRT computes), the `int8` graph
through ONNX Runtime's fused integer kernels (what the CPU target runs).
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import StageCache, StageResult, sha256_file
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.config import Config, TargetConfig
from pipeline.graphs import quantize
from pipeline.graphs.fp16 import convert_fp16, qdq_to_fp16
from pipeline.host import host_info, tool_versions
from pipeline.metrics import Budget, agreement_lower_bound, budget_met, top1_accuracy, top1_drop
from pipeline.names import FP16, FP32, INT8, INT8_FLAVOURS, INT8_TRT, INT8_TRT_FP16, TENSORRT_GRAPHS
from pipeline.progress import ProgressFn, or_silent, quiet
from pipeline.search.fallback import (
    FallbackPolicy,
    Int8Outcome,
    Score,
    SearchProbe,
    SearchWatch,
    keep_costliest_in_fp32,
    quantizable_groups,
)
from pipeline.stages.calibrate import load_tensors_data

# 7: search before fine-tune, ranked on a subset, bisected; 8: int8 quantizes matrix products only; 9: int8 ranked
# per ms; 10: a cache entry per flavour; 11: int8-trt priced by OpenVINO on a cpu target, prices rounded to steps
STAGE_VERSION = "11"


@dataclass
class CalibrationScorer:
    """Scores a graph against the FP32 reference on the calibration images."""

    images: np.ndarray
    labels: np.ndarray
    fp32_logits: np.ndarray
    qdq_fusion: bool = True  # False: exact Q/DQ arithmetic (TensorRT graphs)

    def score(self, onnx_path: Path) -> Score:
        """Agreement with FP32, top-1 drop in points and mean squared logit error of a graph on
        the calibration images, as its budget is checked on them.

        A few hundred images measure agreement and drop in steps of one answer, and a budget met
        by a margin of one or two answers there is often missed on the evaluation images. So the
        agreement is a lower bound (two standard errors) under the measured and the expected agreement
        (pipeline.metrics.agreement_lower_bound), and the drop is counted less one standard error
        of the changed answers (each as likely to gain an answer as to lose one): the agreement
        bound already keeps the answers that can change few.
        """
        logits = onnx_logits(onnx_path, self.images, qdq_fusion=self.qdq_fusion)
        drop = top1_drop(top1_accuracy(self.fp32_logits, self.labels), top1_accuracy(logits, self.labels))
        changed = int(np.sum(logits.argmax(1) != self.fp32_logits.argmax(1)))
        noise = 100.0 * float(np.sqrt(changed)) / max(len(self.labels), 1)
        return Score(
            agreement_lower_bound(logits, self.fp32_logits),
            drop - noise,
            float(np.mean((logits - self.fp32_logits) ** 2)),
        )

    def for_graph(self, name: str) -> "CalibrationScorer":
        return replace(self, qdq_fusion=name not in TENSORRT_GRAPHS)

    def subset(self, count: int, seed: int = 0) -> "CalibrationScorer":
        """The same scorer on a seeded choice of `count` of its photos (all of them when 0 or more)."""
        if count <= 0 or count >= len(self.labels):
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self.labels), count, replace=False))
        return replace(
            self, images=self.images[chosen], labels=self.labels[chosen], fp32_logits=self.fp32_logits[chosen]
        )


@dataclass
class Int8Job:
    """What every INT8 flavour of one build is made from."""

    fp32_path: Path
    tensors_data: Any  # ONNX Runtime TensorsData from the calibrate stage
    scorer: CalibrationScorer
    export_nodes: List[Dict[str, Any]]  # the export's node table: module paths
    max_fp32_layers: int
    finetune: Any = None  # pipeline.search.qat.FinetuneSettings; None or 0 steps: no fine-tune
    finetune_images: Optional[np.ndarray] = None  # defaults to the calibration images
    calibration: str = ""  # how the ranges were made, for the methods list
    rank_images: int = 0  # calibration photos the fallback ranks modules on (0: all)
    search: SearchWatch = field(default_factory=SearchWatch)  # progress and the time bound
    fp32_graph: Optional[quantize.Fp32Graph] = None  # the FP32 graph, read once (load_fp32)
    threads: int = 0  # the CPU target's session threads (its profile prices the modules)
    pricing: Dict[str, str] = field(default_factory=dict)  # flavour -> the CPU runtime whose profile prices its modules

    def fp32(self) -> Any:
        if self.fp32_graph is None:
            self.fp32_graph = quantize.load_fp32(self.fp32_path)
        return self.fp32_graph


def base_methods(job: Int8Job, flavour: str) -> List[str]:
    """What every graph of the flavour is made with, before any escalation."""
    scheme = quantize.RECIPES[flavour].scheme
    return [
        f"calibration: {job.calibration}" if job.calibration else "calibration",
        scheme,
        "MatMuls between two activations in float",
    ]


def _writer(job: Int8Job, flavour: str, fp32: Any = None) -> Callable[[Path, List[str]], None]:
    def write(path: Path, keep_fp32: List[str]) -> None:
        # Looked up on the module at call time, so a test can interrupt the writer.
        quantize.quantize_graph(
            fp32 if fp32 is not None else job.fp32(), path, job.tensors_data, flavour, exclude=keep_fp32
        )

    return write


def _finetuned(
    job: Int8Job, flavour: str, destination: Path, keep_fp32: List[str], scored: Score
) -> Tuple[Optional[Score], str]:
    """Fine-tune the weights of the Q/DQ graph at `destination` (QAT; `keep_fp32` are the nodes
    it leaves unquantized) and put the re-quantized graph there when it lowers the logit error
    on the calibration images. (Its score, or None when not kept; the line for the methods list.)"""
    from pipeline.graphs.twin import TwinUnsupportedOp
    from pipeline.search import qat

    images = job.finetune_images if job.finetune_images is not None else job.scorer.images
    settings = replace(job.finetune, deadline=job.search.deadline)
    task = lambda step: job.search.progress(replace(step, task=f"{flavour}: {step.task}"))  # noqa: E731
    try:
        result = qat.finetune(destination, job.fp32_path, images, settings, task)
    except TwinUnsupportedOp as exc:
        return None, f"no quantization-aware fine-tune: {exc}"
    tuned = destination.with_name(destination.stem + ".finetuned-fp32.onnx")
    qat.write_weights(job.fp32_path, result.weights, tuned)
    probe = destination.with_name(destination.stem + ".finetuned.onnx")
    _writer(job, flavour, tuned)(probe, keep_fp32)
    after = Score.of(job.scorer.for_graph(flavour).score(probe))
    line = (
        f"quantization-aware fine-tune: {result.steps_run} of {settings.steps} steps ({result.stopped}, "
        f"{result.device}) on {len(images)} photos, logit error {scored.error:.4g} -> {after.error:.4g}, "
        f"agreement bound {scored.agreement:.4f} -> {after.agreement:.4f} (calibration images)"
    )
    if after.error >= scored.error:
        probe.unlink()
        return None, line + "; not kept"
    probe.replace(destination)
    return after, line


def _finetune_wanted(job: Int8Job) -> bool:
    return job.finetune is not None and job.finetune.steps > 0


def int8_with_fallback(
    job: Int8Job, flavour: str, destination: Path, budget: Optional[Budget], log: Callable[[str], Any] = quiet
) -> Int8Outcome:
    """The flavour's Q/DQ graph at `destination`: post-training quantization; while its budget is
    missed on the calibration images, the fallback search (as few FP32 modules as meet it); when
    even the most FP32 modules allowed miss it, a fine-tune of the graph they leave. The search
    comes first because it costs a few scoring passes, a fine-tune hundreds of training steps."""
    scorer, methods = job.scorer.for_graph(flavour), base_methods(job, flavour)
    groups = _fallback_groups(job, flavour)
    policy = FallbackPolicy(budget, job.max_fp32_layers)
    ranker = scorer.subset(job.rank_images)
    runtime = job.pricing.get(flavour)
    probe = SearchProbe(_writer(job, flavour), scorer.score, ranker.score, _pricer(job, runtime) if runtime else None)
    watch = replace(job.search, task=flavour, probes={}, notes=[])
    outcome = keep_costliest_in_fp32(flavour, destination, groups, probe, policy, watch)
    outcome.methods = methods
    if outcome.fp32_layers:
        nodes = sum(len(names) for names in groups.values())
        log(
            f"  {flavour}: missed its budget; kept {len(outcome.fp32_layers)} module(s) in FP32 of "
            f"{len(groups)} ({nodes} quantizable nodes)"
        )
        per_ms = (
            f" per millisecond they cost ({RUNTIME_NAMES[runtime]}'s per-node profile on this CPU)" if runtime else ""
        )
        methods.append(
            f"FP32 fallback: {len(outcome.fp32_layers)} module(s), ranked by the logit error they remove{per_ms} on "
            f"{len(ranker.labels)} photos, confirmed on {len(scorer.labels)} ({_probe_line(outcome)})"
        )
    methods.extend(outcome.notes)
    if budget_met(budget, outcome.agreement, outcome.top1_drop) or not _finetune_wanted(job):
        return outcome
    kept = [n for module in outcome.fp32_layers for n in groups[module]]
    log(f"  {flavour}: still over budget; fine-tuning (up to {job.finetune.steps} steps)")
    after, line = _finetuned(
        job, flavour, destination, kept, Score(outcome.agreement, outcome.top1_drop, outcome.logit_error)
    )
    methods.append(line)
    if after is not None:
        outcome.take(after)
    return outcome


PROFILE_RUNS = 30
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def pricing_runtimes(target: TargetConfig) -> Dict[str, str]:
    """The flavours whose fallback weighs speed, with the CPU runtime whose per-node profile
    prices their modules: `int8` runs on the CPU runtimes (ONNX Runtime's profile); `int8-trt`
    on a cpu target that measures OpenVINO, which ships it there (ONNX Runtime runs its exact
    Q/DQ arithmetic, never faster). A TensorRT target's graphs are timed on its device, not here."""
    from pipeline.stages.engine import cpu_runtimes

    pricing = {INT8: "onnxruntime"} if INT8 in target.precisions else {}
    if INT8_TRT in target.precisions and target.backend == "onnxruntime" and "openvino" in cpu_runtimes(target):
        pricing[INT8_TRT] = "openvino"
    return pricing


def _pricer(job: Int8Job, runtime: str) -> Callable[[Path, Dict[str, List[str]]], Dict[str, float]]:
    def price(quantized: Path, groups: Dict[str, List[str]]) -> Dict[str, float]:
        from pipeline.search.node_cost import Profiling, module_costs

        costs = module_costs(
            job.fp32_path, quantized, groups, job.scorer.images[:1], Profiling(runtime, PROFILE_RUNS, job.threads)
        )
        return {module: cost.kept_fp32_ms for module, cost in costs.items()}

    return price


def _pricing_versions(pricing: Dict[str, str]) -> Dict[str, str]:
    """flavour -> "runtime version": the cache key's record of what priced each flavour's modules."""
    versions = tool_versions(sorted(set(pricing.values())))
    return {flavour: f"{runtime} {versions[runtime]}" for flavour, runtime in sorted(pricing.items())}


def _probe_line(outcome: Int8Outcome) -> str:
    return ", ".join(f"{count} {phase} probes" for phase, count in outcome.probes.items())


def _fallback_groups(job: Int8Job, flavour: str) -> Dict[str, List[str]]:
    """The modules the fallback may keep in FP32, with their quantized nodes (MatMuls between
    two activations are never quantized, so they are no candidates)."""
    graph = job.fp32()
    float_already = set(graph.activation_matmuls)
    groups = quantizable_groups(job.fp32_path, job.export_nodes, quantize.fallback_ops(flavour))
    kept = {module: [n for n in names if n not in float_already] for module, names in groups.items()}
    return {module: names for module, names in kept.items() if names}


@dataclass(frozen=True)
class FlavourKey:
    """Where an INT8 flavour's own cache entry lives and what it is keyed by: the stage's inputs
    and versions, and its settings without the other precisions' (a finished flavour survives a
    change of theirs)."""

    cache: StageCache
    inputs: Dict[str, str]
    settings: Dict[str, Any]
    versions: Dict[str, str]


def _make_int8(
    config: Config,
    job: Callable[[], Int8Job],
    flavours: List[str],
    workdir: Path,
    log: Callable[[str], Any],
    key: FlavourKey,
) -> Dict[str, Any]:
    """Each flavour as a cache entry of its own (`precision-<flavour>`), copied into the stage's
    folder: a build killed while making one flavour redoes only the flavours it had not finished,
    and `job` (the FP32 answers on every calibration photo) is made only for a flavour to make."""
    outputs: Dict[str, Any] = {}
    for flavour in flavours:
        others = ("budgets", "precisions")
        settings = {
            **{k: v for k, v in key.settings.items() if k not in others},
            "flavour": flavour,
            "budget": key.settings["budgets"].get(flavour),
        }
        made = key.cache.run(
            f"precision-{flavour}",
            key.inputs,
            settings,
            key.versions,
            lambda work, f=flavour: _one_flavour(config, job(), f, work, log),
            STAGE_VERSION,
        )
        if made.cached:
            log(f"  {flavour}: taken from the cache (finished by an earlier build)")
        for name, file in made.record.outputs.items():
            shutil.copyfile(made.output(name), workdir / file)
            outputs[name] = (file, made.record.details.get(name))
    return outputs


def _one_flavour(
    config: Config, job: Int8Job, flavour: str, workdir: Path, log: Callable[[str], Any]
) -> Tuple[Dict[str, str], Dict[str, Any]]:
    destination = workdir / f"model.{flavour}.onnx"
    outcome = int8_with_fallback(job, flavour, destination, config.budget(flavour), log)
    outputs = {}
    if flavour == INT8_TRT:
        outputs[INT8_TRT_FP16] = _fp16_outside(job, destination, outcome)
    outputs[flavour] = destination.name
    return outputs, {flavour: {**asdict(outcome), "ops": quantize.op_precisions(destination)}}


def _fp16_outside(job: Int8Job, int8_trt: Path, outcome: Int8Outcome) -> str:
    """The `int8-trt-fp16` graph beside `int8-trt`, scored like it; its line joins the methods."""
    destination = int8_trt.with_name(f"model.{INT8_TRT_FP16}.onnx")
    qdq_to_fp16(int8_trt, destination)
    scored = Score.of(job.scorer.for_graph(INT8_TRT_FP16).score(destination))
    outcome.methods.append(
        f"{INT8_TRT_FP16}: the same graph with FP16 outside the Q/DQ pairs (opset 19, FP16 scales) for strongly typed "
        f"TensorRT; calibration agreement bound {scored.agreement:.4f}, logit error {scored.error:.4g}"
    )
    return destination.name


def finetune_settings(config: Config) -> Any:
    from pipeline.search.qat import FinetuneSettings

    batch = config.precision.finetune_batch or min(32, max(8, round(32 * (64 / config.preprocessing.crop) ** 2)))
    return FinetuneSettings(
        steps=config.precision.finetune_steps, batch=batch, patience=config.precision.finetune_patience
    )


def _search_watch(config: Config, progress: Optional[ProgressFn]) -> SearchWatch:
    """Progress and the stage's time bound (`[precision] max_search_s`), shared by every flavour."""
    bound = config.precision.max_search_s
    return SearchWatch(or_silent(progress), deadline=time.monotonic() + bound if bound > 0 else None)


def calibration_line(config: Config) -> str:
    settings = config.precision
    extra = f" {settings.percentile}" if settings.calibration == "percentile" else ""
    return f"{settings.calibration}{extra}"


@dataclass
class PrecisionInputs:
    """The artifacts the precision stage reads."""

    simplified: StageResult  # the FP32 graph
    exported: StageResult  # its node table names the modules
    calibration: Optional[StageResult]  # None when no INT8 graph is wanted
    calib_images: np.ndarray  # normalised float32
    calib_labels: np.ndarray


def _int8_job(
    config: Config, inputs: PrecisionInputs, pricing: Dict[str, str], progress: Optional[ProgressFn]
) -> Int8Job:
    """What the INT8 flavours are made from; made only when a flavour is not in the cache (its
    FP32 answers on every calibration photo cost a pass of the FP32 graph)."""
    fp32_path = inputs.simplified.output("onnx")
    scorer = CalibrationScorer(inputs.calib_images, inputs.calib_labels, onnx_logits(fp32_path, inputs.calib_images))
    return Int8Job(
        fp32_path,
        load_tensors_data(inputs.calibration.output("tensors")),
        scorer,
        json.loads(inputs.exported.output("nodes").read_text()),
        config.precision.max_fp32_layers,
        finetune_settings(config),
        calibration=calibration_line(config),
        rank_images=config.precision.rank_images,
        search=_search_watch(config, progress),
        threads=config.validate_.threads,
        pricing=pricing,
    )


def run_precision(ctx: Any, inputs: PrecisionInputs) -> StageResult:
    """The FP16 graph and each INT8 flavour the target wants (each flavour cached on its own)."""
    import onnx
    import onnxruntime

    config, cache, target, log, progress = ctx.config, ctx.cache, ctx.target, ctx.log.message, ctx.log.progress

    wanted = sorted(p for p in set(target.precisions) if p != FP32)
    budgets = {p: b.model_dump() for p, b in config.budgets.items() if p in wanted}
    settings = {"precisions": wanted, **config.precision.model_dump(), "budgets": budgets}
    pricing = pricing_runtimes(target)
    if pricing:  # the search prices modules by this CPU's profile on these runtimes
        settings["cpu"] = {
            "int8_kernel": host_info()["cpu_isa"]["int8_kernel"],
            "threads": config.validate_.threads,
            "pricing": _pricing_versions(pricing),
        }
    keys = {"onnx": sha256_file(inputs.simplified.output("onnx"))}
    if inputs.calibration is not None:
        keys["calibration"] = inputs.calibration.record.key
    versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def body(workdir: Path) -> Tuple[Dict[str, str], Dict[str, Any]]:
        fp32_path = inputs.simplified.output("onnx")
        outputs: Dict[str, str] = {}
        details: Dict[str, Any] = {
            "calibration": config.precision.calibration,
            "calibration_images": int(len(inputs.calib_images)),
        }
        if FP16 in wanted:
            convert_fp16(fp32_path, workdir / "model.fp16.onnx")
            outputs[FP16] = "model.fp16.onnx"
        flavours = [p for p in wanted if p in INT8_FLAVOURS]
        if flavours and inputs.calibration is not None:
            job = functools.lru_cache(maxsize=None)(lambda: _int8_job(config, inputs, pricing, progress))
            flavour_key = FlavourKey(cache, keys, settings, versions)
            for flavour, (name, outcome) in _make_int8(config, job, flavours, workdir, log, flavour_key).items():
                outputs[flavour] = name
                if outcome is not None:
                    details[flavour] = outcome
        return outputs, details

    return cache.run("precision", keys, settings, versions, body, STAGE_VERSION)


def summary(result: StageResult) -> str:
    """The stage's line in the build log."""
    details = result.record.details
    kept = [f"{f}: {len(details[f]['fp32_layers'])} layer(s) kept FP32" for f in INT8_FLAVOURS if f in details]
    return ", ".join([f"calibration {details.get('calibration')}"] + kept)
