"""The Q/DQ graph writers: one calibration's ranges in, an INT8 ONNX graph out.

- `int8`: for ONNX Runtime CPU. u8 asymmetric activations, s8 per-channel weights on the inputs
  of Conv/Gemm/MatMul, Q/DQ form: ONNX Runtime fuses these into QLinearConv/QLinearMatMul, which
  is where its INT8 speed is.
  Weights use 7 bits (-64..64, ONNX Runtime's `reduce_range`): on x86 CPUs without VNNI (AVX2
  only) ONNX Runtime multiplies u8 activations by s8 weights with vpmaddubsw, which adds pairs of
  products in 16 bits and saturates when two 8-bit weights meet large activations; with 7-bit
  weights the pair sum cannot overflow (2 * 255 * 64 < 32767), so the graph computes the same
  answers on AVX2, AVX-512 VNNI and Arm. Measured on the real-photo VT (2,000 evaluation photos,
  AVX2): 8-bit weights agree 95.3% with FP32 through the fused kernels (99.15% when the same Q/DQ
  run as float ops), 7-bit weights 98.9%, at the same speed.
- `int8-trt`: for TensorRT. Symmetric s8 activations and per-channel s8 weights, Q/DQ on the
  inputs and weights of Conv/Gemm/MatMul (where TensorRT fuses them), on the skip input of
  residual Adds, and never on bias (TensorRT quantizes bias itself).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from pipeline.graphs.query import read_graph, tensor_readers, topological_sort
from pipeline.names import INT8, INT8_TRT

# Both flavours quantize the matrix products with a weight (Conv, Gemm, Linear MatMuls) and
# nothing else: ReLU, pools, residual Adds, the tokenizer's Softmax and Mul, LayerNorm and GELU
# stay in float. Measured on the real-photo VT (500 calibration photos, AVX-512 VNNI, batch 1):
# the `int8` graph with ONNX Runtime's whole op registry quantized has logit error 0.0047 and
# runs in 1.12 ms; with the matrix products only, 0.0027 and 0.66 ms (FP32: 1.57 ms): its
# QLinear Add/Mul/Softmax kernels cost more than the float ops plus the Q/DQ around them. On
# transformers LayerNorm inputs and GELU outputs carry outliers one 8-bit scale per tensor cannot
# cover, and the MatMuls between two activations (attention's Q x K^T, attention x V) stay in
# float too (quantize_graph): on the shipped ViT they were the most sensitive ops.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


# Ops that move or reshape data: left out of the per-precision op counts.
LAYOUT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "Constant",
    "Reshape",
    "Transpose",
    "Shape",
    "Gather",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Slice",
    "Cast",
    "Identity",
    "Split",
    "Expand",
}


def op_precisions(model_path: Path) -> dict[str, dict[str, int]]:
    """Compute ops of a Q/DQ graph by the precision they read: `int8` when an input arrives through a
    DequantizeLinear of an activation or weight, `float` otherwise (what stays FP32/FP16)."""
    graph = read_graph(model_path)
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    readers = {tensor: [node.op_type for node in nodes] for tensor, nodes in tensor_readers(graph).items()}
    counts: dict[str, dict[str, int]] = {"int8": {}, "float": {}}
    for node in graph.node:
        if node.op_type in LAYOUT_OPS:
            continue
        reads_int8 = any(name in dequantized for name in node.input[:2])
        # A matrix product with a quantized input runs as an INT8 GEMM; any other op does only
        # when its result is quantized again (ONNX Runtime's QLinear* fusions), else it
        # computes in float on dequantized values.
        to_int8 = all(r == "QuantizeLinear" for out in node.output for r in readers.get(out, [None]))
        side = "int8" if reads_int8 and (node.op_type in QUANTIZED_OPS or to_int8) else "float"
        counts[side][node.op_type] = counts[side].get(node.op_type, 0) + 1
    return {side: dict(sorted(ops.items())) for side, ops in counts.items()}


def activation_matmuls(model_path: Path) -> list[str]:
    """MatMul nodes between two activations (attention's Q x K^T and attention x V)."""
    graph = read_graph(model_path)
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(name in constants for name in n.input)]


