"""precision: the graphs a target needs beyond FP32, made from one cached calibration.

- `fp16`: casts in the graph (pipeline.stages.fp16).
- `int8`, `int8-trt`: Q/DQ graphs (pipeline.stages.quantize) from the calibrate stage's ranges.
  When one misses its accuracy budget on the calibration images, the means are tried in order of
  cost: a quantization-aware fine-tune of its weights (pipeline.stages.qat, `finetune_steps`),
  then the fallback search (pipeline.stages.fallback), which keeps its costliest modules in FP32
  and says which. Each graph's `methods` list says what was used.
- `int8-trt-fp16`: the final `int8-trt` graph with FP16 outside its Q/DQ pairs, for strongly
  typed TensorRT (pipeline.stages.fp16.qdq_to_fp16).

The evaluation images are never seen here: every decision is scored on the calibration images.
TensorRT graphs are scored with exact Q/DQ arithmetic (what TensorRT computes), the `int8` graph
through ONNX Runtime's fused integer kernels (what the CPU target runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import StageCache, StageResult, sha256_file
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.config import Config
from pipeline.metrics import Budget, agreement_lower_bound, budget_met, top1_accuracy, top1_drop
from pipeline.names import FP16, FP32, INT8, INT8_FLAVOURS, INT8_TRT, INT8_TRT_FP16, TENSORRT_GRAPHS
from pipeline.stages import quantize
from pipeline.stages.calibrate import load_tensors_data
from pipeline.stages.fallback import FallbackPolicy, Int8Outcome, keep_costliest_in_fp32, quantizable_groups
from pipeline.stages.fp16 import convert_fp16, qdq_to_fp16

STAGE_VERSION = "6"


@dataclass
class CalibrationScorer:
    """Scores a graph against the FP32 reference on the calibration images."""

    images: np.ndarray
    labels: np.ndarray
    fp32_logits: np.ndarray
    qdq_fusion: bool = True  # False: exact Q/DQ arithmetic (TensorRT graphs)

    def score(self, onnx_path: Path) -> Tuple[float, float, float]:
        """(agreement with FP32, top-1 drop in points, mean squared logit error) of a graph on
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
        return agreement_lower_bound(logits, self.fp32_logits), drop - noise, float(np.mean((logits - self.fp32_logits) ** 2))

    def for_graph(self, name: str) -> "CalibrationScorer":
        return replace(self, qdq_fusion=name not in TENSORRT_GRAPHS)


@dataclass
class Int8Job:
    """What every INT8 flavour of one build is made from."""

    fp32_path: Path
    tensors_data: Any  # ONNX Runtime TensorsData from the calibrate stage
    scorer: CalibrationScorer
    export_nodes: List[Dict[str, Any]]  # the export's node table: module paths
    max_fp32_layers: int
    finetune: Any = None  # pipeline.stages.qat.FinetuneSettings; None or 0 steps: no fine-tune
    finetune_images: Optional[np.ndarray] = None  # defaults to the calibration images
    calibration: str = ""  # how the ranges were made, for the methods list


def base_methods(job: Int8Job, flavour: str) -> List[str]:
    """What every graph of the flavour is made with, before any escalation."""
    scheme = {
        INT8: "u8 asymmetric activations, 7-bit per-channel weights (saturation-free on AVX2)",
        INT8_TRT: "s8 symmetric activations and per-channel weights on Conv/Gemm/MatMul inputs and residual skips",
    }[flavour]
    return [f"calibration: {job.calibration}" if job.calibration else "calibration", scheme]


def _writer(job: Int8Job, flavour: str, fp32_path: Path) -> Callable[[Path, List[str]], None]:
    def write(path: Path, keep_fp32: List[str]) -> None:
        # Looked up on the module at call time, so a test can interrupt the writer.
        quantize.quantize_graph(fp32_path, path, job.tensors_data, flavour, exclude=keep_fp32)

    return write


