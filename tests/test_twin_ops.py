"""The torch twin (pipeline.graphs.twin) against ONNX Runtime, op by op and on whole models.

Three tiny hand-written models stand for common vision families (torchvision does not import
with the pinned CPU torch): a torchvision-style ViT with nn.MultiheadAttention, a MobileNetV3-
style CNN and a small FPN-like mixer (Einsum, split, Resize). Each is exported as the pipeline
exports (opset 17, TorchScript exporter, dynamic batch), simplified with onnxsim, calibrated and
quantized into both INT8 flavours; the twin must compute what ONNX Runtime computes with exact
Q/DQ arithmetic. Single-node graphs cover the ops and settings those models do not reach.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.backends.onnxruntime import cpu_session, onnx_logits
from pipeline.graphs.twin import Twin, TwinUnsupportedOp, load_twin, unsupported_ops
from tiny_project import write_tiny_config

# --- the models ------------------------------------------------------------------------------------


class Block(nn.Module):
    """torchvision's EncoderBlock: pre-norm nn.MultiheadAttention and a GELU MLP, with dropout."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.1)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class TinyViT(nn.Module):
    """torchvision's VisionTransformer layout: conv patch embedding, class token, encoder blocks."""

    def __init__(self, dim: int = 16, patch: int = 8, size: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos_embedding = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        self.blocks = nn.Sequential(Block(dim, 2), Block(dim, 2))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.conv_proj.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.blocks(x))[:, 0])


