"""The ops of the torch twin (pipeline.graphs.twin): one function per ONNX op.

Each op takes the node and its inputs (torch tensors, None for an omitted optional input) and
returns its output, or a tuple of outputs for a node with several. Inputs that an older opset
gave as attributes (Squeeze/Unsqueeze/Reduce* axes, Split sizes, Clip bounds, Pad pads) are read
from either place. Integer tensors (shapes, indices) stay integer tensors; float tensors stay
float32 whatever their ONNX type (a Cast to FLOAT16 or DOUBLE included), so gradients flow.

`OPS` is the op table; `LIMITS` names, per op, the attribute settings the twin does not compute
(the twin refuses such a graph when it is built, never halfway through a forward pass).
torch is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Dict, List, Optional


class _Lazy:
    """A module imported on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


torch: Any = _Lazy("torch")
F: Any = _Lazy("torch.nn.functional")

Op = Callable[[Any, List[Any]], Any]


def attr(node: Any, name: str, default: Any = None) -> Any:
    """A node attribute's value (strings decoded), or `default`."""
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            value = helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _ints(tensor: Any) -> List[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


def _arg(args: List[Any], index: int) -> Any:
    """Optional input `index`: None when omitted (absent or given as an empty name)."""
    return args[index] if len(args) > index else None


def _axes(node: Any, args: List[Any], index: int) -> Optional[List[int]]:
    """Axes given as input `index` (opset 13+ / 18+) or as the `axes` attribute (earlier opsets)."""
    given = _arg(args, index)
    if given is not None:
        return _ints(given)
    listed = attr(node, "axes")
    return None if listed is None else list(listed)


# --- element-wise ---------------------------------------------------------------------------------


def _div(node: Any, args: List[Any]) -> Any:
    a, b = args
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


def _mod(node: Any, args: List[Any]) -> Any:
    # fmod=1: the sign of the dividend (C fmod); fmod=0: the sign of the divisor (Python %).
    return torch.fmod(args[0], args[1]) if attr(node, "fmod", 0) else torch.remainder(args[0], args[1])


def _variadic(combine: Callable[[Any, Any], Any]) -> Op:
    def op(node: Any, args: List[Any]) -> Any:
        out = args[0]
        for other in args[1:]:
            out = combine(out, other)
        return out

    return op


def _clip(node: Any, args: List[Any]) -> Any:
    low, high = _arg(args, 1), _arg(args, 2)
    low = low.item() if low is not None else attr(node, "min")
    high = high.item() if high is not None else attr(node, "max")
    return torch.clamp(args[0], low, high)


def _hard_sigmoid(node: Any, args: List[Any]) -> Any:
    return torch.clamp(attr(node, "alpha", 0.2) * args[0] + attr(node, "beta", 0.5), 0.0, 1.0)


def _prelu(node: Any, args: List[Any]) -> Any:
    return torch.where(args[0] < 0, args[0] * args[1], args[0])


def _selu(node: Any, args: List[Any]) -> Any:
    alpha, gamma = attr(node, "alpha", 1.67326319217681884765625), attr(node, "gamma", 1.05070102214813232421875)
    return gamma * torch.where(args[0] > 0, args[0], alpha * torch.expm1(args[0]))


def _dropout(node: Any, args: List[Any]) -> Any:
    """Inference: the input unchanged (and an all-true mask when the node asks for one)."""
    if len(node.output) > 1 and node.output[1]:
        return args[0], torch.ones_like(args[0], dtype=torch.bool)
    return args[0]


# ONNX TensorProto element types -> the torch dtype the twin computes in (floats: float32).
CAST_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "int32",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float32",
    11: "float32",
    12: "int64",
    13: "int64",
    16: "float32",
}


def _cast(node: Any, args: List[Any]) -> Any:
    return args[0].to(getattr(torch, CAST_TYPES[attr(node, "to")]))


def _cast_like(node: Any, args: List[Any]) -> Any:
    return args[0].to(torch.float32 if args[1].is_floating_point() else args[1].dtype)


# --- shapes and indexing ----------------------------------------------------------------------------


def _shape(node: Any, args: List[Any]) -> Any:
    dims = list(args[0].shape)[attr(node, "start", 0) : attr(node, "end", None)]
    return torch.tensor(dims, dtype=torch.int64)


