"""The torch twin's ops over spatial windows: convolutions, pooling, Pad and Resize.

Same contract as pipeline.graphs.twin_ops (node and inputs in, output out). ONNX pads are
(begin of every spatial axis..., end of every spatial axis...); torch pads symmetrically, so an
asymmetric ONNX padding is applied explicitly first. Resize is computed axis by axis from the
ONNX coordinate formulas (nearest: an index gather; linear: a blend of two neighbours), which is
what ONNX Runtime computes for every coordinate transformation and rounding mode.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from pipeline.graphs.twin_ops import F, Op, _arg, _ints, attr, torch

Window = Tuple[List[int], List[int], List[int]]  # strides, dilations, ONNX pads


def _window(node: Any, x: Any, kernel: List[int]) -> Window:
    """Strides, dilations and explicit ONNX pads of a windowed op (auto_pad resolved)."""
    n = len(kernel)
    strides = list(attr(node, "strides", [1] * n))
    dilations = list(attr(node, "dilations", [1] * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return strides, dilations, [0] * 2 * n if auto_pad == "VALID" else list(attr(node, "pads", [0] * 2 * n))
    pads = [0] * 2 * n
    for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        pads[i], pads[i + n] = begin, total - begin
    return strides, dilations, pads


def _torch_pads(pads: List[int]) -> List[int]:
    """ONNX (begins..., ends...) pads of the trailing axes in F.pad's order (last axis first)."""
    n = len(pads) // 2
    return [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]


def _conv(node: Any, args: List[Any]) -> Any:
    x, w, b = args[0], args[1], _arg(args, 2)
    n = w.dim() - 2
    strides, dilations, pads = _window(node, x, list(w.shape[2:]))
    if pads[:n] != pads[n:]:
        x, pads = F.pad(x, _torch_pads(pads)), [0] * 2 * n
    conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return conv(x, w, b, stride=strides, padding=pads[:n], dilation=dilations, groups=attr(node, "group", 1))


def _conv_transpose(node: Any, args: List[Any]) -> Any:
    x, w, b = args[0], args[1], _arg(args, 2)
    n = w.dim() - 2
    strides, dilations, pads = _window(node, x, list(w.shape[2:]))
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    return conv(
        x, w, b, strides, pads[:n], list(attr(node, "output_padding", [0] * n)), attr(node, "group", 1), dilations
    )


