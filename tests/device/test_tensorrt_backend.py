"""TensorRT backend without a GPU: discovery, build plans, trtexec lines, clean failures, and the
runner's API names checked against TensorRT's own 11.4 runtime module (tensorrt-lean bindings).

Device side: runs on the devices' Pythons (3.8, 3.10) with the base install; the few tests that
need `onnx` or the lean bindings skip there."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pipeline.backends import tensorrt_runner
from pipeline.backends.tensorrt import (
    RUNNER_API_10,
    BuildError,
    BuildPlan,
    EngineSpec,
    GpuInfo,
    RunnerError,
    TensorRTInfo,
    TensorRTRunner,
    TensorRTUnavailable,
    build_engine,
    engine_file_name,
    find_tensorrt,
    format_plan,
    gpu_device,
    make_build_plan,
    parse_version,
    parser_errors,
    read_build_plans,
    require_tensorrt,
    resolve_plan,
    tensorrt_status,
    trtexec_command,
    write_build_plans,
)
from pipeline.backends.tensorrt_env import info_from_module
from pipeline.backends.tensorrt_plan import (
    dla_support,
    pin_plan,
    plan_versions,
    precision_builder_flags,
    releases_of,
    select_plans,
    trtexec_line,
)
from pipeline.config import BatchProfile, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(ROOT / "pipeline.toml")
TRT_TARGETS = {name: t for name, t in CONFIG.targets.items() if t.backend == "tensorrt"}
CHW = (3, 112, 112)
ONNX_OF = {p: f"models/model.{p}.onnx" for p in ("fp32", "fp16", "int8-trt")}


def plan_for(target: str, precision: str, version: str, dla_core: int | None = None, **kw) -> BuildPlan:
    name, config = CONFIG.target(target)
    return make_build_plan(
        name, config, EngineSpec("vt_demo", precision, ONNX_OF[precision], CHW), version, dla_core, **kw
    )


def _forget_tensorrt() -> None:
    for name in [m for m in sys.modules if m == "tensorrt" or m.startswith("tensorrt.")]:
        del sys.modules[name]


@pytest.fixture
def no_tensorrt(monkeypatch):
    """`import tensorrt` fails, whether or not TensorRT is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Put a `tensorrt` package with the given __init__.py first on sys.path."""

    def make(init_source: str) -> Path:
        package = tmp_path / "tensorrt"
        package.mkdir()
        (package / "__init__.py").write_text(init_source)
        monkeypatch.syspath_prepend(str(tmp_path))
        _forget_tensorrt()
        importlib.invalidate_caches()
        return package

    yield make
    _forget_tensorrt()


def placeholder_onnx(path: Path) -> Path:
    """A file where the plan expects its ONNX (for failures that happen before parsing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not parsed by these tests")
    return path


def tiny_onnx(path: Path) -> Path:
    """Conv -> Relu -> Flatten -> Gemm, input `images` Nx3x8x8, output `logits`."""
    onnx = pytest.importorskip("onnx", reason="onnx is a host package (pip install -e .[host])")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32)),
        helper.make_tensor("fc", TensorProto.FLOAT, [4 * 8 * 8, 5], rng.standard_normal(1280).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="stem_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="stem_relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


# --- discovery ----------------------------------------------------------------------------------


def test_find_tensorrt_none_when_not_installed(no_tensorrt):
    assert find_tensorrt() is None
    assert "not installed" in tensorrt_status()
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        require_tensorrt()


def test_find_tensorrt_none_for_stub_package_without_version(fake_package):
    package = fake_package("")  # what tensorrt-stubs leaves behind
    assert find_tensorrt() is None
    status = tensorrt_status()
    assert "no version" in status and str(package) in status
    with pytest.raises(TensorRTUnavailable, match="no version"):
        require_tensorrt()


def test_find_tensorrt_none_for_broken_install(fake_package):
    fake_package("raise OSError('libnvinfer.so.10: cannot open shared object file')\n")
    assert find_tensorrt() is None
    assert "fails to import" in tensorrt_status() and "libnvinfer" in tensorrt_status()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.3.0.30", (10, 3, 0)), ("8.6.2", (8, 6, 2)), ("11.4", (11, 4, 0)), ("unknown", None), ("", None)],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_version_of_tensorrt_runtime_module():
    lean = pytest.importorskip("tensorrt_lean_bindings", reason="pip install tensorrt-lean-cu13-bindings")
    info = info_from_module(lean)
    assert info is not None and info.version == lean.__version__
    assert (info.major, info.minor) >= (11, 4)
    assert info_from_module(types.ModuleType("tensorrt")) is None


def test_gpu_device_is_none_or_complete():
    gpu = gpu_device()  # None on a machine without a driver, whatever library is installed
    if gpu is not None:
        assert gpu.name and parse_version(gpu.compute_capability + ".0") and gpu.total_memory_bytes > 0


# --- plans ----------------------------------------------------------------------------------------

PLAN_CASES = [
    (name, version, precision)
    for name, target in TRT_TARGETS.items()
    for version in target.tensorrt_versions
    for precision in target.precisions
]


@pytest.mark.parametrize(("target", "version", "precision"), PLAN_CASES)
def test_plan_for_every_target_version_and_precision(target, version, precision):
    plan = plan_for(target, precision, version)
    config = TRT_TARGETS[target]
    major = int(version.split(".")[0])
    assert plan.strongly_typed is (major >= 10)
    assert plan.network_flags == {8: ("EXPLICIT_BATCH",), 10: ("STRONGLY_TYPED",), 11: ()}[major]
    assert plan.builder_flags == precision_builder_flags(major, precision)
    assert plan.profile == {"min": config.profile.min, "opt": config.profile.opt, "max": config.profile.max}
    assert plan.workspace_mib == config.workspace_mib
    # Strongly typed builds read int8-trt's FP16-outside graph; weakly typed ones the FP32-outside one.
    expected_onnx = "models/model.int8-trt-fp16.onnx" if precision == "int8-trt" and major >= 10 else ONNX_OF[precision]
    assert plan.input_name == "images" and plan.input_chw == CHW and plan.onnx == expected_onnx
    assert plan.dla_core is None and plan.gpu_fallback is False
    assert plan.engine.startswith("engines/") and f".trt{version}." in plan.engine
    assert plan.compute_capability == (config.compute_capability or "auto")
    assert BuildPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(
    ("major", "precision", "flags"),
    [
        (8, "fp32", ()),
        (8, "fp16", ("FP16",)),  # weakly typed: ONNX casts alone do not select FP16 kernels
        (8, "int8-trt", ("INT8", "FP16")),  # Q/DQ needs INT8; FP16 lets the rest fall back to FP16
        (10, "fp16", ()),
        (10, "int8-trt", ()),
        (11, "fp16", ()),
        (11, "int8-trt", ()),
    ],
)
def test_precision_flags_per_major(major, precision, flags):
    assert precision_builder_flags(major, precision) == flags


def test_desktop_plan_takes_the_found_gpu():
    plan = plan_for("desktop", "fp16", "10.8.0", compute_capability="8.9")
    assert plan.compute_capability == "8.9" and plan.engine.endswith(".trt10.8.0.sm89.engine")
    with pytest.raises(ValueError, match="compute capability 8.7, this GPU is 8.9"):
        plan_for("jetson-agx-orin", "fp16", "10.3", compute_capability="8.9")


def test_dla_plan_on_agx_orin():
    plan = plan_for("jetson-agx-orin", "int8-trt", "10.3", dla_core=0)
    assert plan.dla_core == 0 and plan.gpu_fallback is True
    # 10.x DLA keeps the documented weakly typed recipe: precision flags, no STRONGLY_TYPED.
    assert plan.strongly_typed is False and plan.network_flags == ()
    assert plan.builder_flags == ("INT8", "FP16", "GPU_FALLBACK")
    assert plan.engine.endswith(".sm87.dla0.engine")
    legacy = plan_for("jetson-agx-orin", "fp16", "8.6", dla_core=1)
    assert legacy.builder_flags == ("FP16", "GPU_FALLBACK") and legacy.network_flags == ("EXPLICIT_BATCH",)
    typed = plan_for("jetson-agx-orin", "fp16", "11.4.1", dla_core=0)
    assert typed.strongly_typed is True and typed.builder_flags == ("GPU_FALLBACK",)


@pytest.mark.parametrize(
    ("target", "precision", "version", "core", "message"),
    [
        ("jetson-orin-nano", "int8-trt", "10.3", 0, "has no DLA cores"),
        ("jetson-thor", "fp16", "11.4", 0, "has no DLA cores"),
        ("jetson-agx-orin", "int8-trt", "10.3", 2, "DLA cores 0..1, not 2"),
        ("jetson-agx-orin", "fp32", "10.3", 0, "FP16 and INT8 only"),
        ("jetson-agx-orin", "int8-trt", "11.4.0", 0, "no DLA support"),
    ],
)
def test_dla_refused(target, precision, version, core, message):
    with pytest.raises(ValueError, match=message):
        plan_for(target, precision, version, dla_core=core)


def test_version_not_shipped_names_the_shipped_versions():
    with pytest.raises(ValueError, match=r"ships TensorRT 8\.5, 8\.6, 10\.3, not 11\.4"):
        plan_for("jetson-orin-nano", "int8-trt", "11.4")
    with pytest.raises(ValueError, match=r"ships TensorRT 10\.x, 11\.x, not 8\.6"):
        plan_for("desktop", "fp16", "8.6")


def test_plan_refuses_wrong_precision_backend_and_paths():
    with pytest.raises(ValueError, match="int8-trt"):
        make_build_plan(
            "jetson-agx-orin",
            TRT_TARGETS["jetson-agx-orin"],
            EngineSpec("m", "int8", "models/model.int8.onnx", CHW),
            "10.3",
        )
    with pytest.raises(ValueError, match="uses onnxruntime"):
        make_build_plan("cpu", CONFIG.targets["cpu"], EngineSpec("m", "fp16", "models/model.fp16.onnx", CHW), "10.3")
    for bad in ("/abs/model.onnx", "../model.onnx"):
        with pytest.raises(ValueError, match="relative"):
            make_build_plan("desktop", TRT_TARGETS["desktop"], EngineSpec("m", "fp16", bad, CHW), "10.3")
    with pytest.raises(ValueError, match="not a TensorRT version"):
        plan_for("desktop", "fp16", "ten")


def test_engine_names_differ_in_every_ingredient():
    base = dict(
        model="vt_demo",
        precision="int8-trt",
        profile={"min": 1, "opt": 8, "max": 32},
        tensorrt_version="10.3.0",
        compute_capability="8.7",
    )
    assert engine_file_name(**base) == "vt_demo.int8-trt.b1-8-32.trt10.3.0.sm87.engine"
    variants = [
        {"model": "vt_big"},
        {"precision": "fp16"},
        {"profile": {"min": 1, "opt": 4, "max": 32}},
        {"profile": BatchProfile(min=1, opt=8, max=64)},
        {"tensorrt_version": "10.3.1"},
        {"tensorrt_version": "8.6"},
        {"compute_capability": "7.2"},
    ]
    names = {engine_file_name(**base)} | {engine_file_name(**{**base, **v}) for v in variants}
    names.add(engine_file_name(**base, dla_core=0))
    names.add(engine_file_name(**base, dla_core=1))
    assert len(names) == len(variants) + 3


# --- trtexec --------------------------------------------------------------------------------------

SHAPES = ["--minShapes=images:1x3x112x112", "--optShapes=images:8x3x112x112", "--maxShapes=images:32x3x112x112"]


@pytest.mark.parametrize(
    ("version", "tail"),
    [
        (
            "8.5",
            [
                "--memPoolSize=workspace:4096",
                "--timingCacheFile=B/engines/timing.trt8.5.sm87.cache",
                "--int8",
                "--fp16",
                "--buildOnly",
            ],
        ),
        (
            "8.6",
            [
                "--memPoolSize=workspace:4096",
                "--timingCacheFile=B/engines/timing.trt8.6.sm87.cache",
                "--int8",
                "--fp16",
                "--skipInference",
            ],
        ),
        (
            "10.3",
            [
                "--memPoolSize=workspace:4096",
                "--timingCacheFile=B/engines/timing.trt10.3.sm87.cache",
                "--stronglyTyped",
                "--skipInference",
            ],
        ),
        (
            "11.4",
            [
                "--memPoolSize=workspace:4096",
                "--timingCacheFile=B/engines/timing.trt11.4.sm87.cache",
                "--skipInference",
            ],
        ),
    ],
)
def test_trtexec_int8_per_version(version, tail):
    plan = plan_for("jetson-agx-orin", "int8-trt", version)
    engine = f"B/engines/vt_demo.int8-trt.b1-8-32.trt{version}.sm87.engine"
    graph = "model.int8-trt.onnx" if version.startswith("8.") else "model.int8-trt-fp16.onnx"
    assert trtexec_command(plan, "B") == [
        "trtexec",
        f"--onnx=B/models/{graph}",
        f"--saveEngine={engine}",
        *SHAPES,
        *tail,
    ]


def test_trtexec_fp16_and_fp32_on_8x_and_dla():
    assert "--fp16" in trtexec_command(plan_for("jetson-agx-orin", "fp16", "8.6"))
    assert "--int8" not in trtexec_command(plan_for("jetson-agx-orin", "fp16", "8.6"))
    fp32 = trtexec_command(plan_for("jetson-agx-orin", "fp32", "8.5"))
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(fp32)
    dla = trtexec_command(plan_for("jetson-agx-orin", "int8-trt", "10.3", dla_core=1))
    assert dla[-5:] == ["--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback", "--skipInference"]
    assert "--stronglyTyped" not in dla
    assert dla[1] == "--onnx=models/model.int8-trt.onnx"  # bundle_dir "." keeps paths relative; 10.x DLA: weakly typed
    dla11 = trtexec_command(plan_for("jetson-agx-orin", "int8-trt", "11.4.1", dla_core=0))
    assert dla11[-4:] == [
        "--timingCacheFile=engines/timing.trt11.4.1.sm87.cache",
        "--useDLACore=0",
        "--allowGPUFallback",
        "--skipInference",
    ]


def test_format_plan_lists_the_essentials():
    text = format_plan(pin_plan(plan_for("jetson-agx-orin", "int8-trt", "10.3", dla_core=0), "10.3.0"))
    for expected in (
        "jetson-agx-orin",
        "10.3.0",
        "weakly typed",
        "INT8, FP16, GPU_FALLBACK",
        "DLA core 0 (GPU fallback)",
        "min 1 / opt 8 / max 32",
        "4096 MiB",
        "mkdir -p engines && trtexec --onnx=",
    ):
        assert expected in text


@pytest.mark.parametrize("version", ["8.4", "8.5", "8.6", "10.0", "10.1", "10.3", "11.4"])
def test_trtexec_workspace_is_plain_mib_on_every_version(version):
    # 8.x reads MiB with std::stod; 10.0 would scale a "4096M" twice (4096 TiB); 10.1+ adds "M".
    command = trtexec_command(
        plan_for("desktop" if version[:2] in ("10", "11") else "jetson-orin-nano", "fp16", version)
    )
    assert [c for c in command if c.startswith("--memPoolSize")] == [
        f"--memPoolSize=workspace:{4096 if version[:2] in ('10', '11') else 1024}"
    ]


def test_trtexec_line_makes_its_folders_and_names_the_engine_as_the_finish():
    plan = plan_for("jetson-agx-orin", "int8-trt", "10.3")
    found = TensorRTInfo("10.3.0.30", 10, 3, 0, module=types.ModuleType("tensorrt"))
    resolved = resolve_plan(plan, found, GpuInfo("Orin", "8.7", 1, "pycuda"))
    assert pin_plan(plan, "10.3.0") == resolved
    line = trtexec_line(resolved, "my bundles/b")
    # strongly typed 10.x builds the graph that is FP16 outside its Q/DQ
    assert line.startswith(
        "mkdir -p 'my bundles/b/engines' && trtexec '--onnx=my bundles/b/models/model.int8-trt-fp16.onnx' "
    )
    assert f"'--saveEngine=my bundles/b/{resolved.engine}'" in line and resolved.engine.endswith(
        ".trt10.3.0.sm87.engine"
    )
    unpinned = format_plan(plan_for("desktop", "fp16", "10.x"))  # the name needs the release and GPU found
    assert "trtexec --onnx" not in unpinned and "run --dry-run where TensorRT and the GPU are" in unpinned


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("8.5", True),
        ("10.3", True),
        ("10.3.0", True),
        ("11.0", False),
        ("11.4.0", False),
        ("11.4.1", True),
        ("11.4.2", True),
        ("11.5", True),
        ("11.4", None),
        ("11.x", None),
    ],
)
def test_dla_support_per_version(version, supported):
    assert dla_support(version) is supported