@dataclass(frozen=True)
class Int8Recipe:
    """How an INT8 flavour quantizes a graph: the whole recipe as data. The few rules that depend
    on the graph are named functions beside it (`activation_matmuls`, `_residual_skip_inputs`)."""

    flavour: str
    activations: str  # "u8" or "s8"
    activation_symmetric: bool
    reduce_range: bool  # 7-bit weights (see the module docstring)
    ops: tuple = QUANTIZED_OPS  # the op types quantized (and the fallback's candidates)
    per_channel_weights: bool = True
    quantize_bias: bool = True
    output_quantization: bool = True  # Q/DQ on the outputs of `ops` too
    residual_skips: bool = False  # Q/DQ on the skip input of residual Adds
    activation_matmuls_in_float: bool = True  # MatMuls between two activations stay in float
    scheme: str = ""  # the methods list's line

    def quantizer_options(self) -> dict[str, Any]:
        """ONNX Runtime's `extra_options` for this recipe."""
        options: dict[str, Any] = {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
        if self.activation_symmetric:
            options["ActivationSymmetric"] = True
        if not self.quantize_bias:
            options["QuantizeBias"] = False
        if not self.output_quantization:
            # TensorRT wants Q/DQ on the inputs of the ops it runs in INT8 and fuses the ops that
            # follow (bias, ReLU) itself; Q/DQ on their outputs would only split fusions.
            options["OpTypesToExcludeOutputQuantization"] = list(self.ops)
        if self.activation_matmuls_in_float:
            # ONNX Runtime's QDQ MatMul ignores this option: quantize_graph also names them.
            options["MatMulConstBOnly"] = True
        return options


RECIPES = {
    INT8: Int8Recipe(
        INT8,
        activations="u8",
        activation_symmetric=False,
        reduce_range=True,
        scheme="u8 asymmetric activations, 7-bit per-channel weights (saturation-free on AVX2)",
    ),
    # TensorRT accumulates in 32 bits, so its graph keeps all 8 weight bits.
    INT8_TRT: Int8Recipe(
        INT8_TRT,
        activations="s8",
        activation_symmetric=True,
        reduce_range=False,
        quantize_bias=False,
        output_quantization=False,
        residual_skips=True,
        scheme="s8 symmetric activations and per-channel weights on Conv/Gemm/MatMul inputs and residual skips",
    ),
}


def fallback_ops(flavour: str) -> list[str]:
    """The ops whose nodes the fallback keeps in FP32 with their module: every op the flavour quantizes."""
    return list(RECIPES[flavour].ops)


@dataclass
class Fp32Graph:
    """The FP32 graph every Q/DQ graph of a build is written from, read once: the search writes
    one graph per probe, and reading and shape-inferring a paper-size graph costs a second."""

    path: Path
    model: Any  # onnx.ModelProto with inferred shapes (ONNX Runtime's quantizer needs them)
    activation_matmuls: list[str]


def load_fp32(fp32_path: Path) -> Fp32Graph:
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    return Fp32Graph(Path(fp32_path), load_model_with_shape_infer(Path(fp32_path)), activation_matmuls(fp32_path))


# The oldest ONNX Runtime whose QDQQuantizer takes these keywords (pyproject.toml pins it; a test
# checks the installed one's signature): its arguments were reordered and renamed before 1.18.
MIN_ONNXRUNTIME = "1.18"


def quantizer_arguments(graph: Fp32Graph, recipe: Int8Recipe, tensors_data: Any, exclude: Iterable[str] = ()) -> dict:
    """ONNX Runtime's QDQQuantizer arguments for `recipe`, by keyword."""
    from onnxruntime.quantization import QuantType

    in_float = graph.activation_matmuls if recipe.activation_matmuls_in_float else []
    return {
        "model": copy.deepcopy(graph.model),
        "per_channel": recipe.per_channel_weights,
        "reduce_range": recipe.reduce_range,
        "weight_qType": QuantType.QInt8,
        "activation_qType": {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[recipe.activations],
        "tensors_range": tensors_data,
        "nodes_to_quantize": [],
        "nodes_to_exclude": [*exclude, *in_float],
        "op_types_to_quantize": list(recipe.ops),
        "extra_options": recipe.quantizer_options(),
    }


def quantize_graph(
    fp32: Union[Path, Fp32Graph], destination: Path, tensors_data: Any, flavour: str, exclude: Iterable[str] = ()
) -> None:
    """Write the `int8` (ONNX Runtime) or `int8-trt` (TensorRT) Q/DQ graph.

    MatMuls between two activations (attention-like products: the VT tokenizer's and token
    transformer's, a ViT's Q x K^T and attention x V) stay in float in both flavours: ONNX
    Runtime's QDQ MatMul ignores `MatMulConstBOnly`, so they are excluded by name. Measured on
    the real-photo VT (500 calibration photos): the int8-trt graph's logit error halves
    (0.0042 -> 0.0020) with them in float; on the shipped ViT they were its most sensitive ops.
    """
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    graph = fp32 if isinstance(fp32, Fp32Graph) else load_fp32(fp32)
    recipe = RECIPES[flavour]
    quantizer = QDQQuantizer(**quantizer_arguments(graph, recipe, tensors_data, exclude))
    quantizer.quantize_model()
    if recipe.residual_skips:
        _quantize_residual_adds(quantizer.model.model, tensors_data)
    quantizer.model.save_model_to_file(str(destination))


def _residual_skip_inputs(model: Any, tensors_data: Any) -> list[tuple[Any, int]]:
    """(Add node, index of its skip input) for residual Adds whose skip input needs Q/DQ."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in list(model.graph.node):
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        kinds = [producers[name].op_type if name in producers else None for name in node.input]
        if "Conv" not in kinds or "DequantizeLinear" in kinds:
            continue
        skip = 1 if kinds[0] == "Conv" else 0
        if node.input[skip] in tensors_data.data:
            found.append((node, skip))
    return found


def _quantize_residual_adds(model: Any, tensors_data: Any) -> None:
    """Q/DQ on the skip input of residual Adds, so TensorRT fuses the Add into the conv before it.

    A residual Add has one input straight from a Conv (fused as the conv's epilogue); the other
    input (the skip branch) must then arrive quantized. Often it already does, because the same
    tensor feeds the next block's quantized conv; otherwise (e.g. a downsample conv's output)
    a Q/DQ pair is inserted, using the tensor's calibrated range.
    """
    from onnx import TensorProto, helper, numpy_helper

    new_nodes = []
    for node, skip in _residual_skip_inputs(model, tensors_data):
        name = node.input[skip]
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
        new_nodes.append(
            helper.make_node(
                "QuantizeLinear", [name, scale_name, zero_name], [quantized], name=f"{name}_ResidualQuantizeLinear"
            )
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [quantized, scale_name, zero_name],
                [dequantized],
                name=f"{name}_ResidualDequantizeLinear",
            )
        )
        node.input[skip] = dequantized
    if new_nodes:
        model.graph.node.extend(new_nodes)
        topological_sort(model.graph)
