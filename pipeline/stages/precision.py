"""precision: one calibration pass, then the precision graphs the target needs.

- `int8`: for ONNX Runtime CPU. u8 asymmetric activations, s8 per-channel weights, Q/DQ form:
  ONNX Runtime fuses these into QLinearConv/QLinearMatMul, which is where its INT8 speed is.
- `int8-trt`: for TensorRT. Symmetric s8 activations and per-channel s8 weights, Q/DQ on the
  inputs and weights of Conv/Gemm/MatMul (where TensorRT fuses them), on the skip input of
  residual Adds, and never on bias (TensorRT quantizes bias itself).
- `fp16`: FP16 weights and compute with FP32 graph inputs and outputs.

The calibration ranges are computed once (ONNX Runtime's calibrators: entropy, minmax or
percentile) and shared by both INT8 graphs. When an INT8 graph misses its accuracy budget on the
calibration images, the layers whose quantization costs the most are found by measurement and
kept in FP32, one at a time, until the budget is met.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import StageCache, StageResult, sha256_file
from pipeline.config import Budget, Config
from pipeline.stages.checks import cpu_session, normalised_batch, run_batched

STAGE_VERSION = "1"
QUANTIZED_OPS_TRT = ("Conv", "Gemm", "MatMul")
CALIBRATION_BATCH = 16


@dataclass
class Int8Outcome:
    """How an INT8 graph was made and how it did on the calibration images."""

    flavour: str
    agreement: float
    top1_drop: float
    fp32_layers: list[str] = field(default_factory=list)
    sensitivity: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Calibration


def _reader(images: np.ndarray, bar: Any):
    """Calibration batches for ONNX Runtime, advancing `bar` (a rich Progress) as they are read."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # ONNX Runtime's histogram collector stacks per-batch arrays, so every batch must
            # have the same size: use the largest divisor of the image count up to the limit.
            size = max(d for d in range(1, min(CALIBRATION_BATCH, len(images)) + 1) if len(images) % d == 0)
            self.batches = [images[i : i + size] for i in range(0, len(images), size)]
            self.position = 0
            self.task = bar.add_task("calibrating", total=len(self.batches))

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.position == len(self.batches):
                return None
            batch = self.batches[self.position]
            self.position += 1
            bar.update(self.task, advance=1)
            return {"images": batch}

        def __len__(self) -> int:
            return len(self.batches)

    return Reader()


def calibrate(fp32_path: Path, images: np.ndarray, config: Config, progress: bool = True):
    """One pass over the calibration images; returns ONNX Runtime TensorsData (ranges per tensor)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from rich.console import Console
    from rich.progress import Progress

    settings = config.precision
    method = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[settings.calibration]
    # ONNX Runtime's entropy calibrator defaults to 128 histogram bins, too coarse for the KL
    # search to move the threshold below the maximum: it then equals minmax.
    extra: dict[str, Any] = {"num_bins": settings.entropy_bins, "num_quantized_bins": 128}
    if settings.calibration == "percentile":
        extra = {"num_bins": settings.percentile_bins, "percentile": settings.percentile, "symmetric": False}
    with tempfile.TemporaryDirectory(prefix="vt-edge-calib.") as tmp:
        calibrator = create_calibrator(
            fp32_path,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
        # ONNX Runtime's calibrators print their progress on stdout; our bar (on stderr) says it.
        with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(_reader(images, bar))
                tensors_data = calibrator.compute_data()
    _exact_input_range(tensors_data, images)
    return tensors_data


def _exact_input_range(tensors_data: Any, images: np.ndarray) -> None:
    """The graph input's range is known exactly (normalised 0..255 pixels): never clip it.

    Entropy and percentile clip the tails of every histogram, which is right for activations
    but costs the first conv accuracy when applied to the image itself.
    """
    from onnxruntime.quantization.calibrate import TensorData

    if "images" in tensors_data.data:
        tensors_data.data["images"] = TensorData(lowest=np.float32(images.min()), highest=np.float32(images.max()))


def ranges_to_json(tensors_data: Any) -> dict[str, list[float]]:
    out = {}
    for name, data in tensors_data.data.items():
        low, high = data.range_value
        out[name] = [float(np.asarray(low).min()), float(np.asarray(high).max())]
    return out


# ----------------------------------------------------------------------------------------------
# Graph writers


def quantize_graph(
    fp32_path: Path, destination: Path, tensors_data: Any, flavour: str, exclude: Iterable[str] = ()
) -> None:
    """Write the `int8` (ONNX Runtime) or `int8-trt` (TensorRT) Q/DQ graph."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    model = load_model_with_shape_infer(fp32_path)
    if flavour == "int8":
        activation, ops = QuantType.QUInt8, None
        extra = {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
    else:
        activation, ops = QuantType.QInt8, list(QUANTIZED_OPS_TRT)
        extra = {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            # MatMuls between two activations (attention) are quantized too: TensorRT runs
            # them as INT8 GEMMs when both inputs carry Q/DQ.
            "MatMulConstBOnly": False,
            # TensorRT wants Q/DQ on the inputs of the ops it runs in INT8 and fuses the ops
            # that follow (bias, ReLU) itself; Q/DQ on their outputs would only split fusions.
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS_TRT),
        }
    quantizer = QDQQuantizer(
        model,
        True,  # per-channel weights
        False,  # reduce_range: only needed for old non-VNNI x86
        QuantType.QInt8,
        activation,
        tensors_data,
        [],
        list(exclude),
        ops if ops is not None else _default_ops(),
        extra,
    )
    quantizer.quantize_model()
    if flavour == "int8-trt":
        _quantize_residual_adds(quantizer.model.model, tensors_data)
    quantizer.model.save_model_to_file(str(destination))