def _reshape(node: Any, args: List[Any]) -> Any:
    x, dims = args[0], _ints(args[1])
    if not attr(node, "allowzero", 0):  # 0 copies the input's dimension
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(node: Any, args: List[Any]) -> Any:
    """(product of the dimensions before `axis`, product of the rest): axis 0 gives (1, n)."""
    x, axis = args[0], attr(node, "axis", 1)
    axis = axis + x.dim() if axis < 0 else axis  # in [-rank, rank]
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _squeeze(node: Any, args: List[Any]) -> Any:
    x, axes = args[0], _axes(node, args, 1)
    if not axes:  # no axes: every dimension of size 1
        return x.squeeze()
    for axis in sorted({a % x.dim() for a in axes}, reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(node: Any, args: List[Any]) -> Any:
    x, axes = args[0], _axes(node, args, 1) or []
    rank = x.dim() + len(axes)  # negative axes count from the output's end
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _transpose(node: Any, args: List[Any]) -> Any:
    return args[0].permute(*attr(node, "perm", list(reversed(range(args[0].dim())))))


def _split(node: Any, args: List[Any]) -> Any:
    x = args[0]
    axis = attr(node, "axis", 0) % x.dim()
    sizes = _arg(args, 1)
    sizes = _ints(sizes) if sizes is not None else attr(node, "split")
    if sizes:
        return tuple(torch.split(x, list(sizes), axis))
    parts = attr(node, "num_outputs", len(node.output))  # equal parts, the last one smaller
    return tuple(torch.split(x, -(-x.shape[axis] // parts), axis))


def _slice(node: Any, args: List[Any]) -> Any:
    """ONNX Slice with starts, ends and optional axes and steps as tensors (Python's clamping)."""
    x = args[0]
    starts, ends = _ints(args[1]), _ints(args[2])
    axes = _ints(args[3]) if _arg(args, 3) is not None else list(range(len(starts)))
    steps = _ints(args[4]) if _arg(args, 4) is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        picked = slice(start, end, step).indices(x.shape[axis])
        if step > 0:
            x = x[(slice(None),) * axis + (slice(*picked),)]
        else:  # torch slices only forwards
            x = x.index_select(axis, torch.arange(*picked, device=x.device))
    return x


def _gather(node: Any, args: List[Any]) -> Any:
    data, index = args[0], args[1].to(args[0].device)
    axis = attr(node, "axis", 0) % data.dim()
    index = torch.where(index < 0, index + data.shape[axis], index).long()  # negative: from the end
    picked = data.index_select(axis, index.reshape(-1))
    return picked.reshape(data.shape[:axis] + index.shape + data.shape[axis + 1 :])


def _gather_elements(node: Any, args: List[Any]) -> Any:
    data, index = args[0], args[1].to(args[0].device)
    axis = attr(node, "axis", 0) % data.dim()
    return torch.gather(data, axis, torch.where(index < 0, index + data.shape[axis], index).long())


def _expand(node: Any, args: List[Any]) -> Any:
    shape = torch.broadcast_shapes(tuple(args[0].shape), tuple(_ints(args[1])))
    return torch.broadcast_to(args[0], shape)


def _constant_of_shape(node: Any, args: List[Any]) -> Any:
    import numpy as np
    from onnx import numpy_helper

    value = attr(node, "value")
    array = numpy_helper.to_array(value).reshape(-1)[:1] if value is not None else np.zeros(1, np.float32)
    fill = torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype))
    return fill.reshape(()).expand(_ints(args[0])).clone()


def _range(node: Any, args: List[Any]) -> Any:
    start, limit, delta = (a.item() for a in args)
    dtype = torch.float32 if args[0].is_floating_point() else args[0].dtype
    return torch.arange(start, limit, delta, dtype=dtype)


def _where(node: Any, args: List[Any]) -> Any:
    condition, a, b = args
    device = a.device if a.dim() else b.device
    return torch.where(condition.to(device), a, b)


def _size(node: Any, args: List[Any]) -> Any:
    return torch.tensor(args[0].numel(), dtype=torch.int64)


# --- reductions ------------------------------------------------------------------------------------


def _reduce(combine: Callable[[Any, List[int], bool], Any], axes_input: int = 1) -> Op:
    """A Reduce* op: axes from the attribute or input `axes_input`, keepdims, noop_with_empty_axes."""

    def op(node: Any, args: List[Any]) -> Any:
        x, axes = args[0], _axes(node, args, axes_input)
        if not axes and attr(node, "noop_with_empty_axes", 0):
            return x
        dims = sorted({a % x.dim() for a in axes}) if axes else list(range(x.dim()))
        return combine(x, dims, bool(attr(node, "keepdims", 1)))

    return op


def _prod(x: Any, dims: List[int], keep: bool) -> Any:
    for dim in reversed(dims):
        x = x.prod(dim=dim, keepdim=keep)
    return x


REDUCTIONS: Dict[str, Callable[[Any, List[int], bool], Any]] = {
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _arg_extreme(pick: Callable[..., Any]) -> Op:
    """ArgMax/ArgMin: with select_last_index, the last of equal values."""

    def op(node: Any, args: List[Any]) -> Any:
        x, axis, keep = args[0], attr(node, "axis", 0) % args[0].dim(), bool(attr(node, "keepdims", 1))
        if not attr(node, "select_last_index", 0):
            return pick(x, dim=axis, keepdim=keep)
        return x.shape[axis] - 1 - pick(x.flip(axis), dim=axis, keepdim=keep)

    return op


# --- matrix products and normalization -------------------------------------------------------------


def _gemm(node: Any, args: List[Any]) -> Any:
    a, b, c = args[0], args[1], _arg(args, 2)
    a = a.transpose(0, 1) if attr(node, "transA", 0) else a
    b = b.transpose(0, 1) if attr(node, "transB", 0) else b
    out = attr(node, "alpha", 1.0) * (a @ b)
    return out if c is None else out + attr(node, "beta", 1.0) * c


def _layer_norm(node: Any, args: List[Any]) -> Any:
    x, scale, bias = args[0], args[1], _arg(args, 2)
    axis = attr(node, "axis", -1) % x.dim()
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, attr(node, "epsilon", 1e-5))


def _batch_norm(node: Any, args: List[Any]) -> Any:
    """Inference form: the stored mean and variance."""
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attr(node, "epsilon", 1e-5))


def _instance_norm(node: Any, args: List[Any]) -> Any:
    return F.instance_norm(args[0], weight=args[1], bias=args[2], eps=attr(node, "epsilon", 1e-5))


def _softmax(log: bool) -> Op:
    def op(node: Any, args: List[Any]) -> Any:
        axis = attr(node, "axis", -1)
        return torch.log_softmax(args[0], dim=axis) if log else torch.softmax(args[0], dim=axis)

    return op


def _einsum(node: Any, args: List[Any]) -> Any:
    return torch.einsum(attr(node, "equation"), *args)


def _unary(name: str) -> Op:
    """An element-wise op computed by the torch function of that name."""
    return lambda node, args: getattr(torch, name)(args[0])


def _binary(name: str) -> Op:
    return lambda node, args: getattr(torch, name)(args[0], args[1])


OPS: Dict[str, Op] = {
    **{
        op: _unary(name)
        for op, name in {
            "Relu": "relu",
            "Sigmoid": "sigmoid",
            "Tanh": "tanh",
            "Erf": "erf",
            "Sqrt": "sqrt",
            "Exp": "exp",
            "Log": "log",
            "Neg": "neg",
            "Abs": "abs",
            "Reciprocal": "reciprocal",
            "Floor": "floor",
            "Ceil": "ceil",
            "Round": "round",
            "Sign": "sign",
            "Sin": "sin",
            "Cos": "cos",
            "Not": "logical_not",
            "IsNaN": "isnan",
        }.items()
    },
    **{
        op: _binary(name)
        for op, name in {
            "Add": "add",
            "Sub": "sub",
            "Mul": "mul",
            "Pow": "pow",
            "MatMul": "matmul",
            "Equal": "eq",
            "Greater": "gt",
            "Less": "lt",
            "GreaterOrEqual": "ge",
            "LessOrEqual": "le",
            "And": "logical_and",
            "Or": "logical_or",
            "Xor": "logical_xor",
        }.items()
    },
    **{op: _reduce(combine) for op, combine in REDUCTIONS.items()},
    "Div": _div,
    "Mod": _mod,
    "Min": _variadic(lambda a, b: torch.minimum(a, b)),
    "Max": _variadic(lambda a, b: torch.maximum(a, b)),
    "Sum": _variadic(lambda a, b: a + b),
    "Mean": lambda node, args: _variadic(lambda a, b: a + b)(node, args) / len(args),
    "Clip": _clip,
    "Where": _where,
    "Softplus": lambda node, args: F.softplus(args[0]),
    "Softsign": lambda node, args: F.softsign(args[0]),
    "Mish": lambda node, args: F.mish(args[0]),
    "Gelu": lambda node, args: F.gelu(args[0], approximate=attr(node, "approximate", "none")),
    "LeakyRelu": lambda node, args: F.leaky_relu(args[0], attr(node, "alpha", 0.01)),
    "Elu": lambda node, args: F.elu(args[0], attr(node, "alpha", 1.0)),
    "Celu": lambda node, args: F.celu(args[0], attr(node, "alpha", 1.0)),
    "Selu": _selu,
    "PRelu": _prelu,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": lambda node, args: F.hardswish(args[0]),
    "Softmax": _softmax(log=False),
    "LogSoftmax": _softmax(log=True),
    "Identity": lambda node, args: args[0],
    "Dropout": _dropout,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Shape": _shape,
    "Size": _size,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": lambda node, args: torch.cat(args, dim=attr(node, "axis", 0)),
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Expand": _expand,
    "Tile": lambda node, args: args[0].repeat(*_ints(args[1])),
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "ArgMax": _arg_extreme(lambda *a, **k: torch.argmax(*a, **k)),
    "ArgMin": _arg_extreme(lambda *a, **k: torch.argmin(*a, **k)),
    "Gemm": _gemm,
    "Einsum": _einsum,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
}


def _single_output(node: Any) -> Optional[str]:
    return "its extra outputs" if any(node.output[1:]) else None


# Attribute settings the ops above do not compute: op -> (node -> why not, or None).
LIMITS: Dict[str, Callable[[Any], Optional[str]]] = {
    "BatchNormalization": lambda node: "training_mode" if attr(node, "training_mode", 0) else _single_output(node),
    "LayerNormalization": _single_output,
    "Cast": lambda node: None if attr(node, "to") in CAST_TYPES else f"a cast to element type {attr(node, 'to')}",
}
