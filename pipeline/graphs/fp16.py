"""The FP16 graph writer: FP16 weights and compute with FP32 graph inputs and outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

# LayerNorm stays in FP32 in every FP16 graph: its mean of squares overflows FP16 (65504) as soon
# as a token's activations pass ~256, which transformers' residual streams do (which nodes:
# pipeline.graphs.layernorm.fp32_nodes).


def convert_fp16(fp32_path: Path, destination: Path) -> None:
    """FP16 weights and compute, FP32 graph inputs/outputs (casts at the edges); LayerNorm in FP32."""
    import onnx
    from onnxconverter_common import float16

    from pipeline.graphs.layernorm import fp32_nodes

    model = onnx.load(str(fp32_path))
    kept = fp32_nodes(model.graph)
    _unshare_initializers(model.graph, kept)
    with warnings.catch_warnings():
        # One warning per tiny weight clipped to FP16's range: expected, and reported by accuracy.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=False, node_block_list=[n.name for n in kept]
        )
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
    from pipeline.graphs.layernorm import fp32_nodes

    graph = model.graph
    kept_fp32 = _keep_in_fp32(model, fp32_nodes(graph), helper, TensorProto)
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in kept_fp32:
            tensor.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(tensor)), tensor.name))
    for node in graph.node:
        if node.op_type == "Cast" and node.name.endswith(KEEP_FP32_SUFFIX):
            continue  # the casts into the FP32 islands
        if node.op_type == "Constant" and set(node.output) <= kept_fp32:
            continue  # a constant only FP32 nodes read (e.g. LayerNorm's epsilon)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(
                    numpy_helper.from_array(_to_fp16(numpy_helper.to_array(attribute.t)), attribute.t.name)
                )
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    _cast_edges(graph, helper, TensorProto)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(destination))


KEEP_FP32_SUFFIX = "_KeepFp32"


def _unshare_initializers(graph, kept_nodes) -> None:
    """Nodes kept in FP32 get their own copy of an initializer that other nodes read too (the
    simplifier merges equal constants, e.g. zero biases), so converting the others' copy to
    FP16 leaves theirs FP32."""
    initializers = {i.name: i for i in graph.initializer}
    kept_ids = {id(n) for n in kept_nodes}
    shared = {name for n in graph.node if id(n) not in kept_ids for name in n.input if name in initializers}
    for node in kept_nodes:
        for index, name in enumerate(node.input):
            if name in shared:
                copy = graph.initializer.add()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}_{node.name}_fp32"
                node.input[index] = copy.name


def _float_tensors(model, TensorProto) -> set:
    """Names of the FP32 tensors of a (still FP32) graph: inputs, initializers, constants, values."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    values = [*graph.input, *graph.value_info, *graph.output]
    names = {v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    for node in graph.node:
        if node.op_type == "Constant" and any(
            a.name == "value" and a.t.data_type == TensorProto.FLOAT for a in node.attribute
        ):
            names.update(node.output)
    return names


def _keep_in_fp32(model, kept_nodes, helper, TensorProto) -> set:
    """`kept_nodes` compute in FP32 while the rest of the graph becomes FP16: a Cast to FP32 in
    front of each float input coming from outside them, a Cast to FP16 behind each output read
    outside them; values passed between kept nodes stay FP32. Returns the initializers only
    kept nodes read (they stay FP32)."""
    graph = model.graph
    if not kept_nodes:
        return set()
    _unshare_initializers(graph, kept_nodes)
    floats = _float_tensors(model, TensorProto)
    kept_ids = {id(n) for n in kept_nodes}
    inner = {name: f"{name}_fp32" for n in kept_nodes for name in n.output}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(id(node))
    constants = {name for n in graph.node if n.op_type == "Constant" for name in n.output}
    # Initializers and constants only kept nodes read stay FP32 themselves (no cast needed).
    initializers = {i.name for i in graph.initializer} | {c for c in constants if readers.get(c, set()) <= kept_ids}
    outputs = {o.name for o in graph.output}
    casts, cast_in = [], {}
    for node in graph.node:
        kept = id(node) in kept_ids
        for index, name in enumerate(node.input):
            if kept and name in inner:
                node.input[index] = inner[name]
            elif kept and name in floats and name not in initializers:
                if name not in cast_in:
                    cast_in[name] = f"{name}_to_fp32"
                    casts.append(
                        helper.make_node(
                            "Cast", [name], [cast_in[name]], name=f"{name}{KEEP_FP32_SUFFIX}", to=TensorProto.FLOAT
                        )
                    )
                node.input[index] = cast_in[name]
    read_outside = {name for n in graph.node if id(n) not in kept_ids for name in n.input} | outputs
    for node in kept_nodes:
        for index, name in enumerate(node.output):
            node.output[index] = inner[name]
            if name in read_outside:
                casts.append(
                    helper.make_node(
                        "Cast", [inner[name]], [name], name=f"{name}_fp16{KEEP_FP32_SUFFIX}", to=TensorProto.FLOAT16
                    )
                )
    graph.node.extend(casts)
    from pipeline.graphs.query import topological_sort

    topological_sort(graph)
    return {name for n in kept_nodes for name in n.input if name in initializers}


def _to_fp16(values):
    import numpy as np

    finite = np.finfo(np.float16).max
    return np.clip(values, -finite, finite).astype(np.float16)


def _rename_tensor(graph, name: str) -> str:
    """Every node that reads or writes graph I/O tensor `name` uses `<name>_fp16` instead; returns it.

    (No node writes a graph input, so one rule serves inputs and outputs.)"""
    from pipeline.graphs.query import rename_tensor

    inner = f"{name}_fp16"
    rename_tensor(graph, name, inner)
    return inner


def _cast_edges(graph, helper, TensorProto) -> None:
    """FP32 graph inputs cast to FP16 on entry, FP16 results cast to FP32 on exit."""
    from pipeline.graphs.query import topological_sort

    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = _rename_tensor(graph, graph_input.name)
            graph.node.insert(
                0,
                helper.make_node(
                    "Cast", [graph_input.name], [inner], name=f"{graph_input.name}_CastToFp16", to=TensorProto.FLOAT16
                ),
            )
    for graph_output in graph.output:
        if graph_output.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = _rename_tensor(graph, graph_output.name)
            graph.node.append(
                helper.make_node(
                    "Cast", [inner], [graph_output.name], name=f"{graph_output.name}_CastToFp32", to=TensorProto.FLOAT
                )
            )
    topological_sort(graph)
