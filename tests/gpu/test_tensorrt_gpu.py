"""TensorRT on the device: build a tiny engine, run it, compare with ONNX Runtime, time it.

Run on a Jetson or a desktop GPU with TensorRT and pycuda or cuda-python installed:

    python -m pytest tests/gpu -m gpu -v

Every test is skipped, with the reason, where TensorRT or a CUDA GPU is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.backends.tensorrt import (
    EngineSpec,
    RunnerError,
    TensorRTRunner,
    build_engine,
    find_tensorrt,
    gpu_device,
    make_build_plan,
    resolve_plan,
    tensorrt_status,
    trtexec_command,
)
from pipeline.config import BatchProfile, TargetConfig

TRT = find_tensorrt()
GPU = gpu_device()
CHW = (3, 32, 32)
CLASSES = 10

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        TRT is None or GPU is None,
        reason=f"needs TensorRT and a CUDA GPU: {tensorrt_status()}; "
        f"GPU: {GPU.name if GPU else 'none found through cuda-python or pycuda'}",
    ),
]


def tiny_model(fp16: bool) -> onnx.ModelProto:
    """Conv 3->8 + Relu + Flatten + Gemm -> 10, input `images` Nx3x32x32 (dynamic N), output
    `logits`. fp16=True computes in FP16 between two Casts, with FP32 I/O (as the pipeline's FP16
    graph does), so a strongly typed build runs it in FP16."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if fp16 else np.float32
    conv_w = (0.2 * rng.standard_normal((8, 3, 3, 3))).astype(dtype)
    conv_b = (0.1 * rng.standard_normal(8)).astype(dtype)
    fc_w = (0.02 * rng.standard_normal((8 * 32 * 32, CLASSES))).astype(dtype)
    fc_b = (0.1 * rng.standard_normal(CLASSES)).astype(dtype)
    arrays = {"conv_w": conv_w, "conv_b": conv_b, "fc_w": fc_w, "fc_b": fc_b}
    inits = [numpy_helper.from_array(array, name) for name, array in arrays.items()]
    x, out = "images", "logits"
    nodes = []
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["x16"], name="to_fp16", to=TensorProto.FLOAT16))
        x, out = "x16", "logits16"
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("Flatten", ["relu"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [out], name="head"),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", [out], ["logits"], name="to_fp32", to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "tiny_fp16" if fp16 else "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def target(dla_cores: int = 0) -> TargetConfig:
    return TargetConfig(
        backend="tensorrt",
        compute_capability="auto",
        tensorrt_versions=(f"{TRT.major}.x",),
        dla_cores=dla_cores,
        workspace_mib=256,
        profile=BatchProfile(min=1, opt=4, max=8),
        precisions=("fp32", "fp16"),
    )


def make_bundle(root: Path, precision: str, dla_core: int | None = None, dla_cores: int = 0):
    onnx_rel = f"models/model.{precision}.onnx"
    (root / "models").mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_model(precision == "fp16"), root / onnx_rel)
    plan = make_build_plan(
        "gpu-test", target(dla_cores), EngineSpec("tiny", precision, onnx_rel, CHW), TRT.version, dla_core
    )
    return resolve_plan(plan, TRT, GPU)