def _finetuned(job: Int8Job, flavour: str, destination: Path, keep_fp32: List[str],
               scored: Tuple[float, ...]) -> Tuple[Optional[Path], Tuple[float, ...], str]:
    """Fine-tune the weights of the Q/DQ graph at `destination` (QAT; `keep_fp32` are the nodes
    it leaves unquantized). (The fine-tuned FP32 graph, or None when it does not lower the logit
    error on the calibration images; its score; the line for the methods list.)"""
    from pipeline.stages.qat import finetune, write_weights

    images = job.finetune_images if job.finetune_images is not None else job.scorer.images
    weights = finetune(destination, job.fp32_path, images, job.finetune)
    tuned = destination.with_name(destination.stem + ".finetuned-fp32.onnx")
    write_weights(job.fp32_path, weights, tuned)
    probe = destination.with_name(destination.stem + ".finetuned.onnx")
    _writer(job, flavour, tuned)(probe, keep_fp32)
    after = job.scorer.for_graph(flavour).score(probe)
    before_error, after_error = _error(scored) or 0.0, _error(after) or 0.0
    line = (f"quantization-aware fine-tune: {job.finetune.steps} steps on {len(images)} photos, logit error "
            f"{before_error:.4g} -> {after_error:.4g}, agreement bound {scored[0]:.4f} -> {after[0]:.4f} (calibration images)")
    if after_error >= before_error:
        probe.unlink()
        return None, scored, line + "; not kept"
    probe.replace(destination)
    return tuned, after, line


def _error(scored: Tuple[float, ...]) -> Optional[float]:
    return float(scored[2]) if len(scored) > 2 else None


def _finetune_wanted(job: Int8Job) -> bool:
    return job.finetune is not None and job.finetune.steps > 0


def int8_with_fallback(job: Int8Job, flavour: str, destination: Path, budget: Optional[Budget],
                       log: Callable[[str], Any] = print) -> Int8Outcome:
    """The flavour's Q/DQ graph at `destination`: post-training quantization, then, while its
    budget is missed on the calibration images, a fine-tune of the whole graph; if that is not
    enough, FP32 modules (chosen on the post-training weights, which a fine-tune has not bent
    around the quantization of the rest) and a fine-tune of the graph they leave."""
    scorer, methods = job.scorer.for_graph(flavour), base_methods(job, flavour)
    _writer(job, flavour, job.fp32_path)(destination, [])
    scored = scorer.score(destination)
    outcome = Int8Outcome(flavour, scored[0], scored[1], logit_error=_error(scored), methods=methods)
    if budget_met(budget, scored[0], scored[1]):
        return outcome
    if _finetune_wanted(job):
        log(f"  {flavour}: missed its budget on the calibration images; fine-tuning ({job.finetune.steps} steps)")
        tuned, after, line = _finetuned(job, flavour, destination, [], scored)
        methods.append(line)
        if tuned is not None and budget_met(budget, after[0], after[1]):
            outcome.agreement, outcome.top1_drop, outcome.logit_error = after[0], after[1], _error(after)
            return outcome
    groups = _fallback_groups(job, flavour)
    policy = FallbackPolicy(budget, job.max_fp32_layers)
    outcome = keep_costliest_in_fp32(flavour, destination, groups, (_writer(job, flavour, job.fp32_path), scorer.score), policy)
    outcome.methods = methods
    if outcome.fp32_layers:
        nodes = sum(len(names) for names in groups.values())
        log(f"  {flavour}: still over budget; kept {len(outcome.fp32_layers)} module(s) in FP32 of {len(groups)} ({nodes} quantizable nodes)")
        methods.append(f"FP32 fallback: {len(outcome.fp32_layers)} module(s) ordered by the logit error they remove")
        if _finetune_wanted(job):
            kept = [n for module in outcome.fp32_layers for n in groups[module]]
            tuned, after, line = _finetuned(job, flavour, destination, kept, (outcome.agreement, outcome.top1_drop, outcome.logit_error or 0.0))
            methods.append(line.replace("quantization-aware fine-tune", "quantization-aware fine-tune with those modules in FP32"))
            if tuned is not None:
                outcome.agreement, outcome.top1_drop, outcome.logit_error = after[0], after[1], _error(after)
    return outcome