class TinyMobileNet(nn.Module):
    """MobileNetV3 pieces: depthwise conv, HardSwish, squeeze-excite, pooling, BatchNorm1d."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Sigmoid()
        )
        self.pointwise = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.classifier = nn.Sequential(
            nn.Linear(32, 12), nn.BatchNorm1d(12), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(12, classes)
        )

    def forward(self, x):
        x = self.depthwise(self.stem(x))
        x = self.pointwise(x * self.se(x))
        x = self.pool(x * F.hardsigmoid(x))
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], 1)
        return self.classifier(torch.flatten(pooled, 1))


class TinyMixer(nn.Module):
    """Einsum, chunk and split, reflect padding, and nearest and bilinear Resize (an FPN's merge)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.down = nn.Conv2d(8, 8, 3, 2, 1)
        self.mix = nn.Parameter(torch.randn(4, 4) * 0.3)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = F.leaky_relu(self.stem(x), 0.1)
        a, b = x.chunk(2, dim=1)
        a = torch.einsum("nchw,cd->ndhw", a, self.mix)
        p, q = torch.split(torch.cat([a, torch.tanh(b)], 1), [3, 5], dim=1)
        x = F.pad(torch.cat([q, p], 1), (1, 1, 1, 1), mode="reflect")[:, :, 1:-1, 1:-1]
        low = self.down(x)
        x = x + F.interpolate(low, scale_factor=2, mode="nearest")
        x = x + F.interpolate(F.softplus(low), size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.clamp(x, -2.0, 3.0)
        return self.head(x.amax(dim=(2, 3)) - x.mean(dim=(2, 3)).abs())


MODELS = {"vit": TinyViT, "mobilenet": TinyMobileNet, "mixer": TinyMixer}
# Ops each simplified export must hold, so that the comparisons below exercise them.
EXPECTED_OPS = {
    "vit": {"Squeeze", "Gather", "Transpose", "MatMul", "Softmax", "LayerNormalization", "Erf", "Where", "Expand"},
    "mobilenet": {"HardSwish", "HardSigmoid", "Sigmoid", "AveragePool", "MaxPool", "BatchNormalization", "Flatten"},
    "mixer": {"Einsum", "Split", "Slice", "Pad", "Resize", "LeakyRelu", "Tanh", "Softplus", "Clip", "ReduceMax", "Abs"},
}


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


def _export(name: str, folder: Path) -> Path:
    """The model exported as the pipeline exports it, then simplified as the pipeline does."""
    from pipeline.stages.export import export_onnx
    from pipeline.stages.simplify import simplify_onnx

    torch.manual_seed(0)
    model = MODELS[name]().eval()
    raw, simplified = folder / f"{name}.raw.onnx", folder / f"{name}.onnx"
    # Eval-mode nn.MultiheadAttention takes a fused fast path: the export turns it off itself.
    export_onnx(model, _images(2, 0), 17, raw)
    assert torch.backends.mha.get_fastpath_enabled()  # and restores it
    simplify_onnx(raw, simplified)
    return simplified


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict:
    """name -> {"fp32", "raw", "int8", "int8-trt": path}, calibrated (minmax) on 8 images."""
    from pipeline.config import load_config
    from pipeline.graphs.quantize import quantize_graph
    from pipeline.stages.calibrate import calibrate

    folder = tmp_path_factory.mktemp("twin-models")
    config = load_config(write_tiny_config(folder))
    found = {}
    for name in MODELS:
        fp32 = _export(name, folder)
        found[name] = {"fp32": fp32, "raw": folder / f"{name}.raw.onnx"}
        tensors = calibrate(fp32, _images(8, 1), config, progress=False)
        for flavour in ("int8", "int8-trt"):
            found[name][flavour] = folder / f"{name}.{flavour}.onnx"
            quantize_graph(fp32, found[name][flavour], tensors, flavour)
    return found


# --- whole models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exports_hold_the_ops_under_test(graphs, name):
    import onnx

    ops = {n.op_type for n in onnx.load(str(graphs[name]["fp32"])).graph.node}
    assert EXPECTED_OPS[name] <= ops, sorted(EXPECTED_OPS[name] - ops)


@pytest.mark.parametrize("graph", ["raw", "fp32", "int8", "int8-trt"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_twin_computes_what_onnx_runtime_computes(graphs, name, graph):
    """The export before and after onnxsim, and both Q/DQ graphs (ONNX Runtime with exact Q/DQ)."""
    path, images = graphs[name][graph], _images(4, 2)
    twin = load_twin(path, graphs[name]["fp32"] if graph.startswith("int8") else path)
    if graph.startswith("int8"):
        assert twin.weights  # the Q/DQ weights are the twin's fake-quantized parameters
    with torch.no_grad():
        computed = twin(torch.from_numpy(images)).numpy()
    expected = onnx_logits(path, images, qdq_fusion=False)
    assert computed.shape == expected.shape
    if graph == "int8":
        # The `int8` graph stores int32 biases; the twin adds the float bias unrounded (what the
        # fine-tune trains), and that difference may move a value across a rounding boundary.
        assert np.abs(computed - expected).max() < 0.05 * np.abs(expected).max() + 1e-3
    else:
        np.testing.assert_allclose(computed, expected, rtol=0, atol=1e-4)


def test_gradients_reach_the_weights_and_spare_batchnorm_statistics(graphs):
    twin = load_twin(graphs["mobilenet"]["int8-trt"], graphs["mobilenet"]["fp32"])
    statistics = {p for name, p in twin.params.items() if name in twin.frozen}
    assert statistics and not any(p is s for p in twin.trainable() for s in statistics)
    twin(torch.from_numpy(_images(2, 3))).square().sum().backward()
    weights = [twin.params[base] for base, _, _ in twin.weights.values()]
    assert weights and all(
        w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 for w in weights
    )


def test_finetune_runs_on_the_vit_qdq_graph(graphs):
    from pipeline.search.qat import FinetuneSettings, finetune

    paths = graphs["vit"]
    before = load_twin(paths["int8-trt"], paths["fp32"]).float_initializers()
    after = finetune(
        paths["int8-trt"],
        paths["fp32"],
        _images(8, 4),
        FinetuneSettings(steps=2, batch=4, learning_rate=1e-2, check_every=0),
    ).weights
    assert sorted(after) == sorted(before)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


# --- single ops ------------------------------------------------------------------------------------


def _single_node(op: str, inputs: list, attrs: dict, outputs: int, opset: int):
    """A one-node graph: input `x`, the other inputs as initializers (None: an omitted input)."""
    import onnx
    from onnx import helper, numpy_helper

    names = ["x"] + [f"in{i}" if value is not None else "" for i, value in enumerate(inputs, 1)]
    initializers = [numpy_helper.from_array(np.asarray(v), f"in{i}") for i, v in enumerate(inputs, 1) if v is not None]
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, name=f"/{op}", **attrs)
    graph = helper.make_graph(
        [node],
        "single",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [onnx.ValueInfoProto(name=n) for n in out_names],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _x(*shape: int, seed: int = 0, positive: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def _i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


X4 = _x(2, 3, 5, 6)
# (id, op, x, other inputs, attributes, outputs, opset)
CASES = [
    ("squeeze-axes-input", "Squeeze", _x(2, 1, 3, 1), [_i64(-1, 1)], {}, 1, 13),
    ("squeeze-no-axes", "Squeeze", _x(1, 3, 1, 2), [], {}, 1, 13),
    ("squeeze-axes-attribute", "Squeeze", _x(2, 1, 3), [], {"axes": [1]}, 1, 11),
    ("unsqueeze-negative-axes", "Unsqueeze", _x(2, 3), [_i64(-1, 0)], {}, 1, 13),
    ("split-sizes-input", "Split", X4, [_i64(2, 4)], {"axis": -1}, 2, 13),
    ("split-equal", "Split", X4, [], {"axis": 1}, 3, 13),
    ("split-num-outputs-uneven", "Split", X4, [], {"axis": 2, "num_outputs": 3}, 3, 18),
    ("gather-matrix-negative-indices", "Gather", X4, [np.array([[0, -1], [-2, 1]], np.int64)], {"axis": 1}, 1, 17),
    ("gather-scalar-index", "Gather", X4, [np.array(-1, np.int64)], {"axis": 3}, 1, 17),
    ("gather-elements", "GatherElements", _x(3, 4), [np.array([[0, -1, 2, 1]] * 3, np.int64)], {"axis": 1}, 1, 17),
    ("transpose", "Transpose", X4, [], {"perm": [0, 2, 3, 1]}, 1, 17),
    ("einsum", "Einsum", _x(2, 3, 4), [_x(2, 4, 5, seed=1)], {"equation": "bij,bjk->bik"}, 1, 17),
    ("sigmoid", "Sigmoid", X4, [], {}, 1, 17),
    ("tanh", "Tanh", X4, [], {}, 1, 17),
    ("gelu-opset-20", "Gelu", X4, [], {}, 1, 20),
    ("gelu-tanh", "Gelu", X4, [], {"approximate": "tanh"}, 1, 20),
    ("hard-sigmoid", "HardSigmoid", X4, [], {"alpha": 0.3, "beta": 0.4}, 1, 17),
    ("hard-swish", "HardSwish", X4 * 4, [], {}, 1, 17),
    ("clip-min-max-inputs", "Clip", X4, [_f32(-0.5).reshape(()), _f32(0.7).reshape(())], {}, 1, 13),
    ("clip-max-only", "Clip", X4, [None, _f32(0.2).reshape(())], {}, 1, 13),
    ("neg", "Neg", X4, [], {}, 1, 17),
    ("abs", "Abs", X4, [], {}, 1, 17),
    ("exp", "Exp", X4, [], {}, 1, 17),
    ("log", "Log", _x(2, 3, positive=True), [], {}, 1, 17),
    ("reciprocal", "Reciprocal", _x(2, 3, positive=True), [], {}, 1, 17),
    ("softplus", "Softplus", X4 * 10, [], {}, 1, 17),
    ("leaky-relu", "LeakyRelu", X4, [], {"alpha": 0.2}, 1, 17),
    ("prelu", "PRelu", X4, [_x(3, 1, 1, seed=1)], {}, 1, 17),
    ("elu", "Elu", X4, [], {"alpha": 0.5}, 1, 17),
    ("reduce-sum-axes-input", "ReduceSum", X4, [_i64(1, -1)], {"keepdims": 0}, 1, 13),
    ("reduce-sum-all", "ReduceSum", X4, [], {}, 1, 13),
    ("reduce-sum-noop", "ReduceSum", X4, [], {"noop_with_empty_axes": 1}, 1, 13),
    ("reduce-max-axes-input", "ReduceMax", X4, [_i64(2, 3)], {}, 1, 18),
    ("reduce-min-axes-attribute", "ReduceMin", X4, [], {"axes": [0], "keepdims": 0}, 1, 13),
    ("reduce-mean-axes-attribute", "ReduceMean", X4, [], {"axes": [-2, -1]}, 1, 17),
    ("reduce-l2", "ReduceL2", X4, [_i64(1)], {}, 1, 18),
    ("reduce-prod", "ReduceProd", X4, [], {"axes": [1, 3]}, 1, 13),
    ("argmax-last", "ArgMax", np.round(X4), [], {"axis": 1, "select_last_index": 1}, 1, 17),
    (
        "average-pool-asymmetric",
        "AveragePool",
        X4,
        [],
        {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1]},
        1,
        17,
    ),
    (
        "average-pool-ceil-exclude-pad",
        "AveragePool",
        X4,
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        1,
        17,
    ),
    (
        "average-pool-ceil-include-pad",
        "AveragePool",
        X4,
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1},
        1,
        17,
    ),
    (
        "average-pool-asymmetric-include-pad",
        "AveragePool",
        X4,
        [],
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 1, 0], "count_include_pad": 1},
        1,
        17,
    ),
    (
        "average-pool-same-upper",
        "AveragePool",
        X4,
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
        1,
        17,
    ),
    (
        "max-pool-asymmetric-ceil",
        "MaxPool",
        X4,
        [],
        {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 1, 0], "ceil_mode": 1},
        1,
        17,
    ),
    ("global-max-pool", "GlobalMaxPool", X4, [], {}, 1, 17),
    ("global-average-pool", "GlobalAveragePool", X4, [], {}, 1, 17),
    (
        "batch-norm",
        "BatchNormalization",
        X4,
        [_x(3, seed=1), _x(3, seed=2), _x(3, seed=3), _x(3, seed=4, positive=True)],
        {"epsilon": 1e-3},
        1,
        15,
    ),
    ("instance-norm", "InstanceNormalization", X4, [_x(3, seed=1), _x(3, seed=2)], {}, 1, 17),
    ("layer-norm-axis", "LayerNormalization", X4, [_x(5, 6, seed=1), _x(5, 6, seed=2)], {"axis": 2}, 1, 17),
    ("tile", "Tile", _x(2, 3), [_i64(2, 3)], {}, 1, 17),
    ("pad-constant", "Pad", X4, [_i64(0, 0, 1, 2, 0, 0, 2, 1), _f32(0.5).reshape(())], {}, 1, 17),
    ("pad-crop", "Pad", X4, [_i64(0, 0, -1, 1, 0, 0, 0, -2)], {}, 1, 17),
    ("pad-reflect", "Pad", X4, [_i64(0, 0, 2, 1, 0, 0, 1, 2)], {"mode": "reflect"}, 1, 17),
    ("pad-edge", "Pad", X4, [_i64(0, 0, 2, 1, 0, 0, 1, 2)], {"mode": "edge"}, 1, 17),
    ("pad-axes-input", "Pad", X4, [_i64(1, 2, 3, 0), None, _i64(-1, 1)], {"mode": "edge"}, 1, 18),
    ("min", "Min", X4, [_x(1, 3, 1, 6, seed=1), _x(6, seed=2)], {}, 1, 17),
    ("max", "Max", X4, [_x(1, 3, 1, 6, seed=1)], {}, 1, 17),
    ("greater", "Greater", X4, [_x(6, seed=1)], {}, 1, 17),
    ("less", "Less", X4, [_x(6, seed=1)], {}, 1, 17),
    ("where", "Where", X4, [], {}, 1, 17),
    ("dropout-with-mask", "Dropout", X4, [], {}, 2, 17),
    ("size", "Size", X4, [], {}, 1, 17),
    ("shape-start-end", "Shape", X4, [], {"start": 1, "end": -1}, 1, 17),
    ("cast-to-int64", "Cast", X4 * 3, [], {"to": 7}, 1, 17),
    ("cast-to-bool", "Cast", np.round(X4), [], {"to": 9}, 1, 17),
    ("flatten-axis-0", "Flatten", X4, [], {"axis": 0}, 1, 17),
    ("flatten-axis-2", "Flatten", X4, [], {"axis": 2}, 1, 17),
    ("flatten-axis-negative", "Flatten", X4, [], {"axis": -1}, 1, 17),
    ("matmul-rank-4-by-3", "MatMul", X4, [_x(3, 6, 4, seed=1)], {}, 1, 17),
    ("matmul-by-vector", "MatMul", X4, [_x(6, seed=1)], {}, 1, 17),
    ("slice-negative-step", "Slice", X4, [_i64(-1, 4), _i64(-100, 0), _i64(3, 2), _i64(-2, -1)], {}, 1, 17),
    ("expand", "Expand", _x(3, 1), [_i64(2, 1, 4)], {}, 1, 17),
    (
        "conv-same-upper-strided",
        "Conv",
        X4,
        [_x(4, 3, 3, 3, seed=1)],
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        1,
        17,
    ),
    (
        "conv-transpose",
        "ConvTranspose",
        X4,
        [_x(3, 2, 3, 3, seed=1), _x(2, seed=2)],
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        1,
        17,
    ),
    (
        "resize-nearest-asymmetric-floor",
        "Resize",
        X4,
        [None, _f32(1, 1, 2, 2)],
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        1,
        17,
    ),
    ("resize-nearest-half-pixel-down", "Resize", X4, [None, _f32(1, 1, 0.6, 0.5)], {"mode": "nearest"}, 1, 17),
    (
        "resize-nearest-align-corners-ceil",
        "Resize",
        X4,
        [None, None, _i64(2, 3, 7, 9)],
        {"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "round_prefer_ceil"},
        1,
        17,
    ),
    ("resize-linear-half-pixel", "Resize", X4, [None, _f32(1, 1, 1.5, 2.5)], {"mode": "linear"}, 1, 17),
    (
        "resize-linear-pytorch-half-pixel-sizes",
        "Resize",
        X4,
        [None, None, _i64(2, 3, 1, 11)],
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        1,
        17,
    ),
    (
        "resize-linear-align-corners-down",
        "Resize",
        X4,
        [None, None, _i64(2, 3, 3, 4)],
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        1,
        17,
    ),
    (
        "resize-linear-asymmetric-axes",
        "Resize",
        X4,
        [None, _f32(2, 3)],
        {"mode": "linear", "coordinate_transformation_mode": "asymmetric", "axes": [2, 3]},
        1,
        18,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_single_op_matches_onnx_runtime(case):
    _, op, x, inputs, attrs, outputs, opset = case
    if op == "Where":  # condition first, then x: x is the graph input in the middle
        model = _where_graph(x)
    else:
        model = _single_node(op, inputs, attrs, outputs, opset)
    session = cpu_session(model.SerializeToString())
    expected = session.run(None, {"x": x})
    twin = Twin(model.graph, model.graph)
    names = [o.name for o in model.graph.output]
    with torch.no_grad():
        _, kept = twin(torch.from_numpy(x), keep=names)
    for name, want in zip(names, expected):
        got = kept[name].numpy()
        assert got.shape == want.shape, name
        if want.dtype.kind == "f":
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        else:
            assert got.dtype == want.dtype and np.array_equal(got, want), name


def _where_graph(x: np.ndarray):
    import onnx
    from onnx import helper, numpy_helper

    condition = numpy_helper.from_array(np.array([True, False, True, True, False, False]), "condition")
    other = numpy_helper.from_array(_x(3, 1, 1, seed=1), "other")
    node = helper.make_node("Where", ["condition", "x", "other"], ["out0"], name="/Where")
    graph = helper.make_graph(
        [node],
        "single",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [onnx.ValueInfoProto(name="out0")],
        [condition, other],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_integer_shape_arithmetic_keeps_onnx_integer_semantics():
    """Shape -> Gather -> Div/Mod -> ConstantOfShape / Range -> Cast: integers divide truncating."""
    import onnx
    from onnx import helper, numpy_helper

    constants = [
        numpy_helper.from_array(v, n)
        for n, v in (
            ("index", np.array(3, np.int64)),
            ("four", _i64(-4)),
            ("zero", np.array(0, np.int64)),
            ("one", np.array(1, np.int64)),
        )
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "index"], ["width"]),  # 6
        helper.make_node("Div", ["width", "four"], ["quotient"]),  # 6 / -4 -> -1 (truncated)
        helper.make_node("Mod", ["width", "four"], ["remainder"]),  # Python sign: -2
        helper.make_node("Concat", ["quotient", "remainder"], ["pair"], axis=0),
        helper.make_node("Abs", ["pair"], ["dims"]),
        helper.make_node("ConstantOfShape", ["dims"], ["ones"], value=numpy_helper.from_array(_f32(1.5))),
        helper.make_node("Range", ["zero", "width", "one"], ["steps"]),
        helper.make_node("Cast", ["steps"], ["steps_float"], to=1),
        helper.make_node("ReduceSum", ["ones"], ["total"], keepdims=0),
        helper.make_node("Add", ["steps_float", "total"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shapes",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [onnx.ValueInfoProto(name="out"), onnx.ValueInfoProto(name="pair")],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = cpu_session(model.SerializeToString()).run(None, {"x": X4})
    with torch.no_grad():
        out, kept = Twin(model.graph, model.graph)(torch.from_numpy(X4), keep=["pair"])
    assert kept["pair"].tolist() == expected[1].tolist() == [-1, -2]
    np.testing.assert_allclose(out.numpy(), expected[0], rtol=1e-6)


def test_casts_to_other_float_widths_stay_float32():
    model = _single_node("Cast", [], {"to": 10}, 1, 17)  # FLOAT16
    with torch.no_grad():
        out = Twin(model.graph, model.graph)(torch.from_numpy(X4))
    assert out.dtype == torch.float32 and torch.equal(out, torch.from_numpy(X4))


# --- what the twin does not compute ----------------------------------------------------------------


@pytest.mark.parametrize(
    "op, attrs, described",
    [
        ("TopK", {}, "TopK"),
        ("Resize", {"mode": "cubic"}, "Resize with mode cubic"),
        ("Pad", {"mode": "unknown"}, "Pad with mode unknown"),
    ],
)
def test_an_op_it_cannot_compute_is_refused_when_the_twin_is_built(op, attrs, described):
    inputs = (
        [_i64(1)] if op == "TopK" else [None, _f32(1, 1, 2, 2)] if op == "Resize" else [_i64(0, 0, 1, 1, 0, 0, 1, 1)]
    )
    model = _single_node(op, inputs, attrs, 2 if op == "TopK" else 1, 17)
    assert unsupported_ops(model.graph) == [described]
    with pytest.raises(TwinUnsupportedOp) as raised:
        Twin(model.graph, model.graph)
    error = raised.value
    assert (error.op_type, error.node_name) == (op, f"/{op}")
    assert "\n" not in str(error) and described.split(" with ")[0] in str(error) and f"/{op}" in str(error)


def test_a_foreign_domain_op_is_unsupported_and_every_graph_here_is_supported(graphs):
    import onnx

    from pipeline.errors import StageError

    model = _single_node("Relu", [], {}, 1, 17)
    model.graph.node[0].domain = "com.microsoft"
    assert unsupported_ops(model.graph) == ["com.microsoft.Relu"]
    with pytest.raises(StageError):
        Twin(model.graph, model.graph)
    for paths in graphs.values():
        assert all(unsupported_ops(onnx.load(str(p)).graph) == [] for p in paths.values())