def _default_ops() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _quantize_residual_adds(model: Any, tensors_data: Any) -> None:
    """Q/DQ on the skip input of residual Adds, so TensorRT fuses the Add into the conv before it.

    A residual Add has one input straight from a Conv (fused as the conv's epilogue); the other
    input (the skip branch) must then arrive quantized. Often it already does, because the same
    tensor feeds the next block's quantized conv; otherwise (e.g. a downsample conv's output)
    a Q/DQ pair is inserted, using the tensor's calibrated range.
    """
    from onnx import TensorProto, helper, numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    new_nodes = []
    for node in list(model.graph.node):
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        kinds = [producers[name].op_type if name in producers else None for name in node.input]
        if "Conv" not in kinds or "DequantizeLinear" in kinds:
            continue
        skip = 1 if kinds[0] == "Conv" else 0
        name = node.input[skip]
        if name not in tensors_data.data:
            continue
        low, high = tensors_data.data[name].range_value
        amax = max(abs(float(np.asarray(low).min())), abs(float(np.asarray(high).max())), 1e-8)
        scale_name, zero_name = f"{name}_residual_scale", f"{name}_residual_zero_point"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(amax / 127.0, dtype=np.float32), scale_name),
                helper.make_tensor(zero_name, TensorProto.INT8, [], [0]),
            ]
        )
        quantized, dequantized = f"{name}_residual_q", f"{name}_residual_dq"
        new_nodes.append(helper.make_node("QuantizeLinear", [name, scale_name, zero_name], [quantized], name=f"{name}_ResidualQuantizeLinear"))
        new_nodes.append(helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], [dequantized], name=f"{name}_ResidualDequantizeLinear"))
        node.input[skip] = dequantized
    if new_nodes:
        model.graph.node.extend(new_nodes)
        _topological_sort(model.graph)


