"""Build a TensorRT engine from a BuildPlan with TensorRT's Python API (8.5 / 8.6, 10.x, 11.x).

API facts this relies on (python/src of each release branch of github.com/NVIDIA/TensorRT):
- `Builder.create_network(flags)`, `OnnxParser(network, logger).parse_from_file(path)`,
  `IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)` (8.4+), `create_optimization_profile` /
  `set_shape`, `create_timing_cache(bytes)` / `set_timing_cache(cache, ignore_mismatch)` /
  `get_timing_cache().serialize()`, `default_device_type`, `DLA_core`, `build_serialized_network`
  exist unchanged in 8.5, 8.6, 10.3 and 11.x.
- Parser errors: `get_error(i)` has `desc()`, `code()` and `node()` (the node index) in every
  version; `node_name()` and `node_operator()` only from 10.0. On 8.x the name and operator are
  looked up in the ONNX graph by index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pipeline.artifacts import write_bytes_atomic
from pipeline.backends.tensorrt_env import GpuInfo, TensorRTError, TensorRTInfo, require_tensorrt
from pipeline.backends.tensorrt_plan import BuildPlan, version_matches
from pipeline.progress import quiet

Log = Callable[[str], None]
_MAX_LISTED_ERRORS = 5


class BuildError(TensorRTError):
    """The engine could not be built; the message is one line."""


# --- logging ----------------------------------------------------------------------------------


def _make_logger(trt: Any, log: Log) -> Any:
    """An ILogger that forwards warnings and errors to `log` and keeps the errors for BuildError."""

    class _Logger(trt.ILogger):  # the documented way to subclass ILogger in Python
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
            if level <= 1:
                self.errors.append(msg)
            if level <= 2:
                log(f"TensorRT: {msg}")

    return _Logger()


# --- parser errors ----------------------------------------------------------------------------


def _onnx_nodes(onnx_path: Path) -> list[Any]:
    try:
        from pipeline.graphs.query import read_graph

        return list(read_graph(onnx_path).node)
    except Exception:  # noqa: BLE001 - only used to name nodes in an error message
        return []


def _node_identity(error: Any, nodes: list[Any]) -> tuple[str, str] | None:
    """(node name, operator) of a parser error, or None when it is not about a node."""
    if hasattr(error, "node_name"):  # TensorRT 10.0+
        name, op = error.node_name(), error.node_operator()
        if name or op:
            return name or f"#{error.node()}", op or "?"
    index = error.node()
    if index is None or index < 0:
        return None
    if index < len(nodes):
        return nodes[index].name or f"#{index}", nodes[index].op_type
    return f"#{index}", "?"


def parser_errors(parser: Any, onnx_path: Path) -> list[str]:
    """Every error the ONNX parser recorded, as "node <name> (<op>): <desc>"."""
    nodes = _onnx_nodes(onnx_path) if not _has_node_names(parser) else []
    messages = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        identity = _node_identity(error, nodes)
        prefix = f"node {identity[0]} ({identity[1]}): " if identity else ""
        messages.append(prefix + str(error.desc()))
    return messages


def _has_node_names(parser: Any) -> bool:
    return parser.num_errors > 0 and hasattr(parser.get_error(0), "node_name")


def _summarize(messages: list[str]) -> str:
    shown = "; ".join(messages[:_MAX_LISTED_ERRORS])
    more = len(messages) - _MAX_LISTED_ERRORS
    return shown + (f" (and {more} more)" if more > 0 else "")


# --- network and config -----------------------------------------------------------------------


def _enum(trt_info: TensorRTInfo, enum_name: str, member: str, plan: BuildPlan) -> Any:
    value = getattr(getattr(trt_info.module, enum_name), member, None)
    if value is None:
        raise BuildError(
            f"TensorRT {trt_info.version} has no {enum_name}.{member}; "
            f"the plan was made for TensorRT {plan.tensorrt_version}"
        )
    return value


def _network_flags(trt_info: TensorRTInfo, plan: BuildPlan) -> int:
    bits = 0
    for name in plan.network_flags:
        bits |= 1 << int(_enum(trt_info, "NetworkDefinitionCreationFlag", name, plan))
    return bits


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path, version: str) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = parser_errors(parser, onnx_path) or ["no error recorded"]
        raise BuildError(f"{onnx_path.name}: TensorRT {version} cannot parse it: {_summarize(errors)}")
    return parser  # the parser owns weights the network refers to until the build is done


def _check_input(network: Any, plan: BuildPlan) -> None:
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    tensor = inputs.get(plan.input_name)
    if tensor is None:
        raise BuildError(f"the ONNX has no input {plan.input_name!r} (inputs: {', '.join(inputs) or 'none'})")
    chw = tuple(tensor.shape)[1:]
    if len(chw) != 3 or any(d not in (-1, want) for d, want in zip(chw, plan.input_chw)):
        raise BuildError(
            f"input {plan.input_name!r} has shape {tuple(tensor.shape)}, the plan expects Nx{plan.input_chw}"
        )


def _configure(trt_info: TensorRTInfo, builder: Any, config: Any, plan: BuildPlan) -> None:
    trt = trt_info.module
    workspace = plan.workspace_mib << 20
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    profile = builder.create_optimization_profile()
    chw = tuple(plan.input_chw)
    profile.set_shape(plan.input_name, *[(plan.profile[k], *chw) for k in ("min", "opt", "max")])
    config.add_optimization_profile(profile)
    for name in plan.builder_flags:
        config.set_flag(_enum(trt_info, "BuilderFlag", name, plan))
    if plan.dla_core is not None:
        available = builder.num_DLA_cores
        if plan.dla_core >= available:
            raise BuildError(f"DLA core {plan.dla_core} requested, this device has {available} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core


def _use_timing_cache(config: Any, path: Path, log: Log) -> None:
    """Load the timing cache if there is one; a cache of another device or version starts afresh."""
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - a truncated file is just a cold cache
        cache = None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if data:
            log(f"timing cache {path.name} does not fit this TensorRT/GPU; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


# --- build ------------------------------------------------------------------------------------


def _check_device(plan: BuildPlan, trt_info: TensorRTInfo, gpu: GpuInfo | None) -> None:
    if not version_matches(plan.tensorrt_version, trt_info.version):
        raise BuildError(
            f"the plan is for TensorRT {plan.tensorrt_version}, this device has {trt_info.version}; "
            "make the plan for the TensorRT found here"
        )
    if gpu is not None and plan.compute_capability not in ("auto", gpu.compute_capability):
        raise BuildError(
            f"the plan is for compute capability {plan.compute_capability}, "
            f"this GPU ({gpu.name}) is {gpu.compute_capability}"
        )


def build_engine(
    plan: BuildPlan,
    bundle_dir: Path,
    trt: TensorRTInfo | None = None,
    log: Log = quiet,
    *,
    gpu: GpuInfo | None = None,
) -> Path:
    """Build `plan` into `bundle_dir / plan.engine` and update its timing cache. Returns the engine path.

    Raises TensorRTUnavailable when TensorRT is not importable, BuildError for anything else.
    """
    bundle_dir = Path(bundle_dir)
    onnx_path = bundle_dir / plan.onnx
    if not onnx_path.is_file():
        raise BuildError(f"{onnx_path}: the {plan.precision} ONNX is not in the bundle")
    trt_info = require_tensorrt(trt)
    _check_device(plan, trt_info, gpu)
    module = trt_info.module
    logger = _make_logger(module, log)
    builder = module.Builder(logger)
    network = builder.create_network(_network_flags(trt_info, plan))
    parser = _parse(module, network, logger, onnx_path, trt_info.version)
    _check_input(network, plan)
    config = builder.create_builder_config()
    _configure(trt_info, builder, config, plan)
    cache_path = bundle_dir / plan.timing_cache
    _use_timing_cache(config, cache_path, log)
    log(f"building {plan.engine} with TensorRT {trt_info.version} (this can take minutes)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.errors[-1] if logger.errors else "see the TensorRT messages above"
        raise BuildError(f"TensorRT {trt_info.version} could not build {plan.engine}: {reason}")
    engine_path = bundle_dir / plan.engine
    write_bytes_atomic(engine_path, serialized)
    write_bytes_atomic(cache_path, config.get_timing_cache().serialize())
    del parser  # held until here: the network refers to weights the parser owns
    return engine_path