def test_explicit_dla_on_11_4_is_decided_by_the_release_found():
    plan = plan_for("jetson-agx-orin", "int8-trt", "11.4", dla_core=1)
    assert plan.dla_core == 1  # "11.4" may be 11.4.1+
    orin = GpuInfo("Orin", "8.7", 1, "pycuda")
    newer = resolve_plan(plan, TensorRTInfo("11.4.1.2", 11, 4, 1, module=types.ModuleType("tensorrt")), orin)
    assert newer.engine.endswith(".trt11.4.1.sm87.dla1.engine")
    with pytest.raises(ValueError, match=r"TensorRT 11\.4\.0 has no DLA support .* DLA core 1 was asked for"):
        resolve_plan(plan, TensorRTInfo("11.4.0.5", 11, 4, 0, module=types.ModuleType("tensorrt")), orin)


def test_preferred_dla_falls_back_to_the_gpu_on_11_4_0():
    name, target = CONFIG.target("jetson-agx-orin")
    preferring = target.model_copy(update={"use_dla": True})
    assert plan_versions(preferring) == ["8.5", "8.6", "10.3", "11.4", "11.4.0"]
    assert plan_versions(preferring, dla_core=0) == plan_versions(target) == ["8.5", "8.6", "10.3", "11.4"]
    plans = [
        make_build_plan(name, preferring, EngineSpec("vt_demo", p, ONNX_OF[p], CHW), v)
        for v in plan_versions(preferring)
        for p in ("fp32", "int8-trt")
    ]
    on_11_4_0 = {p.precision: p for p in select_plans(plans, "11.4.0.5")}
    assert on_11_4_0["int8-trt"].tensorrt_version == "11.4.0" and on_11_4_0["int8-trt"].dla_core is None
    assert on_11_4_0["int8-trt"].strongly_typed and on_11_4_0["int8-trt"].builder_flags == ()
    on_11_4_1 = {p.precision: p for p in select_plans(plans, "11.4.1.2")}
    assert on_11_4_1["int8-trt"].tensorrt_version == "11.4" and on_11_4_1["int8-trt"].dla_core == 0
    assert on_11_4_1["fp32"].dla_core is None