def _pool_window(node: Any, x: Any) -> Tuple[List[int], Window, bool]:
    """Kernel, window, and whether torch's own (symmetric, at most half a kernel) padding fits."""
    kernel = list(attr(node, "kernel_shape"))
    strides, dilations, pads = _window(node, x, kernel)
    n = len(kernel)
    native = pads[:n] == pads[n:] and all(p <= k // 2 for p, k in zip(pads, kernel))
    return kernel, (strides, dilations, pads), native


def _max_pool(node: Any, args: List[Any]) -> Any:
    x = args[0]
    kernel, (strides, dilations, pads), native = _pool_window(node, x)
    n = len(kernel)
    if not native:
        x, pads = F.pad(x, _torch_pads(pads), value=float("-inf")), [0] * 2 * n
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    return pool(x, kernel, strides, pads[:n], dilations, ceil_mode=bool(attr(node, "ceil_mode", 0)))


def _average_pool(node: Any, args: List[Any]) -> Any:
    x = args[0]
    kernel, (strides, _, pads), native = _pool_window(node, x)
    n, ceil, include = len(kernel), bool(attr(node, "ceil_mode", 0)), bool(attr(node, "count_include_pad", 0))
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    if native:
        return pool(x, kernel, strides, pads[:n], ceil, include)
    padded = pool(F.pad(x, _torch_pads(pads)), kernel, strides, 0, ceil, True)
    if include:
        return padded
    # Padding left out of the count: divide by the share of real values in each window.
    mask = F.pad(torch.ones_like(x[:1, :1]), _torch_pads(pads))
    return padded / pool(mask, kernel, strides, 0, ceil, True)


def _pad(node: Any, args: List[Any]) -> Any:
    x = args[0]
    pads = _ints(args[1]) if _arg(args, 1) is not None else list(attr(node, "pads"))
    value = _arg(args, 2)
    value = value.item() if value is not None and value.numel() else attr(node, "value", 0.0)
    axes = _ints(args[3]) if _arg(args, 3) is not None else list(range(x.dim()))
    per_axis = {a % x.dim(): (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    padded = [a for a, p in per_axis.items() if p != (0, 0)]
    if not padded:
        return x
    order = [p for a in reversed(range(min(padded), x.dim())) for p in per_axis.get(a, (0, 0))]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[
        attr(node, "mode", "constant")
    ]
    return F.pad(x, order, mode=mode, value=value) if mode == "constant" else F.pad(x, order, mode=mode)


def _resize_plan(node: Any, args: List[Any]) -> Dict[int, Tuple[int, float]]:
    """Axis -> (output size, scale) of a Resize (opset 10: X, scales; 11+: X, roi, scales, sizes)."""
    x = args[0]
    scales, sizes = (args[1], None) if len(args) == 2 else (_arg(args, 2), _arg(args, 3))
    axes = [a % x.dim() for a in attr(node, "axes", range(x.dim()))]
    if sizes is not None and sizes.numel():
        return {a: (out, out / x.shape[a]) for a, out in zip(axes, _ints(sizes))}
    factors = [float(s) for s in scales.reshape(-1).tolist()]
    return {a: (int(math.floor(x.shape[a] * s)), s) for a, s in zip(axes, factors)}


def _source_coordinates(mode: str, out_size: int, in_size: int, scale: float) -> Any:
    """Where each output position samples the input (ONNX coordinate_transformation_mode)."""
    x = torch.arange(out_size, dtype=torch.float32)
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return x * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(x)
    if mode == "pytorch_half_pixel" and out_size == 1:
        return torch.zeros_like(x)
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / (scale * in_size))
        return offset + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def _nearest(coordinates: Any, rounding: str) -> Any:
    if rounding == "floor":
        return coordinates.floor()
    if rounding == "ceil":
        return coordinates.ceil()
    halfway = coordinates - coordinates.floor() == 0.5
    rounded = coordinates.round()
    return torch.where(
        halfway, coordinates.floor() if rounding == "round_prefer_floor" else coordinates.ceil(), rounded
    )


def _resize(node: Any, args: List[Any]) -> Any:
    x = args[0]
    transform = attr(node, "coordinate_transformation_mode", "half_pixel")
    for axis, (out_size, scale) in _resize_plan(node, args).items():
        in_size = x.shape[axis]
        if out_size == in_size and scale == 1.0:
            continue
        source = _source_coordinates(transform, out_size, in_size, scale)
        if attr(node, "mode", "nearest") == "nearest":
            index = _nearest(source, attr(node, "nearest_mode", "round_prefer_floor")).clamp(0, in_size - 1).long()
            x = x.index_select(axis, index.to(x.device))
            continue
        source = source.clamp(0, in_size - 1)
        low = source.floor().long()
        high = (low + 1).clamp(max=in_size - 1)
        shape = [1] * x.dim()
        shape[axis] = -1
        weight = (source - low).reshape(shape).to(x.device)
        x = x.index_select(axis, low.to(x.device)) * (1 - weight) + x.index_select(axis, high.to(x.device)) * weight
    return x


def _global_pool(node: Any, args: List[Any]) -> Any:
    dims = list(range(2, args[0].dim()))
    if node.op_type == "GlobalMaxPool":
        return args[0].amax(dim=dims, keepdim=True)
    return args[0].mean(dim=dims, keepdim=True)


SPATIAL_OPS: Dict[str, Op] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Pad": _pad,
    "Resize": _resize,
}


def _resize_limit(node: Any) -> Optional[str]:
    if attr(node, "mode", "nearest") not in ("nearest", "linear"):
        return f"mode {attr(node, 'mode')}"
    if attr(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return "coordinate_transformation_mode tf_crop_and_resize"
    if attr(node, "antialias", 0) or attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "antialias or keep_aspect_ratio_policy"
    return None


def _conv_transpose_limit(node: Any) -> Optional[str]:
    pads = list(attr(node, "pads", []))
    if attr(node, "output_shape") is not None or attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "output_shape or auto_pad"
    return "asymmetric pads" if pads[: len(pads) // 2] != pads[len(pads) // 2 :] else None


# Attribute settings the ops above do not compute: op -> (node -> why not, or None).
SPATIAL_LIMITS = {
    "Resize": _resize_limit,
    "ConvTranspose": _conv_transpose_limit,
    "MaxPool": lambda node: "its Indices output" if len(node.output) > 1 and node.output[1] else None,
    "AveragePool": lambda node: "dilations" if any(d != 1 for d in attr(node, "dilations", [])) else None,
    "Pad": lambda node: (
        None
        if attr(node, "mode", "constant") in ("constant", "reflect", "edge", "wrap")
        else f"mode {attr(node, 'mode')}"
    ),
}
