"""The FP16 graph writer: FP16 weights and compute with FP32 graph inputs and outputs."""

from __future__ import annotations

import warnings
from pathlib import Path


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
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(tensor)), tensor.name))
    for node in graph.node:
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