def test_releases_printed_off_the_device():
    assert releases_of("10.3") == ("10.3.0",) and releases_of("8.5") == ("8.5.2",)
    assert releases_of("11.4") == ("11.4.0", "11.4.1") and releases_of("10.3.1") == ("10.3.1",)
    assert releases_of("10.x") == ()


# --- plan files -----------------------------------------------------------------------------------


def test_build_plan_json_round_trip_and_loader_fields(tmp_path):
    plan = plan_for("jetson-agx-orin", "int8-trt", "11.4.1", dla_core=0)
    other = plan_for("jetson-agx-orin", "fp16", "10.3")
    path = write_build_plans("jetson-agx-orin", [plan, other], tmp_path)
    document = json.loads(path.read_text())
    assert document["format_version"] == 2 and document["target"] == "jetson-agx-orin"
    data = document["plans"][0]
    # The C++ loader reads these names.
    assert data["onnx"] == "models/model.int8-trt-fp16.onnx" and data["precision"] == "int8-trt"  # 11.x: strongly typed
    assert data["profile"] == {"min": 1, "opt": 8, "max": 32} and data["workspace_mib"] == 4096
    assert data["dla_core"] == 0 and data["strongly_typed"] is True
    assert data["timing_cache"] == "engines/timing.trt11.4.1.sm87.cache"
    assert read_build_plans(tmp_path) == [plan, other]
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_build_plan_from_dict_rejects_bad_input(tmp_path):
    data = plan_for("desktop", "fp16", "11.4").to_dict()
    with pytest.raises(ValueError, match="lacks onnx"):
        BuildPlan.from_dict({k: v for k, v in data.items() if k != "onnx"})
    with pytest.raises(ValueError, match="format_version"):
        BuildPlan.from_dict({**data, "format_version": 3})
    with pytest.raises(ValueError, match="relative"):
        BuildPlan.from_dict({**data, "engine": "/tmp/x.engine"})
    assert BuildPlan.from_dict({**data, "added_later": 1}).to_dict() == data
    (tmp_path / "build_plan.json").write_text("{")
    with pytest.raises(ValueError, match="not a usable build plan"):
        read_build_plans(tmp_path)