def _topological_sort(graph: Any) -> None:
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise RuntimeError("graph has a cycle or a dangling input after inserting Q/DQ")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path: Path, destination: Path) -> None:
    """FP16 weights and compute, FP32 graph inputs/outputs (casts at the edges)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():
        # One warning per tiny weight clipped to FP16's range: expected, and reported by accuracy.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(destination))


# ----------------------------------------------------------------------------------------------
# Accuracy on the calibration images and mixed-precision fallback


@dataclass
class Proxy:
    """FP32 reference on the calibration images (the evaluation images stay unseen here)."""

    images: np.ndarray
    labels: np.ndarray
    fp32_logits: np.ndarray

    def score(self, onnx_path: Path) -> tuple[float, float]:
        """(top-1 agreement with FP32, top-1 drop in points) of a graph on the calibration images."""
        logits = run_batched(cpu_session(onnx_path), self.images)
        reference = self.fp32_logits.argmax(1)
        agreement = float((logits.argmax(1) == reference).mean())
        drop = 100.0 * float((reference == self.labels).mean() - (logits.argmax(1) == self.labels).mean())
        return agreement, drop


# Percentages computed from counts carry float noise (0.99 - 0.98 = 1.0000000000000009 points).
BUDGET_EPSILON = 1e-9


def _meets(budget: Budget | None, agreement: float, drop: float) -> bool:
    return budget is None or (
        agreement >= budget.min_agreement - BUDGET_EPSILON and drop <= budget.max_top1_drop + BUDGET_EPSILON
    )


def module_of(node_name: str) -> str:
    """`/vt.0/tokenizer/MatMul_1` -> `/vt.0/tokenizer`: the torch module that made the node."""
    return node_name.rsplit("/", 1)[0] if "/" in node_name else node_name


def quantizable_groups(fp32_path: Path, export_nodes: list[dict[str, Any]], ops: Iterable[str]) -> dict[str, list[str]]:
    """Module path -> names of the quantizable nodes it owns in the simplified graph.

    Simplification may rename nodes, so the module path is looked up in the export's node
    table: first by node name, then by the node's output tensor names.
    """
    import onnx

    by_name = {n["name"]: n["name"] for n in export_nodes}
    by_output = {out: n["name"] for n in export_nodes for out in n["outputs"]}
    wanted = set(ops)
    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(fp32_path)).graph.node:
        if node.op_type not in wanted:
            continue
        origin = by_name.get(node.name) or next((by_output[o] for o in node.output if o in by_output), node.name)
        groups.setdefault(module_of(origin), []).append(node.name)
    return groups


def int8_with_fallback(
    flavour: str,
    fp32_path: Path,
    destination: Path,
    tensors_data: Any,
    proxy: Proxy,
    budget: Budget | None,
    export_nodes: list[dict[str, Any]],
    max_fp32_layers: int,
    log: Any = print,
) -> Int8Outcome:
    quantize_graph(fp32_path, destination, tensors_data, flavour)
    agreement, drop = proxy.score(destination)
    outcome = Int8Outcome(flavour, agreement, drop)
    if _meets(budget, agreement, drop) or max_fp32_layers == 0:
        return outcome
    log(f"  {flavour}: agreement {agreement:.3f}, drop {drop:+.2f} on calibration images misses the budget; measuring layer sensitivity")
    ops = QUANTIZED_OPS_TRT if flavour == "int8-trt" else ("Conv", "Gemm", "MatMul")
    groups = quantizable_groups(fp32_path, export_nodes, ops)
    all_nodes = [n for names in groups.values() for n in names]
    sensitivity = []
    with tempfile.TemporaryDirectory(prefix="vt-edge-sens.") as tmp:
        probe = Path(tmp) / "probe.onnx"
        for module, names in groups.items():
            # Quantize everything except this module: the gain says what its INT8 costs.
            quantize_graph(fp32_path, probe, tensors_data, flavour, exclude=names)
            probe_agreement, probe_drop = proxy.score(probe)
            sensitivity.append({"module": module, "nodes": len(names), "agreement_without": probe_agreement, "gain": probe_agreement - agreement})
    sensitivity.sort(key=lambda item: item["gain"], reverse=True)
    outcome.sensitivity = sensitivity
    kept: list[str] = []
    for item in sensitivity[:max_fp32_layers]:
        kept.append(item["module"])
        excluded = [n for module in kept for n in groups[module]]
        quantize_graph(fp32_path, destination, tensors_data, flavour, exclude=excluded)
        outcome.agreement, outcome.top1_drop = proxy.score(destination)
        outcome.fp32_layers = list(kept)
        if _meets(budget, outcome.agreement, outcome.top1_drop):
            break
    log(f"  {flavour}: kept {len(kept)} module(s) in FP32 of {len(groups)} ({len(all_nodes)} quantizable nodes)")
    return outcome


# ----------------------------------------------------------------------------------------------
# The stage


def run_precision(
    config: Config,
    cache: StageCache,
    simplified: StageResult,
    exported: StageResult,
    calib_crops: np.ndarray,
    calib_labels: np.ndarray,
    calib_hash: str,
    precisions: Iterable[str],
    progress: bool = True,
    log: Any = print,
) -> StageResult:
    import onnx
    import onnxruntime

    wanted = sorted(p for p in set(precisions) if p != "fp32")
    budgets = {p: b.model_dump() for p, b in config.budgets.items() if p in wanted}
    settings = {"precisions": wanted, **config.precision.model_dump(), "budgets": budgets}
    inputs = {"onnx": sha256_file(simplified.output("onnx")), "calibration_images": calib_hash}
    versions = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        fp32_path = simplified.output("onnx")
        outputs: dict[str, str] = {}
        details: dict[str, Any] = {"calibration": config.precision.calibration, "calibration_images": int(len(calib_crops))}
        if "fp16" in wanted:
            convert_fp16(fp32_path, workdir / "model.fp16.onnx")
            outputs["fp16"] = "model.fp16.onnx"
        int8_flavours = [p for p in wanted if p.startswith("int8")]
        if int8_flavours:
            images = normalised_batch(calib_crops, config)
            tensors_data = calibrate(fp32_path, images, config, progress)
            (workdir / "calibration.json").write_text(json.dumps(ranges_to_json(tensors_data), indent=1))
            outputs["calibration"] = "calibration.json"
            proxy = Proxy(images, calib_labels, run_batched(cpu_session(fp32_path), images))
            export_nodes = json.loads(exported.output("nodes").read_text())
            for flavour in int8_flavours:
                destination = workdir / f"model.{flavour}.onnx"
                outcome = int8_with_fallback(
                    flavour, fp32_path, destination, tensors_data, proxy,
                    config.budget(flavour), export_nodes, config.precision.max_fp32_layers, log,
                )
                outputs[flavour] = destination.name
                details[flavour] = asdict(outcome)
        return outputs, details

    return cache.run("precision", inputs, settings, versions, body, STAGE_VERSION)
