"""How much memory a graph's constants take once folded, estimated without running anything.

Constant folding (onnxsim, ONNX Runtime's session optimizer) materialises every tensor that
depends on constants only. A graph of a few kilobytes can ask for gigabytes this way
(ConstantOfShape with a huge shape, Expand or Tile of a constant), so the size is read from the
graph first: its initializers and Constant nodes as stored, and the outputs of nodes whose
inputs are all constant, where their shape follows from constant inputs. Shapes that cannot be
worked out statically are not counted (the estimate errs low, never refuses a model by guess).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.errors import ModelInputError

MB = 1 << 20
# Small integer constants (shapes, repeats, axes) are followed by value; bigger ones only by shape.
MAX_TRACKED_VALUES = 64
ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Where",
    "Identity",
    "Cast",
    "Neg",
    "Abs",
    "Sqrt",
    "Exp",
    "Log",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "And",
    "Or",
    "Mod",
    "Clip",
}


@dataclass(frozen=True)
class Constant:
    """One constant of the folded graph: where it comes from and its size in bytes."""

    what: str  # "initializer 'w'" or "node 'n' (ConstantOfShape)"
    bytes: int


@dataclass
class _Known:
    """What is known about the graph's constant tensors, by name."""

    shapes: Dict[str, Tuple[int, ...]]
    itemsizes: Dict[str, int]
    values: Dict[str, np.ndarray]


def _itemsize(data_type: int) -> int:
    from onnx import helper

    try:
        return int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4


def _add_tensor(known: _Known, name: str, tensor: Any) -> int:
    """Record a stored tensor (initializer or Constant value); its size in bytes."""
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data

    shape = tuple(int(d) for d in tensor.dims)
    known.shapes[name], known.itemsizes[name] = shape, _itemsize(tensor.data_type)
    count = math.prod(shape)
    if count <= MAX_TRACKED_VALUES and not uses_external_data(tensor):
        value = numpy_helper.to_array(tensor)
        if value.dtype.kind in "iu":
            known.values[name] = value.astype(np.int64)
    return count * known.itemsizes[name]


def _broadcast(shapes: List[Optional[Tuple[int, ...]]]) -> Optional[Tuple[int, ...]]:
    if any(s is None for s in shapes):
        return None
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _value(known: _Known, name: str) -> Optional[List[int]]:
    value = known.values.get(name)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _output_shape(node: Any, known: _Known) -> Optional[Tuple[int, ...]]:
    """The shape of a constant node's output where constant inputs decide it."""
    ins = list(node.input)
    op = node.op_type
    if op == "ConstantOfShape":
        shape = _value(known, ins[0])
        return None if shape is None else tuple(max(d, 0) for d in shape)
    if op == "Expand":
        target = _value(known, ins[1])
        return None if target is None else _broadcast([known.shapes.get(ins[0]), tuple(target)])
    if op == "Tile":
        repeats, shape = _value(known, ins[1]), known.shapes.get(ins[0])
        return (
            None
            if repeats is None or shape is None or len(repeats) != len(shape)
            else tuple(d * max(r, 0) for d, r in zip(shape, repeats))
        )
    if op == "Range":
        start, limit, delta = (_value(known, i) for i in ins[:3])
        if not (start and limit and delta) or delta[0] == 0:
            return None
        return (max(math.ceil((limit[0] - start[0]) / delta[0]), 0),)
    if op in ELEMENTWISE:
        return _broadcast([known.shapes.get(i) for i in ins if i])
    return None


def _output_itemsize(node: Any, known: _Known) -> int:
    for attribute in node.attribute:
        if node.op_type == "ConstantOfShape" and attribute.name == "value":
            return _itemsize(attribute.t.data_type)
        if node.op_type == "Cast" and attribute.name == "to":
            return _itemsize(attribute.i)
    if node.op_type == "ConstantOfShape":
        return 4  # float32 zeros by default
    return known.itemsizes.get(node.input[0], 4) if node.input else 4


def _follow_values(node: Any, known: _Known) -> None:
    """Small integer results (shapes being built) by value: Identity, Cast, Concat, Unsqueeze, Squeeze."""
    inputs = [known.values.get(i) for i in node.input if i]
    if not inputs or any(v is None for v in inputs):
        return
    if node.op_type in ("Identity", "Cast", "Unsqueeze", "Squeeze"):
        known.values[node.output[0]] = inputs[0].reshape(-1) if node.op_type != "Identity" else inputs[0]
    elif node.op_type == "Concat":
        known.values[node.output[0]] = np.concatenate([v.reshape(-1) for v in inputs])


def _constant_node(node: Any, known: _Known) -> List[Constant]:
    """A Constant node's value: a tensor (counted), or a list of ints (a shape, followed by value)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return [
                Constant(
                    f"node '{node.name or node.output[0]}' (Constant)", _add_tensor(known, node.output[0], attribute.t)
                )
            ]
        if attribute.name in ("value_ints", "value_int"):
            ints = np.array(list(attribute.ints) if attribute.name == "value_ints" else attribute.i, dtype=np.int64)
            known.shapes[node.output[0]], known.itemsizes[node.output[0]], known.values[node.output[0]] = (
                ints.shape,
                8,
                ints,
            )
    return []


def folded_constants(graph: Any) -> List[Constant]:
    """Every constant of `graph` once folded, with its size (nodes are in topological order)."""
    known = _Known({}, {}, {})
    found = [Constant(f"initializer '{t.name}'", _add_tensor(known, t.name, t)) for t in graph.initializer]
    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            found += _constant_node(node, known)
            constant.add(node.output[0])
            continue
        if not node.input or not all(i in constant for i in node.input if i):
            continue
        constant.update(node.output)
        _follow_values(node, known)
        shape = _output_shape(node, known)
        if shape is not None:
            known.shapes[node.output[0]], known.itemsizes[node.output[0]] = shape, _output_itemsize(node, known)
            found.append(
                Constant(
                    f"node '{node.name or node.output[0]}' ({node.op_type})",
                    math.prod(shape) * known.itemsizes[node.output[0]],
                )
            )
    return found


def check_constant_size(graph: Any, path: Path, max_mb: float) -> None:
    """Refuse, in one line, a graph whose folded constants would exceed `max_mb` megabytes."""
    constants = folded_constants(graph)
    total = sum(c.bytes for c in constants)
    if total <= max_mb * MB:
        return
    largest = max(constants, key=lambda c: c.bytes)
    raise ModelInputError(
        f"{path}: {largest.what} makes a constant of {largest.bytes / MB:,.0f} MB; its constants would total "
        f"{total / MB:,.0f} MB once folded, over [simplify] max_constant_mb = {max_mb:g} (raise it if the "
        "model really holds that much)"
    )