def test_resolve_plan_pins_found_version_and_gpu():
    found = TensorRTInfo("10.3.0.30", 10, 3, 0, module=types.ModuleType("tensorrt"))
    orin = GpuInfo("Orin", "8.7", 64 << 30, "pycuda")
    plan = resolve_plan(plan_for("jetson-agx-orin", "int8-trt", "10.3"), found, orin)
    assert plan.tensorrt_version == "10.3.0"
    assert plan.engine == "engines/vt_demo.int8-trt.b1-8-32.trt10.3.0.sm87.engine"
    assert plan.timing_cache == "engines/timing.trt10.3.0.sm87.cache"
    desktop = resolve_plan(plan_for("desktop", "fp16", "10.x"), found, GpuInfo("RTX", "8.9", 1, "cuda-python"))
    assert desktop.compute_capability == "8.9" and desktop.engine.endswith(".trt10.3.0.sm89.engine")
    with pytest.raises(ValueError, match="for TensorRT 8.6, this device has 10.3.0.30"):
        resolve_plan(plan_for("jetson-agx-orin", "int8-trt", "8.6"), found, orin)
    with pytest.raises(ValueError, match="this GPU .RTX. is 8.9"):
        resolve_plan(plan_for("jetson-agx-orin", "int8-trt", "10.3"), found, GpuInfo("RTX", "8.9", 1, "x"))


