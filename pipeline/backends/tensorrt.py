"""TensorRT backend: build plans, engine builds and the engine runner.

TensorRT is imported lazily: this module and everything it re-exports import and work (plans,
trtexec lines, `--dry-run`) on a machine without TensorRT or a GPU. Only `build_engine` and
`TensorRTRunner` need TensorRT, and they raise `TensorRTUnavailable` with a one-line reason when
it is missing.

- tensorrt_env:    find_tensorrt, tensorrt_status, gpu_device (what this machine has)
- tensorrt_plan:   BuildPlan, make_build_plan, engine_file_name, trtexec_command, format_plan
- tensorrt_build:  build_engine (Python API of TensorRT 8.5/8.6, 10.x, 11.x)
- tensorrt_runner: TensorRTRunner (the Runner protocol on a GPU)
"""

from __future__ import annotations

from pipeline.backends.tensorrt_build import BuildError, build_engine, parser_errors
from pipeline.backends.tensorrt_env import (
    GpuInfo,
    TensorRTError,
    TensorRTInfo,
    TensorRTUnavailable,
    find_tensorrt,
    gpu_device,
    parse_version,
    require_tensorrt,
    tensorrt_status,
)
from pipeline.backends.tensorrt_plan import (
    BUILD_PLAN_FILE,
    TENSORRT_PRECISIONS,
    BuildPlan,
    EngineSpec,
    engine_file_name,
    format_plan,
    make_build_plan,
    read_build_plans,
    resolve_plan,
    select_plans,
    trtexec_command,
    trtexec_line,
    write_build_plans,
)
from pipeline.backends.tensorrt_runner import RUNNER_API_10, RunnerError, TensorRTRunner

__all__ = [
    "BUILD_PLAN_FILE",
    "RUNNER_API_10",
    "TENSORRT_PRECISIONS",
    "BuildError",
    "BuildPlan",
    "EngineSpec",
    "GpuInfo",
    "RunnerError",
    "TensorRTError",
    "TensorRTInfo",
    "TensorRTRunner",
    "TensorRTUnavailable",
    "build_engine",
    "engine_file_name",
    "find_tensorrt",
    "format_plan",
    "gpu_device",
    "make_build_plan",
    "parse_version",
    "parser_errors",
    "read_build_plans",
    "require_tensorrt",
    "resolve_plan",
    "select_plans",
    "tensorrt_status",
    "trtexec_command",
    "trtexec_line",
    "write_build_plans",
]
