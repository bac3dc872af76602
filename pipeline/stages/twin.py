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
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from pipeline.errors import StageError

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# The integer range of each ONNX element type a Q/DQ pair may use.
INTEGER_RANGE = {2: (0.0, 255.0), 3: (-128.0, 127.0)}  # UINT8, INT8


class TwinUnsupportedOp(StageError):
    """The graph has an op the twin cannot run: the fine-tune is skipped, the build goes on."""


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


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _conv(x: Any, w: Any, b: Any, node: Any) -> Any:
    import torch.nn.functional as F

    spatial = w.dim() - 2
    pads = list(_attr(node, "pads", [0] * 2 * spatial))
    if pads[:spatial] != pads[spatial:]:
        x = F.pad(x, [p for i in reversed(range(spatial)) for p in (pads[i], pads[i + spatial])])
        pads = [0] * 2 * spatial
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return conv(x, w, b, stride=list(_attr(node, "strides", [1] * spatial)), padding=pads[:spatial],
                dilation=list(_attr(node, "dilations", [1] * spatial)), groups=_attr(node, "group", 1))


def _gemm(a: Any, b: Any, c: Any, node: Any) -> Any:
    a = a.transpose(0, 1) if _attr(node, "transA", 0) else a
    b = b.transpose(0, 1) if _attr(node, "transB", 0) else b
    out = _attr(node, "alpha", 1.0) * (a @ b)
    return out if c is None else out + _attr(node, "beta", 1.0) * c


def _reshape(x: Any, shape: Any) -> Any:
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _reduce_mean(x: Any, node: Any, axes_input: Any) -> Any:
    axes = _attr(node, "axes") if axes_input is None else [int(a) for a in axes_input.tolist()]
    keep = bool(_attr(node, "keepdims", 1))
    return x.mean(dim=list(axes), keepdim=keep) if axes else x.mean()


def _layer_norm(args: List[Any], node: Any) -> Any:
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = _attr(node, "axis", -1)
    axis = axis if axis >= 0 else x.dim() + axis
    return _torch().nn.functional.layer_norm(x, tuple(x.shape[axis:]), scale, bias, _attr(node, "epsilon", 1e-5))


def _slice(args: List[Any]) -> Any:
    """ONNX Slice with starts, ends and optional axes and steps as tensors."""
    x = args[0]
    starts, ends = args[1].tolist(), args[2].tolist()
    axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    return x[tuple(index)]


def _unsqueeze(x: Any, axes: Any) -> Any:
    for axis in sorted(int(a) for a in axes.tolist()):
        x = x.unsqueeze(axis)
    return x


def _plain_op(node: Any, args: List[Any]) -> Any:
    """The ops of a simplified classifier graph, beside Conv/Gemm/Q/DQ."""
    torch = _torch()
    op = node.op_type
    table: Dict[str, Callable[[], Any]] = {
        "Relu": lambda: torch.relu(args[0]),
        "Add": lambda: args[0] + args[1],
        "Sub": lambda: args[0] - args[1],
        "Mul": lambda: args[0] * args[1],
        "Div": lambda: args[0] / args[1],
        "MatMul": lambda: torch.matmul(args[0], args[1]),
        "Softmax": lambda: torch.softmax(args[0], dim=_attr(node, "axis", -1)),
        "Transpose": lambda: args[0].permute(*_attr(node, "perm", list(reversed(range(args[0].dim()))))),
        "Reshape": lambda: _reshape(args[0], args[1]),
        "Flatten": lambda: args[0].flatten(_attr(node, "axis", 1)) if _attr(node, "axis", 1) else args[0].reshape(1, -1),
        "Shape": lambda: torch.tensor(list(args[0].shape), dtype=torch.int64),
        "Gather": lambda: torch.index_select(args[0], _attr(node, "axis", 0), args[1].reshape(-1)).reshape(
            args[0].shape[:_attr(node, "axis", 0)] + args[1].shape + args[0].shape[_attr(node, "axis", 0) + 1:]),
        "Unsqueeze": lambda: _unsqueeze(args[0], args[1]),
        "Concat": lambda: torch.cat(args, dim=_attr(node, "axis", 0)),
        "ReduceMean": lambda: _reduce_mean(args[0], node, args[1] if len(args) > 1 else None),
        "GlobalAveragePool": lambda: args[0].mean(dim=list(range(2, args[0].dim())), keepdim=True),
        "MaxPool": lambda: _max_pool(args[0], node),
        "Identity": lambda: args[0],
        "Cast": lambda: args[0],
        # Transformers (ViT/DeiT): LayerNorm, GELU's Erf, the class token's Expand.
        "LayerNormalization": lambda: _layer_norm(args, node),
        "Erf": lambda: torch.erf(args[0]),
        "Sqrt": lambda: torch.sqrt(args[0]),
        "Pow": lambda: torch.pow(args[0], args[1]),
        "Equal": lambda: torch.eq(args[0], args[1]),
        "Where": lambda: torch.where(args[0], args[1], args[2]),
        "Expand": lambda: torch.broadcast_to(args[0], torch.broadcast_shapes(tuple(args[0].shape), tuple(int(s) for s in args[1].tolist()))),
        "Slice": lambda: _slice(args),
    }
    if op not in table:
        raise TwinUnsupportedOp(f"the torch twin has no {op} (node {node.name}); extend pipeline.stages.twin")
    return table[op]()