# --- builder and runner fail cleanly ------------------------------------------------------------------


def test_build_engine_without_tensorrt(tmp_path, no_tensorrt):
    plan = plan_for("jetson-orin-nano", "fp32", "10.3")
    placeholder_onnx(tmp_path / plan.onnx)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed.*pip install tensorrt"):
        build_engine(plan, tmp_path, log=lambda _: None)
    assert not (tmp_path / "engines").exists()


def test_build_engine_missing_onnx_and_version_mismatch(tmp_path):
    plan = plan_for("jetson-orin-nano", "fp32", "10.3")
    with pytest.raises(BuildError, match="fp32 ONNX is not in the bundle"):
        build_engine(plan, tmp_path, log=lambda _: None)
    placeholder_onnx(tmp_path / plan.onnx)
    other = TensorRTInfo("8.6.2", 8, 6, 2, module=types.ModuleType("tensorrt"))
    with pytest.raises(BuildError, match="plan is for TensorRT 10.3, this device has 8.6.2"):
        build_engine(plan, tmp_path, other, log=lambda _: None)


def test_runner_without_tensorrt(tmp_path, no_tensorrt):
    with pytest.raises(RunnerError, match="engine not found"):
        TensorRTRunner(tmp_path / "missing.engine")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        TensorRTRunner(engine)


