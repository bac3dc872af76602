"""manifest: the typed contract of a bundle's manifest.json (docs/bundle-format.md).

Every reader (verify, report, the device finish, build's up-to-date test) and the writer go
through `Manifest`, so a manifest that one of them accepts, all of them accept, and the C++
loader reads the same contract from docs/manifest.schema.json (generated from this model:
`schema_text()`; a test keeps the committed file equal to it).

The model checks what can be checked without the files: types and keys (nothing extra), that
every path is bundle-relative and listed in `files`, that the files a device needs are listed,
and that the class count agrees everywhere. The files themselves (present, hashes, no symbolic
link, nothing unlisted) are checked by `pipeline.stages.bundle.verify_bundle`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

try:
    from typing import Annotated
except ImportError:  # Python 3.8 (JetPack 5)
    from typing_extensions import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, model_validator

from pipeline.bundle.paths import path_problem
from pipeline.names import INPUT_NAME, OUTPUT_NAME

FORMAT_VERSION = 3  # 2: `session` per precision; 3: a session names its runtime (ONNX Runtime or OpenVINO)
READABLE_VERSIONS = (1, 2, 3)  # a version 1 manifest (one `session` for every precision) is still read
# What a device needs besides the models: validation against the host's FP32 logits, and the report it updates.
REFERENCE_FILES = (
    "reference/fp32_logits.npy",
    "reference/eval_set.json",
    "reference/eval_labels.npy",
    "reference/eval_crops.npy",
)
REQUIRED_FILES = REFERENCE_FILES + ("report/report.json",)
BUILD_PLAN = "build_plan.json"  # TensorRT targets: the device builds its engines from it

Precision = Literal["fp32", "fp16", "int8", "int8-trt"]
# `precisions` also names the graph variants a precision brings: `int8-trt-fp16` is the graph
# the int8-trt plans of strongly typed TensorRT (10.x, 11.x) build.
GraphName = Literal["fp32", "fp16", "int8", "int8-trt", "int8-trt-fp16"]


def _relative(path: str) -> str:
    problem = path_problem(path)
    if problem is not None:
        raise ValueError(f"path {path!r} leaves the bundle folder: it {problem}")
    return path


RelPath = Annotated[
    str, Field(min_length=1, description="bundle-relative POSIX path, no '..'"), AfterValidator(_relative)
]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    # JSON has real types: "10" is not a count. Unknown keys are refused, as in pipeline.toml.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TargetInfo(_Strict):
    name: str = Field(min_length=1)
    backend: Literal["onnxruntime", "tensorrt"]
    compute_capability: Optional[str]
    tensorrt_majors: List[int]


class ModelInfo(_Strict):
    name: str = Field(min_length=1)
    arch: str
    num_classes: int = Field(ge=1)
    spec: Dict[str, Any]


class InputInfo(_Strict):
    name: Literal[INPUT_NAME]  # type: ignore[valid-type]
    dtype: Literal["float32"]
    layout: Literal["NCHW"]
    shape: List[int] = Field(min_length=4, max_length=4)


class OutputInfo(_Strict):
    name: Literal[OUTPUT_NAME]  # type: ignore[valid-type]
    dtype: Literal["float32"]
    shape: List[int] = Field(min_length=2, max_length=2)


class Preprocessing(_Strict):
    resize: int = Field(ge=1)
    crop: int = Field(ge=1)
    mean: Annotated[Tuple[Finite, Finite, Finite], Strict(False)]  # a JSON array is the tuple
    std: Annotated[Tuple[PositiveFinite, PositiveFinite, PositiveFinite], Strict(False)]
    color: Literal["RGB"]
    interpolation: Literal["bilinear"]
    scale: PositiveFinite

    @model_validator(mode="after")
    def _crop_fits(self) -> "Preprocessing":
        if self.crop > self.resize:
            raise ValueError(f"preprocessing: crop ({self.crop}) exceeds resize ({self.resize})")
        return self


class PrecisionFiles(_Strict):
    onnx: RelPath
    optimized: Optional[RelPath]


class BatchProfile(_Strict):
    min: int = Field(ge=1)
    opt: int = Field(ge=1)
    max: int = Field(ge=1)


class Engine(_Strict):
    path: RelPath
    precision: Precision
    tensorrt_version: str
    compute_capability: str
    device_name: str
    profile: BatchProfile
    dla_core: Optional[int]
    sha256: Sha256


class FileEntry(_Strict):
    sha256: Sha256
    bytes: int = Field(ge=0)


class CpuIsa(_Strict):
    """What the host CPU offers INT8 (pipeline.host.cpu_isa)."""

    features: List[str]  # e.g. avx2, avx512_vnni, amx_int8; asimddp, i8mm on Arm
    int8_dot: Optional[str]  # the 8-bit dot-product instruction found, if any
    int8_kernel: Optional[str] = None  # the kernel ONNX Runtime's INT8 ops run on here
    int8_faster_than_fp32: Optional[bool] = None  # written by older bundles; read, no longer written


class HostInfo(_Strict):
    platform: str
    machine: str
    cpu: str
    cpu_count: Optional[int]
    python: str
    cpu_isa: Optional[CpuIsa] = None  # absent in bundles made before it was recorded


class SessionInfo(_Strict):
    """The ONNX Runtime session a graph was validated with, and is to be run with."""

    runtime: Literal["onnxruntime"] = "onnxruntime"  # absent before format_version 3
    graph_optimization: str
    intra_op_threads: int
    execution_mode: str
    provider: str
    qdq_fusion: bool = True  # False: Q/DQ run as float ops (exact arithmetic of TensorRT graphs)


class OpenVinoSessionInfo(_Strict):
    """The OpenVINO compiled model a graph was validated with, and is to be run with: it compiles
    the graph named by `precisions.<graph>.onnx` (format_version 3)."""

    runtime: Literal["openvino"]
    openvino: str  # the version it was validated with
    device: str
    threads: int = Field(ge=0)  # 0: OpenVINO's default
    performance_hint: str
    inference_precision: str


def _runtime_of(session: Any) -> str:
    """Which session model a graph's session is read as: its `runtime` (ONNX Runtime's when absent, as before
    version 3)."""
    runtime = (
        session.get("runtime", "onnxruntime")
        if isinstance(session, dict)
        else getattr(session, "runtime", "onnxruntime")
    )
    return runtime if runtime in ("onnxruntime", "openvino") else "onnxruntime"


GraphSession = Annotated[
    Union[Annotated[SessionInfo, Tag("onnxruntime")], Annotated[OpenVinoSessionInfo, Tag("openvino")]],
    Discriminator(_runtime_of),
]


class Manifest(_Strict):
    """manifest.json, format_version 3 (versions 1 and 2 are read too): the keys of
    docs/bundle-format.md, each required."""

    format_version: Literal[1, 2, 3]
    name: str = Field(min_length=1)
    created_utc: str
    target: TargetInfo
    model: ModelInfo
    input: InputInfo
    output: OutputInfo
    preprocessing: Preprocessing
    labels: List[str]
    precisions: Dict[GraphName, PrecisionFiles] = Field(min_length=1)
    engines: List[Engine]
    files: Dict[RelPath, FileEntry] = Field(min_length=1)
    versions: Dict[str, str]
    host: HostInfo
    rebuild_command: str
    pending: List[str]
    build_key: str
    # Version 2: graph name -> its session (cpu target); version 1: one session for every graph;
    # version 3: a graph's session may be OpenVINO's.
    session: Optional[Union[Dict[GraphName, GraphSession], SessionInfo]]

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        title="vt-edge bundle manifest",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        _check_classes(self)
        _check_listed(self)
        _check_session(self)
        return self


def _check_classes(m: Manifest) -> None:
    n = m.model.num_classes
    if len(m.labels) != n:
        raise ValueError(f"labels has {len(m.labels)} entries but model.num_classes is {n}")
    if m.output.shape[-1] != n:
        raise ValueError(f"output.shape {m.output.shape} does not end in model.num_classes ({n})")
    if m.input.shape[1:] != [3, m.preprocessing.crop, m.preprocessing.crop]:
        raise ValueError(f"input.shape {m.input.shape} is not [batch, 3, crop, crop] for crop {m.preprocessing.crop}")


def _check_listed(m: Manifest) -> None:
    """Every path the manifest refers to is one of its `files`, so the hashes cover it."""
    if "fp32" not in m.precisions:
        raise ValueError("precisions has no fp32 entry (the reference every precision is measured against)")
    referenced = [(f"precisions.{p}.onnx", f.onnx) for p, f in m.precisions.items()]
    referenced += [(f"precisions.{p}.optimized", f.optimized) for p, f in m.precisions.items() if f.optimized]
    referenced += [(f"engines[{i}].path", e.path) for i, e in enumerate(m.engines)]
    required = REQUIRED_FILES + ((BUILD_PLAN,) if m.target.backend == "tensorrt" else ())
    referenced += [("required file", rel) for rel in required]
    for where, rel in referenced:
        if rel not in m.files:
            raise ValueError(f"{where} {rel!r} is not listed in files")
    for i, engine in enumerate(m.engines):
        if engine.precision not in m.precisions:
            raise ValueError(f"engines[{i}] is for precision {engine.precision!r}, which precisions does not list")
        if engine.sha256 != m.files[engine.path].sha256:
            raise ValueError(f"engines[{i}].sha256 differs from the files entry of {engine.path!r}")


def _check_session(m: Manifest) -> None:
    """Version 2 names each graph's session, for exactly the graphs of `precisions`."""
    if m.session is None:
        return
    per_graph = not isinstance(m.session, SessionInfo)
    if per_graph != (m.format_version >= 2):
        shape = "an object of graph name -> session" if m.format_version >= 2 else "one session object"
        raise ValueError(f"session: format_version {m.format_version} has {shape}")
    if per_graph and set(m.session) != set(m.precisions):
        raise ValueError(
            f"session names graphs {sorted(m.session)}, precisions lists {sorted(m.precisions)}: one session per graph"
        )
    if per_graph and m.format_version < 3 and any(isinstance(s, OpenVinoSessionInfo) for s in m.session.values()):
        raise ValueError(f"session: an OpenVINO session needs format_version 3, not {m.format_version}")


def schema() -> Dict[str, Any]:
    """The JSON Schema of manifest.json (the C++ loader and other readers use it)."""
    return Manifest.model_json_schema()


def schema_text() -> str:
    """docs/manifest.schema.json as committed: `python -c "from pipeline.bundle.manifest import
    schema_text; print(schema_text(), end='')" > docs/manifest.schema.json` re-makes it."""
    return json.dumps(schema(), indent=2) + "\n"
