"""The FP16 graph writer: FP16 weights and compute with FP32 graph inputs and outputs."""

from __future__ import annotations

import warnings
from pathlib import Path


# LayerNorm stays in FP32 in every FP16 graph: its mean of squares overflows FP16 (65504) as soon
# as a token's activations pass ~256, which transformers' residual streams do. The decomposed
# form (TensorRT 8.5's) keeps its reductions, square and square root in FP32 for the same reason.
FP32_IN_FP16_OPS = ("LayerNormalization",)
FP32_IN_FP16_OPS_DECOMPOSED = ("ReduceMean", "Pow", "Sqrt")


def _fp32_ops(model) -> list:
    ops = {node.op_type for node in model.graph.node}
    decomposed = list(FP32_IN_FP16_OPS_DECOMPOSED) if {"ReduceMean", "Sqrt"} <= ops else []
    return [op for op in (*FP32_IN_FP16_OPS, *decomposed) if op in ops]


def convert_fp16(fp32_path: Path, destination: Path) -> None:
    """FP16 weights and compute, FP32 graph inputs/outputs (casts at the edges); LayerNorm in FP32."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    blocked = list(float16.DEFAULT_OP_BLOCK_LIST) + _fp32_ops(model)
    _unshare_initializers(model.graph, blocked)
    with warnings.catch_warnings():
        # One warning per tiny weight clipped to FP16's range: expected, and reported by accuracy.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False, op_block_list=blocked)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(destination))


# Q/DQ in FP16 needs opset 19 (QuantizeLinear/DequantizeLinear-19 take float16 input and scale).
FP16_QDQ_OPSET = 19


def qdq_to_fp16(qdq_path: Path, destination: Path) -> None:
    """The Q/DQ graph with FP16 everywhere outside the Q/DQ pairs; FP32 graph inputs and outputs.

    For strongly typed TensorRT (10.x, 11.x) every tensor runs in the type the graph gives it,
    so the layers that are not INT8 run in FP16 only if the graph says FP16. Every float
    initializer and constant (Q/DQ scales included, so each QuantizeLinear reads an FP16 input
    with an FP16 scale and each DequantizeLinear writes FP16) becomes FP16, the graph is moved to
    opset 19 where Q/DQ accept FP16, and Casts at the edges keep the I/O contract (FP32).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper, version_converter

    model = onnx.load(str(qdq_path))
    if model.opset_import[0].version < FP16_QDQ_OPSET:
        model = version_converter.convert_version(model, FP16_QDQ_OPSET)
    graph = model.graph
    kept_fp32 = _keep_in_fp32(graph, _fp32_ops(model), helper, TensorProto)
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in kept_fp32:
            tensor.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(tensor)), tensor.name))
    for node in graph.node:
        if node.op_type == "Cast" and node.name.endswith(KEEP_FP32_SUFFIX):
            continue  # the casts into the FP32 islands
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(attribute.t)), attribute.t.name))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    _cast_edges(graph, helper, TensorProto)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))


KEEP_FP32_SUFFIX = "_KeepFp32"


def _unshare_initializers(graph, op_types) -> None:
    """Nodes kept in FP32 get their own copy of an initializer that other nodes read too (the
    simplifier merges equal constants, e.g. zero biases), so converting the others' copy to
    FP16 leaves theirs FP32."""
    initializers = {i.name: i for i in graph.initializer}
    blocked = [n for n in graph.node if n.op_type in op_types]
    blocked_ids = {id(n) for n in blocked}
    shared = {name for n in graph.node if id(n) not in blocked_ids for name in n.input if name in initializers}
    for node in blocked:
        for index, name in enumerate(node.input):
            if name in shared:
                copy = graph.initializer.add()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}_{node.name}_fp32"
                node.input[index] = copy.name


def _keep_in_fp32(graph, op_types, helper, TensorProto) -> set:
    """Nodes of `op_types` read FP32 (a Cast in front of each activation input) and hand FP16 on
    (a Cast behind each output); returns the initializers they alone read, to stay FP32."""
    if not op_types:
        return set()
    nodes = [n for n in graph.node if n.op_type in op_types]
    initializers = {i.name for i in graph.initializer}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(id(node))
    kept = {name for n in nodes for name in n.input if name in initializers and readers[name] <= {id(m) for m in nodes}}
    casts = []
    for node in nodes:
        for index, name in enumerate(node.input):
            if name and name not in kept:
                node.input[index] = f"{name}_{node.name}_fp32"
                casts.append(helper.make_node("Cast", [name], [node.input[index]], name=f"{node.input[index]}{KEEP_FP32_SUFFIX}", to=TensorProto.FLOAT))
        for index, name in enumerate(node.output):
            node.output[index] = f"{name}_fp32"
            casts.append(helper.make_node("Cast", [node.output[index]], [name], name=f"{name}_fp16{KEEP_FP32_SUFFIX}", to=TensorProto.FLOAT16))
    graph.node.extend(casts)
    from pipeline.graph import topological_sort

    topological_sort(graph)
    return kept


def _to_fp16(values):
    import numpy as np

    finite = np.finfo(np.float16).max
    return np.clip(values, -finite, finite).astype(np.float16)


def _rename_tensor(graph, name: str) -> str:
    """Every node that reads or writes graph I/O tensor `name` uses `<name>_fp16` instead; returns it.

    (No node writes a graph input, so one rule serves inputs and outputs.)"""
    inner = f"{name}_fp16"
    for node in graph.node:
        node.input[:] = [inner if n == name else n for n in node.input]
        node.output[:] = [inner if n == name else n for n in node.output]
    return inner


def _cast_edges(graph, helper, TensorProto) -> None:
    """FP32 graph inputs cast to FP16 on entry, FP16 results cast to FP32 on exit."""
    from pipeline.graph import topological_sort

    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = _rename_tensor(graph, graph_input.name)
            graph.node.insert(0, helper.make_node("Cast", [graph_input.name], [inner], name=f"{graph_input.name}_CastToFp16", to=TensorProto.FLOAT16))
    for graph_output in graph.output:
        if graph_output.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = _rename_tensor(graph, graph_output.name)
            graph.node.append(helper.make_node("Cast", [inner], [graph_output.name], name=f"{graph_output.name}_CastToFp32", to=TensorProto.FLOAT))
    topological_sort(graph)