def test_runner_frees_its_stream_when_the_engine_does_not_load(tmp_path, monkeypatch):
    closed = []

    class Memory:  # what open_device_memory returns, recording close()
        library, stream_handle = "stand-in", 0

        def synchronize(self):
            pass

        def close(self):
            closed.append(True)

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None  # what TensorRT returns for an engine of another version or GPU

    monkeypatch.setattr(tensorrt_runner, "open_device_memory", Memory)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"built elsewhere")
    module = types.SimpleNamespace(Logger=Logger, Runtime=Runtime)
    with pytest.raises(RunnerError, match="TensorRT 10.3.0 cannot load it"):
        TensorRTRunner(engine, TensorRTInfo("10.3.0", 10, 3, 0, module=module))
    assert closed == [True]  # a constructor that raises is never entered by `with`: it closes itself


def test_device_memory_without_gpu():
    if gpu_device() is not None:
        pytest.skip("a GPU is present: covered by tests/gpu")
    have_cuda_python = tensorrt_runner.import_cudart() is not None
    expected = RunnerError if have_cuda_python else TensorRTUnavailable
    with pytest.raises(expected, match="CUDA error|no CUDA buffer library"):
        tensorrt_runner.open_device_memory()


# --- parser error messages ------------------------------------------------------------------------


