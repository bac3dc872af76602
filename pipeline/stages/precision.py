"""precision: the graphs a target needs beyond FP32, made from one cached calibration.

- `fp16`: casts in the graph (pipeline.stages.fp16).
- `int8`, `int8-trt`: Q/DQ graphs (pipeline.stages.quantize) from the calibrate stage's ranges;
  when one misses its accuracy budget on the calibration images, the fallback search
  (pipeline.stages.fallback) keeps its costliest modules in FP32 and says which.

The evaluation images are never seen here: every decision is scored on the calibration images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import StageCache, StageResult, sha256_file
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.config import Config
from pipeline.metrics import Budget, agreement, top1_accuracy, top1_drop
from pipeline.names import FP16, FP32, INT8_FLAVOURS
from pipeline.stages import quantize
from pipeline.stages.calibrate import load_tensors_data
from pipeline.stages.fallback import FallbackPolicy, Int8Outcome, keep_costliest_in_fp32, quantizable_groups
from pipeline.stages.fp16 import convert_fp16

STAGE_VERSION = "2"


@dataclass
class CalibrationScorer:
    """Scores a graph against the FP32 reference on the calibration images."""

    images: np.ndarray
    labels: np.ndarray
    fp32_logits: np.ndarray

    def score(self, onnx_path: Path) -> Tuple[float, float]:
        """(top-1 agreement with FP32, top-1 drop in points) of a graph on the calibration images."""
        logits = onnx_logits(onnx_path, self.images)
        drop = top1_drop(top1_accuracy(self.fp32_logits, self.labels), top1_accuracy(logits, self.labels))
        return agreement(logits, self.fp32_logits), drop


@dataclass
class Int8Job:
    """What every INT8 flavour of one build is made from."""

    fp32_path: Path
    tensors_data: Any  # ONNX Runtime TensorsData from the calibrate stage
    scorer: CalibrationScorer
    export_nodes: List[Dict[str, Any]]  # the export's node table: module paths
    max_fp32_layers: int


def int8_with_fallback(job: Int8Job, flavour: str, destination: Path, budget: Optional[Budget],
                       log: Callable[[str], Any] = print) -> Int8Outcome:
    """The flavour's Q/DQ graph at `destination`, with FP32 modules where its budget needs them."""

    def write(path: Path, keep_fp32: List[str]) -> None:
        # Looked up on the module at call time, so a test can interrupt the writer.
        quantize.quantize_graph(job.fp32_path, path, job.tensors_data, flavour, exclude=keep_fp32)

    groups = quantizable_groups(job.fp32_path, job.export_nodes, quantize.FALLBACK_OPS[flavour])
    policy = FallbackPolicy(budget, job.max_fp32_layers)
    outcome = keep_costliest_in_fp32(flavour, destination, groups, (write, job.scorer.score), policy)
    if outcome.sensitivity:
        nodes = sum(len(names) for names in groups.values())
        log(f"  {flavour}: missed its budget on the calibration images; kept {len(outcome.fp32_layers)} module(s) "
            f"in FP32 of {len(groups)} ({nodes} quantizable nodes)")
    return outcome


def _make_int8(config: Config, job: Int8Job, flavours: List[str], workdir: Path, log: Callable[[str], Any]) -> Dict[str, Any]:
    outputs: Dict[str, Any] = {}
    for flavour in flavours:
        destination = workdir / f"model.{flavour}.onnx"
        outcome = int8_with_fallback(job, flavour, destination, config.budget(flavour), log)
        outputs[flavour] = (destination.name, asdict(outcome))
    return outputs


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
                          json.loads(inputs.exported.output("nodes").read_text()), config.precision.max_fp32_layers)
            for flavour, (name, outcome) in _make_int8(config, job, flavours, workdir, log).items():
                outputs[flavour], details[flavour] = name, outcome
        return outputs, details

    return cache.run("precision", keys, settings, versions, body, STAGE_VERSION)