def _fallback_groups(job: Int8Job, flavour: str) -> Dict[str, List[str]]:
    """The modules the fallback may keep in FP32, with their quantized nodes (a transformer's
    attention MatMuls are never quantized, so they are no candidates)."""
    transformer = quantize.is_transformer(job.fp32_path)
    float_already = set(quantize.activation_matmuls(job.fp32_path)) if transformer else set()
    groups = quantizable_groups(job.fp32_path, job.export_nodes, quantize.fallback_ops(flavour, transformer))
    kept = {module: [n for n in names if n not in float_already] for module, names in groups.items()}
    return {module: names for module, names in kept.items() if names}


def _make_int8(config: Config, job: Int8Job, flavours: List[str], workdir: Path, log: Callable[[str], Any]) -> Dict[str, Any]:
    outputs: Dict[str, Any] = {}
    for flavour in flavours:
        destination = workdir / f"model.{flavour}.onnx"
        outcome = int8_with_fallback(job, flavour, destination, config.budget(flavour), log)
        if flavour == INT8_TRT:
            outputs[INT8_TRT_FP16] = (_fp16_outside(job, destination, outcome), None)
        outputs[flavour] = (destination.name, {**asdict(outcome), "ops": quantize.op_precisions(destination)})
    return outputs


def _fp16_outside(job: Int8Job, int8_trt: Path, outcome: Int8Outcome) -> str:
    """The `int8-trt-fp16` graph beside `int8-trt`, scored like it; its line joins the methods."""
    destination = int8_trt.with_name(f"model.{INT8_TRT_FP16}.onnx")
    qdq_to_fp16(int8_trt, destination)
    scored = job.scorer.for_graph(INT8_TRT_FP16).score(destination)
    outcome.methods.append(
        f"{INT8_TRT_FP16}: the same graph with FP16 outside the Q/DQ pairs (opset 19, FP16 scales) for strongly typed "
        f"TensorRT; calibration agreement bound {scored[0]:.4f}, logit error {scored[2]:.4g}")
    return destination.name


def finetune_settings(config: Config) -> Any:
    from pipeline.stages.qat import FinetuneSettings

    return FinetuneSettings(steps=config.precision.finetune_steps)


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


def run_precision(config: Config, cache: StageCache, inputs: PrecisionInputs, precisions: Iterable[str],
                  log: Callable[[str], Any] = print) -> StageResult:
    import onnx
    import onnxruntime

    wanted = sorted(p for p in set(precisions) if p != FP32)
    budgets = {p: b.model_dump() for p, b in config.budgets.items() if p in wanted}
    settings = {"precisions": wanted, **config.precision.model_dump(), "budgets": budgets}
    keys = {"onnx": sha256_file(inputs.simplified.output("onnx"))}
    if inputs.calibration is not None:
        keys["calibration"] = inputs.calibration.record.key
    versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def body(workdir: Path) -> Tuple[Dict[str, str], Dict[str, Any]]:
        fp32_path = inputs.simplified.output("onnx")
        outputs: Dict[str, str] = {}
        details: Dict[str, Any] = {"calibration": config.precision.calibration, "calibration_images": int(len(inputs.calib_images))}
        if FP16 in wanted:
            convert_fp16(fp32_path, workdir / "model.fp16.onnx")
            outputs[FP16] = "model.fp16.onnx"
        flavours = [p for p in wanted if p in INT8_FLAVOURS]
        if flavours and inputs.calibration is not None:
            scorer = CalibrationScorer(inputs.calib_images, inputs.calib_labels, onnx_logits(fp32_path, inputs.calib_images))
            job = Int8Job(fp32_path, load_tensors_data(inputs.calibration.output("tensors")), scorer,
                          json.loads(inputs.exported.output("nodes").read_text()), config.precision.max_fp32_layers,
                          finetune_settings(config), calibration=calibration_line(config))
            for flavour, (name, outcome) in _make_int8(config, job, flavours, workdir, log).items():
                outputs[flavour] = name
                if outcome is not None:
                    details[flavour] = outcome
        return outputs, details

    return cache.run("precision", keys, settings, versions, body, STAGE_VERSION)