class _Error:
    """The parser error interface: desc()/node() always, node_name()/node_operator() from 10.0."""

    def __init__(self, desc, node):
        self._desc, self._node = desc, node

    def desc(self):
        return self._desc

    def node(self):
        return self._node


class _Error10(_Error):
    def __init__(self, desc, node, name, op):
        super().__init__(desc, node)
        self._name, self._op = name, op

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op


class _Parser:
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_name_the_node(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    legacy = _Parser([_Error("unsupported attribute", 3), _Error("no node", -1)])
    assert parser_errors(legacy, path) == ["node head (Gemm): unsupported attribute", "no node"]
    modern = _Parser([_Error10("bad weights", 0, "stem_conv", "Conv")])
    assert parser_errors(modern, path) == ["node stem_conv (Conv): bad weights"]


# --- API names against TensorRT's own runtime module ------------------------------------------------


def _lean():
    return pytest.importorskip(
        "tensorrt_lean_bindings", reason="TensorRT lean runtime not installed (pip install tensorrt-lean-cu13-bindings)"
    )


def test_runner_api_exists_in_tensorrt_11_runtime():
    lean = _lean()
    missing = [
        f"{owner}.{attr}"
        for owner, attrs in RUNNER_API_10.items()
        for attr in attrs
        if not hasattr(lean if owner == "tensorrt" else getattr(lean, owner), attr)
    ]
    assert not missing, f"TensorRT {lean.__version__} lacks {missing}"


def test_builder_enums_of_11x_plans_exist_and_precision_flags_are_gone():
    lean = _lean()
    plan = plan_for("jetson-agx-orin", "int8-trt", "11.4.1", dla_core=0)
    for flag in plan.builder_flags:
        assert hasattr(lean.BuilderFlag, flag)
    for removed in ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"):
        assert not hasattr(lean.BuilderFlag, removed)
    assert hasattr(lean.MemoryPoolType, "WORKSPACE") and hasattr(lean.DeviceType, "DLA")


_RECEIVERS = {
    "trt": "tensorrt",
    "trt_module": "tensorrt",
    "engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "context": "IExecutionContext",
    "_context": "IExecutionContext",
    "runtime": "Runtime",
    "_runtime": "Runtime",
}


def _receiver(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _used_tensorrt_api() -> dict[str, set[str]]:
    tree = ast.parse(inspect.getsource(tensorrt_runner))
    used: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = _RECEIVERS.get(_receiver(node.value) or "")
        if owner:
            used.setdefault(owner, set()).add(node.attr)
        inner = node.value
        if isinstance(inner, ast.Attribute) and _RECEIVERS.get(_receiver(inner.value) or "") == "tensorrt":
            used.setdefault(inner.attr, set()).add(node.attr)  # trt.Logger.WARNING -> Logger: WARNING
    return used


def test_runner_uses_exactly_the_listed_api():
    used = _used_tensorrt_api()
    listed: dict[str, set[str]] = {}
    for table in (RUNNER_API_10,):
        for owner, attrs in table.items():
            listed.setdefault(owner, set()).update(attrs)
    assert used == listed


def test_cuda_python_names_used_exist():
    cudart = tensorrt_runner.import_cudart()
    if cudart is None:
        pytest.skip("cuda-python not installed")
    tree = ast.parse(inspect.getsource(tensorrt_runner._CudaPythonMemory))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _receiver(n.value) in ("_rt", "cudart")}
    assert used and not [name for name in used if not hasattr(cudart, name)]
