"""The torch twin of an ONNX graph: the same ops, in the same order, with the same Q/DQ.

Built from a Q/DQ graph and the FP32 graph it was made from, the twin computes what ONNX
Runtime computes when it runs the Q/DQ nodes as float ops (quantize: divide, round half to
even, add the zero point, clamp; dequantize: subtract, multiply), which is what the integer
kernels compute too when they do not saturate. Unlike the ONNX graph it is differentiable:

- the weights are the FP32 graph's float initializers (torch parameters), quantized on the fly
  per output channel with the graph's symmetric scheme (scale = max |w| / the graph's qmax), so
  a fine-tune sees exactly the quantization that re-quantizing its weights will give;
- rounding passes gradients straight through (inside the clamp range).

The Q/DQ graph's activation scales are fixed (the calibration's ranges); `activation_scales`
lets a caller try other ranges without writing a graph. A graph without Q/DQ (the FP32 graph
itself) gives the FP32 twin, the teacher of the fine-tune.

Q/DQ and Constant are interpreted here; every other op comes from the op tables of
pipeline.graphs.twin_ops and twin_spatial. A graph with an op (or an op setting) outside them is
refused when the twin is built, with TwinUnsupportedOp; `unsupported_ops` asks first.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from pipeline.errors import StageError
from pipeline.graphs.twin_ops import LIMITS, OPS, Op, attr
from pipeline.graphs.twin_spatial import SPATIAL_LIMITS, SPATIAL_OPS

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# The integer range of each ONNX element type a Q/DQ pair may use.
INTEGER_RANGE = {2: (0.0, 255.0), 3: (-128.0, 127.0)}  # UINT8, INT8
FLOAT, INT32 = 1, 6  # ONNX element types


def _torch():
    import torch

    return torch


def _round_ste(value: Any) -> Any:
    """round-half-to-even forward, identity backward (the straight-through estimator)."""
    return value + (value.round() - value).detach()


def _per_axis(values: Any, axis: int, rank: int) -> Any:
    """A 1-D per-channel tensor shaped to broadcast along `axis` of a rank-`rank` tensor."""
    if values.dim() == 0:
        return values
    shape = [1] * rank
    shape[axis % rank] = -1
    return values.reshape(shape)


def quantize_weight(weight: Any, qmax: float, axis: int) -> Any:
    """Symmetric per-channel fake quantization of a weight: scale = max |w| / qmax per channel."""
    torch = _torch()
    dims = [d for d in range(weight.dim()) if d != axis % weight.dim()]
    absmax = weight.detach().abs().amax(dim=dims) if dims else weight.detach().abs()
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    scale = _per_axis(scale, axis, weight.dim())
    return torch.clamp(_round_ste(weight / scale), -qmax, qmax) * scale


class TwinUnsupportedOp(StageError):
    """The graph has an op (or an op setting) the twin does not compute: no fine-tune for it.

    Raised when the twin is built, before any forward pass, so a caller can go on without the
    fine-tune and say why; `unsupported_ops` asks the same question without building a twin.
    """

    def __init__(self, op_type: str, node_name: str, reason: str = "") -> None:
        self.op_type, self.node_name, self.reason = op_type, node_name, reason
        detail = f" with {reason}" if reason else ""
        super().__init__(
            f"the torch twin has no {op_type}{detail} (node {node_name or 'unnamed'}); "
            "the quantization-aware fine-tune cannot run on this graph"
        )


@lru_cache(maxsize=1)
def _op_table() -> Tuple[Dict[str, Op], Dict[str, Callable[[Any], Optional[str]]]]:
    """Every op the twin computes beside Q/DQ and Constant, and their unsupported settings."""
    return {**OPS, **SPATIAL_OPS}, {**LIMITS, **SPATIAL_LIMITS}


def _element_types(graph: Any) -> Dict[str, int]:
    """ONNX element type of every initializer and Constant output (the zero points among them)."""
    types = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:
        value = attr(node, "value") if node.op_type == "Constant" else None
        if value is not None:
            types[node.output[0]] = value.data_type
    return types


def _why_not(node: Any, element_types: Dict[str, int]) -> Optional[str]:
    """Why the twin cannot compute `node` ("" reason: the op itself), or None when it can."""
    ops, limits = _op_table()
    if node.domain not in ("", "ai.onnx"):
        return ""
    if node.op_type in (QUANTIZE, DEQUANTIZE):
        zero = node.input[2] if len(node.input) > 2 else ""
        allowed = set(INTEGER_RANGE) | ({INT32} if node.op_type == DEQUANTIZE else set())
        return None if element_types.get(zero) in allowed else "a zero point that is not 8-bit"
    if node.op_type == "Constant":
        return None
    if node.op_type not in ops:
        return ""
    limit = limits.get(node.op_type)
    return limit(node) if limit else None


def _unsupported_nodes(graph: Any) -> List[Tuple[Any, str]]:
    types = _element_types(graph)
    found = [(node, _why_not(node, types)) for node in graph.node]
    return [(node, why) for node, why in found if why is not None]


def unsupported_ops(graph: Any) -> List[str]:
    """The ops of `graph` (an onnx GraphProto) the twin cannot compute, each once: "Squeeze",
    "Resize with mode cubic"... Empty when `Twin(graph, ...)` can be built."""
    names = []
    for node, why in _unsupported_nodes(graph):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        name = f"{op} with {why}" if why else op
        if name not in names:
            names.append(name)
    return names


def _constant_node_value(node: Any) -> np.ndarray:
    """The value of a Constant node, whichever attribute holds it."""
    from onnx import numpy_helper

    for name, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        value = attr(node, name)
        if value is not None:
            return np.array(value, dtype=dtype)
    value = attr(node, "value")
    if value is None:
        raise TwinUnsupportedOp("Constant", node.name, "a sparse or string value")
    return np.array(numpy_helper.to_array(value))


def _as_tensor(value: np.ndarray) -> Any:
    """A torch tensor of a stored value; floats of any width as float32 (the twin's one float type)."""
    torch = _torch()
    if value.dtype.kind == "f":
        return torch.tensor(np.array(value, dtype=np.float32))
    return torch.from_numpy(np.array(value))


def weight_sources(graph: Any, fp32_graph: Any) -> Dict[str, str]:
    """DequantizeLinear output -> the FP32 initializer it stands for: the node reading it has the
    same name in both graphs, so the FP32 node's input at the same position names the weight
    (no reliance on the quantizer's naming of the integer copies)."""
    fp32_inputs = {node.name: list(node.input) for node in fp32_graph.node}
    dequantized = {node.output[0] for node in graph.node if node.op_type == DEQUANTIZE}
    sources: Dict[str, str] = {}
    for node in graph.node:
        original = fp32_inputs.get(node.name)
        if original is None or node.op_type in (DEQUANTIZE, QUANTIZE):
            continue
        for position, name in enumerate(node.input):
            if name in dequantized and position < len(original):
                sources.setdefault(name, original[position])
    return sources


class Twin:
    """A differentiable copy of a (Q/DQ) ONNX graph; see the module docstring.

    Raises TwinUnsupportedOp when the graph has an op the twin does not compute.
    """

    def __init__(self, graph: Any, fp32_graph: Any) -> None:
        from onnx import numpy_helper

        problems = _unsupported_nodes(graph)
        if problems:
            node, why = problems[0]
            raise TwinUnsupportedOp(node.op_type, node.name, why)
        torch = _torch()
        self.graph = graph
        floats = {t.name: numpy_helper.to_array(t) for t in fp32_graph.initializer if t.data_type == FLOAT}
        self.constants: Dict[str, Any] = {}
        self.params: Dict[str, Any] = {}
        self.weights: Dict[str, Tuple[str, float, int]] = {}  # DQ output -> (param, qmax, axis)
        self.biases: Dict[str, str] = {}  # DQ output -> param (int32 bias: used unrounded)
        for tensor in graph.initializer:
            value = numpy_helper.to_array(tensor)
            if tensor.name in floats:
                self.params[tensor.name] = torch.tensor(np.array(value, dtype=np.float32), requires_grad=True)
            else:
                self.constants[tensor.name] = _as_tensor(value)
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = _as_tensor(_constant_node_value(node))
        self._bind_weights(floats, weight_sources(graph, fp32_graph))
        # BatchNorm statistics are data, not weights: the fine-tune leaves them as they are.
        self.frozen = {name for node in graph.node if node.op_type == "BatchNormalization" for name in node.input[3:5]}
        for name in self.frozen & set(self.params):
            self.params[name].requires_grad_(False)
        self.activation_scales: Dict[str, Tuple[Any, Any]] = {}  # tensor -> (scale, zero point) overrides
        self.float_tensors: set = set()  # tensors (activations or weight names) left unquantized
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self._ops = _op_table()[0]

    def _bind_weights(self, floats: Dict[str, np.ndarray], sources: Dict[str, str]) -> None:
        torch = _torch()
        found = []
        for node in self.graph.node:
            if node.op_type != DEQUANTIZE or node.input[0] not in self.constants:
                continue
            base = sources.get(node.output[0])
            if base not in floats:
                continue
            stored = self.constants[node.input[0]]
            self.params.setdefault(base, torch.tensor(np.array(floats[base], dtype=np.float32), requires_grad=True))
            if stored.dtype == torch.int32:
                self.biases[node.output[0]] = base
            else:
                axis = attr(node, "axis", 1) if self.constants[node.input[1]].dim() else None
                found.append((node.output[0], base, axis, float(stored.abs().max())))
        # Every weight of a graph shares one integer range (127, or 64 with reduce_range); a weight
        # that is all zeros (a zero-initialised layer) does not show it, the others do.
        qmax = max((q for *_, q in found), default=127.0) or 127.0
        for out, base, axis, _ in found:
            self.weights[out] = (base, qmax, axis)

    def to(self, device: Any) -> "Twin":
        """Weights and float constants on `device` (integer constants, e.g. shapes, stay on the CPU)."""
        for name, p in self.params.items():
            self.params[name] = p.detach().to(device).requires_grad_(p.requires_grad)
        for name, c in self.constants.items():
            if c.is_floating_point():
                self.constants[name] = c.to(device)
        return self

    def trainable(self) -> List[Any]:
        return [p for name, p in self.params.items() if p.dim() > 0 and name not in self.frozen]

    def _value(self, name: str, env: Dict[str, Any]) -> Any:
        if name in env:
            return env[name]
        if name in self.params:
            return self.params[name]
        return self.constants[name]

    def _quantize(self, node: Any, args: List[Any]) -> Any:
        torch = _torch()
        scale, zero = self.activation_scales.get(node.input[0], (args[1], args[2]))
        bounds = INTEGER_RANGE[3 if zero.dtype == torch.int8 else 2]
        axis = attr(node, "axis", 1)
        device = args[0].device
        scale_b = _per_axis(scale.to(device), axis, args[0].dim())
        zero_b = _per_axis(zero.float().to(device), axis, args[0].dim())
        return torch.clamp(_round_ste(args[0] / scale_b) + zero_b, bounds[0], bounds[1]), (scale_b, zero_b)

    def _quantize_node(self, node: Any, args: List[Any], qparams: Dict[str, Any]) -> Any:
        out = node.output[0]
        if node.input[0] in self.float_tensors:
            qparams[out] = None
            # Unquantized, but a range that starts at zero stands for a ReLU the quantizer removed.
            lowest = INTEGER_RANGE[3 if args[2].dtype == _torch().int8 else 2][0]
            return _torch().relu(args[0]) if float(args[2].min()) == lowest else args[0]
        q, qparams[out] = self._quantize(node, args)
        return q

    def _weight(self, out: str) -> Any:
        """A dequantized weight: the float parameter, fake-quantized as the graph stores it."""
        base, qmax, axis = self.weights[out]
        weight = self.params[base]
        if base in self.float_tensors:
            return weight
        return quantize_weight(weight, qmax, axis) if axis is not None else _per_tensor(weight, qmax)

    @staticmethod
    def _dequantize(node: Any, args: List[Any], qparams: Dict[str, Any]) -> Any:
        if node.input[0] in qparams and qparams[node.input[0]] is None:
            return args[0]
        if node.input[0] in qparams:
            scale, zero = qparams[node.input[0]]
        else:
            axis = attr(node, "axis", 1)
            device = args[1].device
            scale, zero = (
                _per_axis(args[1], axis, args[0].dim()),
                _per_axis(args[2].float().to(device), axis, args[0].dim()),
            )
        return (args[0].float() - zero) * scale

    def _node(self, node: Any, env: Dict[str, Any], qparams: Dict[str, Any]) -> Any:
        op, out = node.op_type, node.output[0]
        if op == DEQUANTIZE and out in self.weights:
            return self._weight(out)
        if op == DEQUANTIZE and out in self.biases:
            return self.params[self.biases[out]]
        args = [self._value(name, env) if name else None for name in node.input]
        if op == QUANTIZE:
            return self._quantize_node(node, args, qparams)
        if op == DEQUANTIZE:
            return self._dequantize(node, args, qparams)
        return self._ops[op](node, _same_device(args))

    def __call__(self, images: Any, keep: Optional[List[str]] = None) -> Any:
        """The graph output for `images`; with `keep`, also those intermediate tensors (a dict)."""
        env: Dict[str, Any] = {self.input_name: images}
        qparams: Dict[str, Any] = {}
        for node in self.graph.node:
            if node.op_type == "Constant":  # folded into self.constants when built
                continue
            result = self._node(node, env, qparams)
            for name, value in zip(node.output, result if isinstance(result, tuple) else (result,)):
                if name:
                    env[name] = value
        if keep is None:
            return env[self.output_name]
        return env[self.output_name], {name: env[name] for name in keep}

    def float_initializers(self) -> Dict[str, np.ndarray]:
        """The trained float weights and biases, by their FP32 graph names."""
        return {name: p.detach().cpu().numpy().astype(np.float32) for name, p in self.params.items()}


def _same_device(args: List[Any]) -> List[Any]:
    """Float inputs on the device of the activations (shape arithmetic makes float tensors on the
    CPU, e.g. Shape -> Cast -> Sqrt for attention's scale, that meet activations on a GPU)."""
    device = next((a.device for a in args if a is not None and a.device.type != "cpu"), None)
    if device is None:
        return args
    return [a.to(device) if a is not None and a.is_floating_point() and a.device != device else a for a in args]


def _per_tensor(weight: Any, qmax: float) -> Any:
    scale = weight.detach().abs().max() / qmax
    scale = scale if float(scale) > 0 else scale + 1.0
    return _torch().clamp(_round_ste(weight / scale), -qmax, qmax) * scale


def load_twin(graph_path: Any, fp32_path: Any) -> Twin:
    import onnx

    return Twin(onnx.load(str(graph_path)).graph, onnx.load(str(fp32_path)).graph)