def reference(root: Path, plan, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(root / plan.onnx), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def assert_close(out: np.ndarray, ref: np.ndarray, rel: float) -> None:
    # FP32 builds may use TF32 on Ampere and newer: compare relative to the logits' scale.
    assert out.shape == ref.shape and out.dtype == np.float32
    scale = float(np.abs(ref).max())
    assert float(np.abs(out - ref).max()) <= rel * max(scale, 1.0)


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    plan = make_bundle(root, "fp32")
    engine = build_engine(plan, root, TRT, gpu=GPU)
    return root, plan, engine


def test_build_writes_engine_and_timing_cache(fp32_bundle):
    root, plan, engine = fp32_bundle
    assert engine == root / plan.engine and engine.stat().st_size > 0
    assert (root / plan.timing_cache).stat().st_size > 0
    assert f".trt{TRT.major}.{TRT.minor}.{TRT.patch}." in engine.name
    assert not list(root.rglob("*.tmp"))


@pytest.mark.parametrize("batch", [1, 5, 8])
def test_runner_matches_onnxruntime(fp32_bundle, batch):
    root, plan, engine = fp32_bundle
    images = np.random.default_rng(batch).standard_normal((batch, *CHW)).astype(np.float32)
    with TensorRTRunner(engine, TRT) as runner:
        assert_close(runner.infer(images), reference(root, plan, images), rel=1e-2)


def test_runner_refuses_batch_outside_profile(fp32_bundle):
    _, _, engine = fp32_bundle
    with TensorRTRunner(engine, TRT) as runner, pytest.raises(RunnerError, match="outside the engine's profile"):
        runner.infer(np.zeros((9, *CHW), np.float32))


def test_time_batch_and_describe(fp32_bundle):
    _, _, engine = fp32_bundle
    with TensorRTRunner(engine, TRT) as runner:
        times = runner.time_batch(np.zeros((4, *CHW), np.float32), warmup=5, runs=20)
        info = runner.describe()
    assert times.shape == (20,) and np.all(times > 0) and np.all(np.isfinite(times))
    print(f"\n{GPU.name}: batch 4 p50 {np.median(times):.3f} ms")
    assert info["tensorrt"] == TRT.version and info["device"] == GPU.name
    assert info["input"]["batch_range"] == [1, 8]


def test_rebuild_with_warm_timing_cache(fp32_bundle):
    root, plan, _ = fp32_bundle
    messages: list[str] = []
    engine = build_engine(plan, root, TRT, log=messages.append, gpu=GPU)
    assert engine.is_file()
    assert not [m for m in messages if "does not fit" in m]


def test_fp16_graph(tmp_path):
    plan = make_bundle(tmp_path, "fp16")
    engine = build_engine(plan, tmp_path, TRT, gpu=GPU)
    images = np.random.default_rng(1).standard_normal((3, *CHW)).astype(np.float32)
    with TensorRTRunner(engine, TRT) as runner:
        assert_close(runner.infer(images), reference(tmp_path, plan, images), rel=3e-2)


def _dla_cores() -> int:
    trt = TRT.module
    return int(trt.Runtime(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)


def test_dla_fp16_with_gpu_fallback(tmp_path):
    cores = _dla_cores()
    if cores == 0:
        pytest.skip(f"{GPU.name} has no DLA")
    plan = make_bundle(tmp_path, "fp16", dla_core=0, dla_cores=cores)
    engine = build_engine(plan, tmp_path, TRT, gpu=GPU)
    images = np.random.default_rng(2).standard_normal((2, *CHW)).astype(np.float32)
    with TensorRTRunner(engine, TRT) as runner:
        assert_close(runner.infer(images), reference(tmp_path, plan, images), rel=5e-2)


def _trtexec() -> str | None:
    found = shutil.which("trtexec")
    jetson = Path("/usr/src/tensorrt/bin/trtexec")
    return found or (str(jetson) if jetson.is_file() else None)


def test_trtexec_command_builds_the_same_engine(tmp_path):
    tool = _trtexec()
    if tool is None:
        pytest.skip("trtexec not found (PATH or /usr/src/tensorrt/bin)")
    plan = make_bundle(tmp_path, "fp16")
    command = trtexec_command(plan, str(tmp_path))
    result = subprocess.run([tool, *command[1:]], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    images = np.random.default_rng(3).standard_normal((2, *CHW)).astype(np.float32)
    with TensorRTRunner(tmp_path / plan.engine, TRT) as runner:
        assert_close(runner.infer(images), reference(tmp_path, plan, images), rel=3e-2)
