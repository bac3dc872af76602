"""engine: per target backend.

cpu target (ONNX Runtime): the optimized graph of every precision, saved for the bundle with the
session settings that precision runs with; validation measures these graphs with the same
settings, and the manifest records them per precision. TensorRT targets: the build plans (one per precision
and TensorRT version the target ships) go into the bundle; the engines are built where the
target's GPU and TensorRT are (pipeline.finish), right away when that is this host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from pipeline.artifacts import StageCache, StageResult
from pipeline.backends.onnxruntime import SessionSettings, precision_settings, save_optimized
from pipeline.config import Config, TargetConfig
from pipeline.errors import PlanError, StageError
from pipeline.names import FP32, onnx_file

STAGE_VERSION = "2"  # 2: each graph optimized with its own session settings (TensorRT graphs: exact Q/DQ)


def session_settings(config: Config, precision: str) -> SessionSettings:
    """How `precision`'s graph is run: when its optimized graph is saved, when it is validated,
    and as the manifest records it (one function, so the three cannot differ)."""
    return precision_settings(precision, SessionSettings(intra_op_threads=config.validate_.threads))


def openvino_settings(config: Config) -> Any:
    """How OpenVINO compiles every graph it runs (validation and the manifest use this one function)."""
    from pipeline.backends.openvino import OpenVinoSettings

    return OpenVinoSettings(threads=config.validate_.threads)


def cpu_runtimes(target: TargetConfig) -> List[str]:
    """The runtimes the cpu target's graphs are measured on (OpenVINO when asked for; with "auto"
    when it is installed, else ONNX Runtime alone, which the report says)."""
    from pipeline.backends.openvino import openvino_version

    if target.runtime == "onnxruntime":
        return ["onnxruntime"]
    if openvino_version() is None:
        if target.runtime == "openvino":
            raise StageError(
                'runtime = "openvino" but OpenVINO is not installed: pip install -e ".[host]" installs it '
                '(or set [targets.cpu] runtime = "onnxruntime")'
            )
        return ["onnxruntime"]
    return ["onnxruntime", "openvino"]


def openvino_graphs(target: TargetConfig, models: Dict[str, Path]) -> Dict[str, Path]:
    """The graphs OpenVINO is to measure (the precision stage's: OpenVINO compiles them itself,
    not ONNX Runtime's optimized graphs with their fused contrib ops); {} when it measures none."""
    return dict(models) if "openvino" in cpu_runtimes(target) else {}


@dataclass(frozen=True)
class EngineInputs:
    """What the engine stage reads: each precision's graph and the content hash of that graph."""

    models: Dict[str, Path]
    keys: Dict[str, str]


def run_engine(ctx: Any, inputs: EngineInputs) -> Any:
    """The engine stage (a pipeline.context.EngineStep): ONNX Runtime's optimized graphs for the
    cpu target; for a TensorRT target its build plans, the engines left for the device unless
    this host is the target."""
    from pipeline.context import EngineStep

    if ctx.target.backend == "onnxruntime":
        stage = run_cpu_engines(ctx.config, ctx.cache, inputs.models, inputs.keys)
        return EngineStep(stage=stage, cached=stage.cached)
    crop = ctx.config.preprocessing.crop
    planned = plan_engines(ctx.config, ctx.target_name, ctx.target, crop, ctx.options.dla_core)
    return EngineStep(pending=planned.pending, files=planned.files, left_reason=planned.reason, cached=planned.cached)


def summary(step: Any) -> str:
    """The stage's line in the build log."""
    if step.pending:
        return "engines left for the device: " + ", ".join(step.pending)
    return f"ONNX Runtime optimized graphs for {', '.join(step.stage.record.outputs)}"


def run_cpu_engines(
    config: Config, cache: StageCache, models: Dict[str, Path], model_keys: Dict[str, str]
) -> StageResult:
    """`models`: precision -> ONNX path; `model_keys`: precision -> content key of that file."""
    import onnxruntime

    settings = {precision: asdict(session_settings(config, precision)) for precision in models}
    versions = {"onnxruntime": onnxruntime.__version__}

    def body(workdir: Path):
        outputs = {}
        for precision, path in models.items():
            name = f"model.{precision}.ort-opt.onnx"
            save_optimized(path, workdir / name, session_settings(config, precision))
            outputs[precision] = name
        return outputs, {"session": settings}

    return cache.run("engine-onnxruntime", dict(model_keys), settings, versions, body, STAGE_VERSION)


# ---------------------------------------------------------------------------------------------
# TensorRT targets


@dataclass
class PlannedEngines:
    """What the engine stage of a TensorRT target leaves: pending work and files for the bundle."""

    pending: List[str]
    files: Dict[str, Path] = field(default_factory=dict)
    reason: str = ""  # why this host cannot build them ("" when it can)
    cached: bool = False


def make_plans(
    config: Config, target_name: str, target: TargetConfig, crop: int, dla_core: Optional[int] = None
) -> List[Any]:
    from pipeline.backends.tensorrt import EngineSpec, make_build_plan
    from pipeline.backends.tensorrt_plan import plan_versions

    plans = []
    for version in plan_versions(target, dla_core):  # "10.x" stays a wildcard the device resolves
        for precision in target.precisions:
            # DLA has no FP32 path: an explicit --dla-core applies to fp16/int8-trt only.
            core = dla_core if precision != FP32 else None
            spec = EngineSpec(config.model.name, precision, onnx_file(precision), (3, crop, crop))
            plans.append(make_build_plan(target_name, target, spec, version, core))
    return plans


def host_mismatch(target_name: str, target: TargetConfig) -> Optional[str]:
    """Why this host cannot build the target's engines (None when it can)."""
    from pipeline.backends.tensorrt import find_tensorrt, gpu_device, tensorrt_status

    trt = find_tensorrt()
    if trt is None:
        return tensorrt_status()
    if trt.major not in target.tensorrt_majors and "x" not in "".join(target.tensorrt_versions):
        return f"this host has TensorRT {trt.version}; {target_name} ships {', '.join(target.tensorrt_versions)}"
    gpu = gpu_device()
    if gpu is None:
        return "no CUDA GPU found on this host"
    if target.compute_capability not in ("auto", gpu.compute_capability):
        return (
            f"this GPU ({gpu.name}) is compute capability {gpu.compute_capability}, {target_name} is "
            f"{target.compute_capability}: an engine built here would not run there, so it is not labelled as "
            f"{target_name}'s"
        )
    return None


def plan_engines(
    config: Config, target_name: str, target: TargetConfig, crop: int, dla_core: Optional[int] = None
) -> PlannedEngines:
    """The build plans for the bundle; engines are left pending (the finish step builds them)."""
    from pipeline.backends.tensorrt import BUILD_PLAN_FILE, write_build_plans

    plans = make_plans(config, target_name, target, crop, dla_core)
    path = write_build_plans(target_name, plans, config.path(config.cache_dir) / "plans" / target_name)
    pending = [f"engine:{p}" for p in target.precisions]
    existing = config.path(config.engines_dir) / f"{config.model.name}-{target_name}" / BUILD_PLAN_FILE
    unchanged = existing.is_file() and existing.read_bytes() == path.read_bytes()
    return PlannedEngines(pending, {BUILD_PLAN_FILE: path}, host_mismatch(target_name, target) or "", cached=unchanged)


@dataclass
class ReleasePlans:
    """The plans a device with one TensorRT release builds, pinned to it (what `--dry-run` prints)."""

    release: str  # "10.3.0"
    plans: List[Any]  # pinned BuildPlans: their trtexec lines name the engines as the finish does
    problems: List[str] = field(default_factory=list)  # precisions without a line, and why


def plans_by_release(plans: List[Any], trt: Any = None, gpu: Any = None) -> List[ReleasePlans]:
    """The plans pinned per TensorRT release: the release found here (`trt`, with the GPU found)
    when the plans cover it, else every release the plan versions stand for. Chosen and pinned
    as the finish does (select_plans, then release and GPU), so a printed trtexec line writes
    the engine the finish looks for."""
    from pipeline.backends.tensorrt_plan import pin_plan, releases_of, select_plans

    found = f"{trt.major}.{trt.minor}.{trt.patch}" if trt is not None else None
    if found is not None and select_plans(plans, found):
        releases = [found]
    else:  # not on the device: one group per release the device may have, its GPU unknown here
        releases = list(dict.fromkeys(r for p in plans for r in releases_of(p.tensorrt_version)))
        gpu = None
    groups = []
    for release in releases:
        group = ReleasePlans(release, [])
        for plan in select_plans(plans, release):
            problem = _unpinnable(plan, gpu)
            if not problem:
                try:
                    group.plans.append(pin_plan(plan, release, gpu.compute_capability if gpu else None))
                except PlanError as exc:
                    problem = str(exc)
            if problem:
                group.problems.append(f"{plan.precision}: {problem}")
        groups.append(group)
    return groups


def _unpinnable(plan: Any, gpu: Any) -> str:
    if gpu is None:
        return (
            "the engine name needs the GPU's compute capability: run --dry-run on the machine with the GPU"
            if plan.compute_capability == "auto"
            else ""
        )
    if plan.compute_capability not in ("auto", gpu.compute_capability):
        return (
            f"the plan is for compute capability {plan.compute_capability}, this GPU ({gpu.name}) is "
            f"{gpu.compute_capability}"
        )
    return ""
