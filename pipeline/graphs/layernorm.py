"""LayerNormalization written out in primitive ops, for TensorRT releases whose ONNX parser
lacks it.

TensorRT's ONNX parser reads `LayerNormalization` (opset 17) from 8.6 on; 8.5 (JetPack 5.1)
refuses the graph. A target that lists a release before 8.6 therefore gets graphs with the
decomposition torch writes below opset 17 (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div,
Mul, Add), which 8.5 builds and which 8.6+ still recognises as a normalization. The FP16 graphs
keep the reductions, square and square root in FP32 (pipeline.graphs.fp16).
"""

from __future__ import annotations

from typing import Any, List, Tuple

from pipeline.errors import StageError
from pipeline.graphs.query import read_graph

FIRST_RELEASE_WITH_LAYERNORM = (8, 6)


def needs_decomposed_layernorm(tensorrt_versions: Tuple[str, ...]) -> bool:
    """Whether any listed TensorRT release predates the parser's LayerNormalization."""

    def release(version: str) -> Tuple[int, int]:
        parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
        return (parts + [0, 0])[0], (parts + [0, 0])[1]

    return any(release(v) < FIRST_RELEASE_WITH_LAYERNORM for v in tensorrt_versions)


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _reduce_mean(helper: Any, source: str, axes: List[int], output: str, opset: int, name: str) -> List[Any]:
    """ReduceMean over `axes`, keeping dims: axes are an attribute before opset 18, an input from it."""
    if opset < 18:
        return [helper.make_node("ReduceMean", [source], [output], name=name, axes=axes, keepdims=1)]
    axes_name = f"{name}_axes"
    constant = helper.make_node(
        "Constant",
        [],
        [axes_name],
        name=f"{name}_AxesConstant",
        value=helper.make_tensor(axes_name, 7, [len(axes)], axes),
    )  # INT64
    return [constant, helper.make_node("ReduceMean", [source, axes_name], [output], name=name, keepdims=1)]


def _decomposed(node: Any, opset: int, rank: int) -> List[Any]:
    """The nodes that compute `node` (a LayerNormalization) from primitive ops, same outputs."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = int(attributes.get("axis", -1))
    epsilon = float(attributes.get("epsilon", 1e-5))
    if axis < 0:
        axes = list(range(axis, 0))
    elif rank > 0:
        axes = [a - rank for a in range(axis, rank)]
    else:
        raise StageError(
            f"LayerNormalization {node.name!r}: axis {axis} on a tensor of unknown rank cannot be decomposed"
        )
    if len(node.output) > 1 and any(node.output[1:]):
        raise StageError(f"LayerNormalization {node.name!r}: its mean/inv-std outputs are used; cannot decompose")
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    p = node.name or node.output[0]
    t = {
        k: f"{p}/{k}" for k in ("mean", "centered", "two", "square", "var", "eps", "var_eps", "std", "normed", "scaled")
    }
    nodes = _reduce_mean(helper, x, axes, t["mean"], opset, f"{p}/ReduceMean")
    nodes += [
        helper.make_node("Sub", [x, t["mean"]], [t["centered"]], name=f"{p}/Sub"),
        helper.make_node(
            "Constant", [], [t["two"]], name=f"{p}/TwoConstant", value=helper.make_tensor(t["two"], 1, [], [2.0])
        ),
        helper.make_node("Pow", [t["centered"], t["two"]], [t["square"]], name=f"{p}/Pow"),
    ]
    nodes += _reduce_mean(helper, t["square"], axes, t["var"], opset, f"{p}/ReduceMean_1")
    out = node.output[0]
    nodes += [
        helper.make_node(
            "Constant", [], [t["eps"]], name=f"{p}/EpsConstant", value=helper.make_tensor(t["eps"], 1, [], [epsilon])
        ),
        helper.make_node("Add", [t["var"], t["eps"]], [t["var_eps"]], name=f"{p}/Add"),
        helper.make_node("Sqrt", [t["var_eps"]], [t["std"]], name=f"{p}/Sqrt"),
        helper.make_node("Div", [t["centered"], t["std"]], [t["normed"]], name=f"{p}/Div"),
        helper.make_node("Mul", [t["normed"], scale], [t["scaled"] if bias else out], name=f"{p}/Mul"),
    ]
    if bias:
        nodes.append(helper.make_node("Add", [t["scaled"], bias], [out], name=f"{p}/Add_1"))
    return nodes


def decompose_layernorm(model: Any) -> int:
    """Replace every LayerNormalization in `model` (an onnx ModelProto) in place; returns how many."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.graph.value_info, *inferred.graph.input)}
    opset, graph, count = _opset(model), model.graph, 0
    rewritten = []
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            rewritten += _decomposed(node, opset, ranks.get(node.input[0], 0))
            count += 1
        else:
            rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    return count


def fp32_nodes(graph: Any) -> List[Any]:
    """The LayerNorm nodes an FP16 graph keeps in FP32: each LayerNormalization, and in the
    decomposed form the variance chain Pow -> ReduceMean -> Add(epsilon) -> Sqrt (a square of an
    activation past ~256 overflows FP16; the mean and the centred values do not)."""
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def sole_consumer(node: Any, op_type: str) -> Any:
        found = consumers.get(node.output[0], [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    kept = []
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            kept.append(node)
        elif node.op_type == "Pow":
            chain, current = [node], node
            for op_type in ("ReduceMean", "Add", "Sqrt"):
                current = sole_consumer(current, op_type)
                if current is None:
                    break
                chain.append(current)
            if len(chain) == 4:
                kept += chain
    return kept


def layernorm_count(path: Any) -> int:

    return sum(n.op_type == "LayerNormalization" for n in read_graph(path).node)