def _max_pool(x: Any, node: Any) -> Any:
    import torch.nn.functional as F

    kernel = list(_attr(node, "kernel_shape"))
    pads = list(_attr(node, "pads", [0] * 2 * len(kernel)))
    return F.max_pool2d(x, kernel, list(_attr(node, "strides", kernel)), pads[: len(kernel)])


class Twin:
    """A differentiable copy of a (Q/DQ) ONNX graph; see the module docstring."""

    def __init__(self, graph: Any, fp32_graph: Any) -> None:
        from onnx import numpy_helper

        torch = _torch()
        self.graph = graph
        floats = {t.name: numpy_helper.to_array(t) for t in fp32_graph.initializer if t.data_type == 1}
        self.constants: Dict[str, Any] = {}
        self.params: Dict[str, Any] = {}
        self.weights: Dict[str, Tuple[str, float, int]] = {}  # DQ output -> (param, qmax, axis)
        self.biases: Dict[str, str] = {}  # DQ output -> param (int32 bias: used unrounded)
        for tensor in graph.initializer:
            value = numpy_helper.to_array(tensor)
            if tensor.name in floats:
                self.params[tensor.name] = torch.tensor(np.array(value, dtype=np.float32), requires_grad=True)
            else:
                self.constants[tensor.name] = torch.from_numpy(np.array(value))
        self._bind_weights(floats)
        self.activation_scales: Dict[str, Tuple[Any, Any]] = {}  # tensor -> (scale, zero point) overrides
        self.float_tensors: set = set()  # tensors (activations or weight names) left unquantized
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name

    def _bind_weights(self, floats: Dict[str, np.ndarray]) -> None:
        torch = _torch()
        found = []
        for node in self.graph.node:
            if node.op_type != DEQUANTIZE or node.input[0] not in self.constants:
                continue
            base = node.input[0][: -len("_quantized")] if node.input[0].endswith("_quantized") else None
            if base not in floats:
                continue
            stored = self.constants[node.input[0]]
            self.params.setdefault(base, torch.tensor(np.array(floats[base], dtype=np.float32), requires_grad=True))
            if stored.dtype == torch.int32:
                self.biases[node.output[0]] = base
            else:
                axis = _attr(node, "axis", 1) if self.constants[node.input[1]].dim() else None
                found.append((node.output[0], base, axis, float(stored.abs().max())))
        # Every weight of a graph shares one integer range (127, or 64 with reduce_range); a weight
        # that is all zeros (a zero-initialised layer) does not show it, the others do.
        qmax = max((q for *_, q in found), default=127.0) or 127.0
        for out, base, axis, _ in found:
            self.weights[out] = (base, qmax, axis)

    def to(self, device: Any) -> "Twin":
        """Weights and float constants on `device` (integer constants, e.g. shapes, stay on the CPU)."""
        torch = _torch()
        for name, p in self.params.items():
            self.params[name] = p.detach().to(device).requires_grad_(p.requires_grad)
        for name, c in self.constants.items():
            if c.is_floating_point():
                self.constants[name] = c.to(device)
        return self

    def trainable(self) -> List[Any]:
        return [p for p in self.params.values() if p.dim() > 0]

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
        axis = _attr(node, "axis", 1)
        device = args[0].device
        scale_b = _per_axis(scale.to(device), axis, args[0].dim())
        zero_b = _per_axis(zero.float().to(device), axis, args[0].dim())
        return torch.clamp(_round_ste(args[0] / scale_b) + zero_b, bounds[0], bounds[1]), (scale_b, zero_b)

    def _node(self, node: Any, env: Dict[str, Any], qparams: Dict[str, Any]) -> Any:
        torch = _torch()
        op = node.op_type
        if op == "Constant":
            from onnx import numpy_helper

            return torch.from_numpy(np.array(numpy_helper.to_array(_attr(node, "value"))))
        out = node.output[0]
        if op == DEQUANTIZE and out in self.weights:
            base, qmax, axis = self.weights[out]
            weight = self.params[base]
            if base in self.float_tensors:
                return weight
            return quantize_weight(weight, qmax, axis if axis is not None else 0) if axis is not None else _per_tensor(weight, qmax)
        if op == DEQUANTIZE and out in self.biases:
            return self.params[self.biases[out]]
        args = [self._value(name, env) if name else None for name in node.input]
        if op == QUANTIZE:
            if node.input[0] in self.float_tensors:
                qparams[out] = None
                # Unquantized, but a range that starts at zero stands for a ReLU the quantizer removed.
                lowest = INTEGER_RANGE[3 if args[2].dtype == torch.int8 else 2][0]
                return torch.relu(args[0]) if float(args[2].min()) == lowest else args[0]
            q, qparams[out] = self._quantize(node, args)
            return q
        if op == DEQUANTIZE:
            if node.input[0] in qparams and qparams[node.input[0]] is None:
                return args[0]
            if node.input[0] in qparams:
                scale, zero = qparams[node.input[0]]
            else:
                axis = _attr(node, "axis", 1)
                device = args[1].device
                scale, zero = _per_axis(args[1], axis, args[0].dim()), _per_axis(args[2].float().to(device), axis, args[0].dim())
            return (args[0].float() - zero) * scale
        if op == "Conv":
            return _conv(args[0], args[1], args[2] if len(args) > 2 else None, node)
        if op == "Gemm":
            return _gemm(args[0], args[1], args[2] if len(args) > 2 else None, node)
        return _plain_op(node, args)

    def __call__(self, images: Any, keep: Optional[List[str]] = None) -> Any:
        """The graph output for `images`; with `keep`, also those intermediate tensors (a dict)."""
        env: Dict[str, Any] = {self.input_name: images}
        qparams: Dict[str, Any] = {}
        for node in self.graph.node:
            env[node.output[0]] = self._node(node, env, qparams)
        if keep is None:
            return env[self.output_name]
        return env[self.output_name], {name: env[name] for name in keep}

    def float_initializers(self) -> Dict[str, np.ndarray]:
        """The trained float weights and biases, by their FP32 graph names."""
        return {name: p.detach().cpu().numpy().astype(np.float32) for name, p in self.params.items()}


def _per_tensor(weight: Any, qmax: float) -> Any:
    scale = weight.detach().abs().max() / qmax
    scale = scale if float(scale) > 0 else scale + 1.0
    return _torch().clamp(_round_ste(weight / scale), -qmax, qmax) * scale


def load_twin(graph_path: Any, fp32_path: Any) -> Twin:
    import onnx

    return Twin(onnx.load(str(graph_path)).graph, onnx.load(str(fp32_path)).graph)
