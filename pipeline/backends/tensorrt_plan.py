"""The TensorRT build plan: every setting an engine build needs, chosen per TensorRT version.

The plan is written into the bundle as `build_plan.json`; the Python builder, `trtexec` and the
C++ loader all build from it, so a device can finish a bundle without the host. Nothing here
imports TensorRT.

What each TensorRT major version requires (checked against NVIDIA's headers and trtexec sources
of each release branch, github.com/NVIDIA/TensorRT, and the TensorRT 11.4 documentation):

- 8.5 / 8.6 (JetPack 5): networks are weakly typed. `NetworkDefinitionCreationFlag.EXPLICIT_BATCH`
  is required for ONNX and dynamic shapes (NvInfer.h 8.5/8.6: "Dynamic shape support requires
  that the kEXPLICIT_BATCH flag is set"). A Q/DQ graph needs `BuilderFlag.INT8` (Q/DQ layers are
  only accepted with INT8 enabled); FP16 is set too so that layers outside the Q/DQ islands may
  run in FP16 instead of FP32 (kINT8 doc: "FP32 fallback with FP16 fallback if kFP16 also
  specified"). The ONNX FP16 casts are not a precision request to a weakly typed builder, so the
  fp16 graph needs `BuilderFlag.FP16` to get FP16 kernels.
- 10.x (JetPack 6, desktop): networks are always explicit batch (kEXPLICIT_BATCH "Deprecated in
  TensorRT 10.0 ... Ignored"); `kSTRONGLY_TYPED` exists (since 9.0) and makes the ONNX tensor
  types the precision. trtexec warns and drops --fp16/--int8 under --stronglyTyped, so a strongly
  typed plan sets no precision flags at all.
- 11.x (desktop, JetPack 7.2.2+): strongly typed only. NvInfer.h 11.0: kEXPLICIT_BATCH is gone,
  kSTRONGLY_TYPED is "Deprecated in TensorRT 11.0. Strongly typed mode is always enabled ...
  ignored"; BuilderFlag kFP16/kINT8/kBF16/kFP8/kINT4 and the precision-constraint flags are
  removed (the 11.4 runtime module has no BuilderFlag.FP16/INT8). trtexec 11: `--stronglyTyped`
  is "[Deprecated] ... a no-op", --fp16/--int8 no longer exist.
- trtexec memory: `--memPoolSize=workspace:N` since 8.4, where `--workspace=N` became
  deprecated. A plain number means MiB on every version: 8.4-8.6 read it with `std::stod` as
  MiB; 10.0 multiplies the number by its suffix's unit and then by 2^20 again (a plain number is
  MiB, but `4096M` becomes 4096 TiB: fixed in 10.1); 10.1+ appends a default `M` and divides
  back to MiB. So the line never carries a suffix (samples/common/sampleOptions.cpp and
  sampleEngines.cpp of each release branch). 8.4/8.5 build-only is `--buildOnly`; 8.6 deprecates it for
  `--skipInference`, which 10.x and 11.x keep.
- DLA (`--useDLACore=N --allowGPUFallback`, `BuilderFlag.GPU_FALLBACK`) runs FP16 and INT8 only.
  TensorRT 11.4.1 supports DLA on AGX Orin under JetPack 7.2.2+ (11.0-11.4.0 do not), and its
  documentation introduces strongly typed DLA builds as new there, replacing "the per-precision
  builder flags used before TensorRT 11.x". So a 10.x DLA plan stays weakly typed with the
  INT8/FP16 flags (the documented 10.x DLA recipe: `--useDLACore=0 --int8 --fp16
  --allowGPUFallback`); 10.x GPU plans are strongly typed. A plan for "11.4" cannot know
  whether the device has 11.4.0 (no DLA) or 11.4.1+: the plan keeps its DLA core and the
  version found decides (`resolve_plan` refuses DLA on 11.4.0); a target that only prefers DLA
  (`use_dla`) also gets "11.4.0" GPU plans, which the device picks there as more specific.
- Engine and timing-cache names carry the TensorRT release found (major.minor.patch) and the
  GPU's compute capability: `resolve_plan` pins them, the C++ loader names them the same way,
  and a printed trtexec line is resolved the same way (`trtexec_line`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from pipeline.artifacts import write_json_atomic
from pipeline.backends.tensorrt_env import GpuInfo, TensorRTInfo
from pipeline.bundle.paths import path_problem
from pipeline.config import BatchProfile, TargetConfig
from pipeline.errors import PlanError
from pipeline.names import FP16, FP32, INPUT_NAME, INT8_TRT, OUTPUT_NAME, onnx_file, tensorrt_graph

# 2: every key required, network_flags and builder_flags are what the builder sets (the C++
# loader builds with them). 1: the same keys, read as they are.
PLAN_FORMAT_VERSION = 2
READABLE_PLAN_VERSIONS = (1, 2)
BUILD_PLAN_FILE = "build_plan.json"
TENSORRT_PRECISIONS = (FP32, FP16, INT8_TRT)
SUPPORTED_MAJORS = (8, 10, 11)

_PLAN_VERSION = re.compile(r"^\d+(\.(\d+|x))*$")

# The release a device has for each plan version the targets ship, for printing trtexec lines
# off the device (engine names carry the release). On a device the release found is used.
JETPACK_RELEASES: dict[str, tuple[str, ...]] = {
    "8.5": ("8.5.2",),  # JetPack 5.1.x (Xavier, Orin)
    "8.6": ("8.6.2",),  # JetPack 6.0
    "10.3": ("10.3.0",),  # JetPack 6.1 / 6.2
    "10.13": ("10.13.3",),  # JetPack 7.0 (Thor)
    "11.4": ("11.4.0", "11.4.1"),  # 11.4.1: JetPack 7.2.2+, DLA on AGX Orin again
}


@dataclass(frozen=True)
class BuildPlan:
    """One engine build. Paths are relative to the bundle folder (POSIX separators)."""

    target: str
    model: str
    precision: str  # fp32 | fp16 | int8-trt
    onnx: str  # e.g. models/model.int8-trt.onnx
    engine: str  # e.g. engines/vt_demo.int8-trt.b1-8-32.trt10.3.sm87.engine
    input_chw: tuple[int, int, int]
    profile: dict[str, int]  # batch sizes {min, opt, max}
    workspace_mib: int
    tensorrt_version: str  # the version the plan is for: "10.3", "11.x" or a found "10.3.0"
    strongly_typed: bool
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names to set
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    dla_core: int | None
    gpu_fallback: bool
    timing_cache: str  # e.g. engines/timing.trt10.3.sm87.cache
    compute_capability: str  # "8.7", or "auto" until the GPU is known
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    format_version: int = field(default=PLAN_FORMAT_VERSION)

    @property
    def major(self) -> int:
        return _version_parts(self.tensorrt_version)[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("input_chw", "network_flags", "builder_flags"):
            data[key] = list(data[key])
        data["profile"] = {k: self.profile[k] for k in ("min", "opt", "max")}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BuildPlan":
        if data.get("format_version", PLAN_FORMAT_VERSION) not in READABLE_PLAN_VERSIONS:
            raise PlanError(
                f"build plan format_version {data.get('format_version')!r}: this vt-edge reads {_readable()}"
            )
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        if data.get("format_version", 1) >= 2:  # format 2 requires every key, as the C++ loader does
            required = names
        missing = sorted(required - data.keys())
        if missing:
            raise PlanError(f"build plan lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}  # newer readers may add keys
        for key in ("input_chw", "network_flags", "builder_flags"):
            values[key] = tuple(values[key])
        values["profile"] = {k: int(data["profile"][k]) for k in ("min", "opt", "max")}
        plan = cls(**values)
        _check_relative(plan.onnx, plan.engine, plan.timing_cache)
        return plan


# --- versions ---------------------------------------------------------------------------------


def _version_parts(version: str) -> tuple[int, int | None, int | None]:
    """(major, minor, patch) of a plan version: "10.3" -> (10, 3, None), "11.x" -> (11, None, None)."""
    if not _PLAN_VERSION.match(version):
        raise PlanError(f"not a TensorRT version: {version!r} (expected e.g. 10.3, 10.3.0 or 11.x)")
    parts = [None if p == "x" else int(p) for p in version.split(".")[:3]]
    parts += [None] * (3 - len(parts))
    return parts[0], parts[1], parts[2]  # type: ignore[return-value]


def _at_least(version: str, major: int, minor: int) -> bool:
    have_major, have_minor, _ = _version_parts(version)
    return (have_major, have_minor if have_minor is not None else 0) >= (major, minor)


def strongly_typed(major: int, *, dla: bool = False) -> bool:
    """Whether the network is strongly typed: 11.x always; 10.x except for DLA; 8.x never."""
    return major >= 11 or (major >= 10 and not dla)


def network_flags(major: int, *, dla: bool = False) -> tuple[str, ...]:
    """NetworkDefinitionCreationFlag names to set."""
    if major < 10:
        return ("EXPLICIT_BATCH",)  # required for ONNX and dynamic shapes before 10.0
    if major == 10 and not dla:
        return ("STRONGLY_TYPED",)
    return ()  # 10.x is always explicit batch; 11.x always strongly typed (flag deprecated, ignored)


def precision_builder_flags(major: int, precision: str, *, dla: bool = False) -> tuple[str, ...]:
    """BuilderFlag names a weakly typed build needs; strongly typed builds need none."""
    if strongly_typed(major, dla=dla):
        return ()
    return {"fp32": (), "fp16": ("FP16",), "int8-trt": ("INT8", "FP16")}[precision]


def dla_support(version: str) -> bool | None:
    """Whether TensorRT `version` builds for DLA: True, False, or None when the version does not
    say ("11.4" may be 11.4.0, which has none, or 11.4.1+; "11.x" may be anything).

    8.x and 10.x do; 11.0 to 11.4.0 do not; 11.4.1 brought DLA back (AGX Orin, JetPack 7.2.2+).
    """
    major, minor, patch = _version_parts(version)
    if major < 11:
        return True
    if major > 11 or (minor is not None and minor > 4):
        return True
    if minor is None or (minor == 4 and patch is None):
        return None
    return (minor, patch) >= (4, 1)


# --- names ------------------------------------------------------------------------------------


def _profile_triple(profile: BatchProfile | Mapping[str, int]) -> tuple[int, int, int]:
    if isinstance(profile, BatchProfile):
        return profile.min, profile.opt, profile.max
    return int(profile["min"]), int(profile["opt"]), int(profile["max"])


def _sm(compute_capability: str) -> str:
    return "sm" + ("-auto" if compute_capability == "auto" else compute_capability.replace(".", ""))


def engine_file_name(
    model: str,
    precision: str,
    profile: BatchProfile | Mapping[str, int],
    tensorrt_version: str,
    compute_capability: str,
    *,
    dla_core: int | None = None,
) -> str:
    """A name that changes whenever the engine would: an engine runs only on the TensorRT version
    and GPU it was built for, so a stale engine must never match a new build's name.

    >>> engine_file_name("vt_demo", "int8-trt", {"min": 1, "opt": 8, "max": 32}, "10.3.0", "8.7")
    'vt_demo.int8-trt.b1-8-32.trt10.3.0.sm87.engine'
    """
    low, opt, high = _profile_triple(profile)
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{model}.{precision}.b{low}-{opt}-{high}.trt{tensorrt_version}.{_sm(compute_capability)}{dla}.engine"


def timing_cache_name(tensorrt_version: str, compute_capability: str) -> str:
    # A timing cache is valid for one TensorRT version and GPU; one file per pair avoids mismatches.
    return f"engines/timing.trt{tensorrt_version}.{_sm(compute_capability)}.cache"


def _check_relative(*paths: str) -> None:
    for path in paths:
        problem = path_problem(path)
        if problem is not None:
            raise PlanError(f"bundle path {path!r} {problem}: paths must be relative to the bundle and stay inside it")


# --- plans ------------------------------------------------------------------------------------


_NO_DLA = (
    "TensorRT {version} has no DLA support (11.x: from 11.4.1 on AGX Orin, JetPack 7.2.2+) but DLA core "
    "{core} was asked for: make the bundle without --dla-core, or use TensorRT 11.4.1+"
)


def _shipped(target: TargetConfig) -> str:
    return ", ".join(target.tensorrt_versions) or "none"


def _resolve_dla(
    target_name: str, target: TargetConfig, precision: str, version: str, dla_core: int | None
) -> int | None:
    explicit = dla_core is not None
    if dla_core is None and target.use_dla and precision != "fp32":
        dla_core = 0  # the target's default: FP16/INT8 on DLA core 0, FP32 stays on the GPU
    if dla_core is None:
        return None
    if target.dla_cores == 0:
        raise PlanError(f"target {target_name!r} has no DLA cores")
    if not 0 <= dla_core < target.dla_cores:
        raise PlanError(f"target {target_name!r} has DLA cores 0..{target.dla_cores - 1}, not {dla_core}")
    if precision == "fp32":
        raise PlanError("DLA runs FP16 and INT8 only; build fp16 or int8-trt for DLA")
    if dla_support(version) is False:
        if not explicit:
            return None  # the target prefers DLA; this TensorRT has none, so the GPU builds it
        raise PlanError(_NO_DLA.format(version=version, core=dla_core))
    return dla_core


def _resolve_cc(target_name: str, target: TargetConfig, found: str | None) -> str:
    declared = target.compute_capability or "auto"
    if declared == "auto":
        return found or "auto"
    if found is not None and found != declared:
        raise PlanError(f"target {target_name!r} is compute capability {declared}, this GPU is {found}")
    return declared


@dataclass(frozen=True)
class EngineSpec:
    """What one engine is built from: the model, its precision graph in the bundle, its input."""

    model_name: str
    precision: str
    onnx_relpath: str  # bundle-relative, e.g. models/model.int8-trt.onnx
    input_chw: tuple


def make_build_plan(
    target_name: str,
    target: TargetConfig,
    spec: EngineSpec,
    tensorrt_version: str,
    dla_core: int | None = None,
    *,
    compute_capability: str | None = None,
) -> BuildPlan:
    """The plan for one engine of `target`. ValueError (one line) when the target cannot build it.

    `tensorrt_version` is a version the target ships ("10.3") or the one found on the device
    ("10.3.0"); `compute_capability` is the GPU found, needed for "auto" targets (desktop).
    """
    model_name, precision, onnx_relpath, input_chw = spec.model_name, spec.precision, spec.onnx_relpath, spec.input_chw
    if target.backend != "tensorrt":
        raise PlanError(f"target {target_name!r} uses {target.backend}, not tensorrt")
    if precision not in TENSORRT_PRECISIONS:
        raise PlanError(f"TensorRT precision must be one of {', '.join(TENSORRT_PRECISIONS)}, not {precision!r}")
    if precision not in target.precisions:
        raise PlanError(f"target {target_name!r} builds {', '.join(target.precisions)}, not {precision}")
    major = _version_parts(tensorrt_version)[0]
    if major not in target.tensorrt_majors:
        raise PlanError(f"target {target_name!r} ships TensorRT {_shipped(target)}, not {tensorrt_version}")
    if major not in SUPPORTED_MAJORS:
        raise PlanError(f"TensorRT {tensorrt_version}: plans are defined for majors {SUPPORTED_MAJORS}")
    if len(input_chw) != 3 or min(input_chw) < 1:
        raise PlanError(f"input_chw must be three positive ints, got {input_chw!r}")
    _check_relative(onnx_relpath)
    core = _resolve_dla(target_name, target, precision, tensorrt_version, dla_core)
    cc = _resolve_cc(target_name, target, compute_capability)
    profile = dict(zip(("min", "opt", "max"), _profile_triple(target.profile)))
    dla = core is not None
    flags = precision_builder_flags(major, precision, dla=dla) + (("GPU_FALLBACK",) if dla else ())
    if strongly_typed(major, dla=dla) and onnx_relpath == onnx_file(precision):
        # Strongly typed: the graph's types are the precision, so int8-trt reads its FP16-outside graph.
        onnx_relpath = onnx_file(tensorrt_graph(precision, True))
    return BuildPlan(
        target=target_name,
        model=model_name,
        precision=precision,
        onnx=onnx_relpath,
        engine="engines/" + engine_file_name(model_name, precision, profile, tensorrt_version, cc, dla_core=core),
        input_chw=tuple(int(v) for v in input_chw),  # type: ignore[arg-type]
        profile=profile,
        workspace_mib=target.workspace_mib,
        tensorrt_version=tensorrt_version,
        strongly_typed=strongly_typed(major, dla=dla),
        network_flags=network_flags(major, dla=dla),
        builder_flags=flags,
        dla_core=core,
        gpu_fallback=core is not None,
        timing_cache=timing_cache_name(tensorrt_version, cc),
        compute_capability=cc,
    )


def plan_versions(target: TargetConfig, dla_core: int | None = None) -> list[str]:
    """The TensorRT versions to plan for: those the target ships, plus "11.4.0" beside "11.4"
    when the target only prefers DLA (`use_dla`, no explicit core), so that a device with 11.4.0,
    which has no DLA, finds GPU plans for it (more specific than "11.4", so chosen there)."""
    versions = list(target.tensorrt_versions)
    if dla_core is not None or not target.use_dla:
        return versions
    for version in target.tensorrt_versions:
        if dla_support(version) is None and _version_parts(version)[1] is not None:
            pinned = f"{version}.0"
            if dla_support(pinned) is False and pinned not in versions:
                versions.append(pinned)
    return versions


def version_matches(plan_version: str, found: str) -> bool:
    """Whether a found TensorRT version ("10.3.0.30") is one the plan's version ("10.3", "10.x") means."""
    want = plan_version.split(".")
    have = found.split(".")
    return len(have) >= len(want) and all(w in ("x", h) for w, h in zip(want, have))


def _specificity(plan: BuildPlan) -> int:
    return len(plan.tensorrt_version.replace("x", ""))


def select_plans(plans: list[BuildPlan], found: str) -> list[BuildPlan]:
    """Per precision, the plan for TensorRT `found` with the most specific version ("11.4.0"
    before "11.4" before "11.x"): what the finish and the C++ loader build on that device."""
    chosen: dict[str, BuildPlan] = {}
    for plan in plans:
        if not version_matches(plan.tensorrt_version, found):
            continue
        best = chosen.get(plan.precision)
        if best is None or _specificity(plan) > _specificity(best):
            chosen[plan.precision] = plan
    return list(chosen.values())


def resolve_plan(plan: BuildPlan, trt: TensorRTInfo, gpu: GpuInfo | None) -> BuildPlan:
    """The plan pinned to the TensorRT and GPU found on this device (engine and cache names too).

    ValueError when this device cannot build it: another TensorRT version, another GPU, DLA on a
    TensorRT without DLA.
    """
    if not version_matches(plan.tensorrt_version, trt.version):
        raise PlanError(f"the plan is for TensorRT {plan.tensorrt_version}, this device has {trt.version}")
    if gpu is not None and plan.compute_capability not in ("auto", gpu.compute_capability):
        raise PlanError(
            f"the plan is for compute capability {plan.compute_capability}, this GPU ({gpu.name}) is "
            f"{gpu.compute_capability}"
        )
    return pin_plan(plan, f"{trt.major}.{trt.minor}.{trt.patch}", gpu.compute_capability if gpu else None)


def pin_plan(plan: BuildPlan, release: str, compute_capability: str | None = None) -> BuildPlan:
    """`plan` for TensorRT `release` ("10.3.0") and the GPU's compute capability (None: the plan's)."""
    if plan.dla_core is not None and not dla_support(release):
        raise PlanError(_NO_DLA.format(version=release, core=plan.dla_core))
    cc = compute_capability or plan.compute_capability
    engine = engine_file_name(plan.model, plan.precision, plan.profile, release, cc, dla_core=plan.dla_core)
    return replace(
        plan,
        tensorrt_version=release,
        compute_capability=cc,
        engine="engines/" + engine,
        timing_cache=timing_cache_name(release, cc),
    )


# --- files ------------------------------------------------------------------------------------


def write_build_plans(target: str, plans: list[BuildPlan], bundle_dir: Path) -> Path:
    """Write `build_plan.json` atomically: one plan per precision and TensorRT version.

    Layout: {"format_version": 2, "target": ..., "plans": [plan, ...]} (docs/build_plan.schema.json,
    generated by `plan_schema`). The on-device finish and
    the C++ loader pick the plan whose precision and TensorRT version match what they find.
    """
    path = Path(bundle_dir) / BUILD_PLAN_FILE
    document = {"format_version": PLAN_FORMAT_VERSION, "target": target, "plans": [p.to_dict() for p in plans]}
    write_json_atomic(path, document)
    return path


def read_build_plans(bundle_dir: Path) -> list[BuildPlan]:
    path = Path(bundle_dir) / BUILD_PLAN_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        version = document.get("format_version")
        if version not in READABLE_PLAN_VERSIONS:
            raise PlanError(f"format_version {version!r}: this vt-edge reads {_readable()}")
        if any(item.get("format_version", 1) != version for item in document["plans"]):
            raise PlanError(f"every plan's format_version must be the document's ({version})")
        return [BuildPlan.from_dict(item) for item in document["plans"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"{path}: not a usable build plan: {exc}") from None


def _readable() -> str:
    return " and ".join(str(v) for v in READABLE_PLAN_VERSIONS)


def plan_schema() -> dict[str, Any]:
    """The JSON schema of build_plan.json, generated from `BuildPlan` (host only: pydantic reads
    the annotations, which the devices' Python 3.8 cannot evaluate). Every key of a plan is
    required, as the C++ loader requires them of a format-2 plan."""
    from typing import List, Literal

    from pydantic import ConfigDict, TypeAdapter, create_model

    document = create_model(
        "BuildPlanDocument",
        __config__=ConfigDict(extra="forbid"),
        format_version=(Literal[2], ...),
        target=(str, ...),
        plans=(List[BuildPlan], ...),
    )
    schema = TypeAdapter(document).json_schema()
    plan = schema["$defs"]["BuildPlan"]
    plan["required"] = sorted(plan["properties"])
    plan["properties"]["format_version"] = {"enum": [PLAN_FORMAT_VERSION], "title": "Format Version", "type": "integer"}
    schema["title"] = "vt-edge build_plan.json"
    schema["description"] = (
        "How to build each TensorRT engine of a bundle on its device (pipeline/backends/tensorrt_plan.py)."
    )
    return schema


def plan_schema_text() -> str:
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


# --- trtexec and printing ---------------------------------------------------------------------


def _bundle_path(bundle_dir: str, relpath: str) -> str:
    return str(PurePosixPath(bundle_dir) / relpath)


def _memory_flag(plan: BuildPlan) -> str:
    if _at_least(plan.tensorrt_version, 8, 4):
        # MiB as a plain number: right on 8.4-8.6, 10.0 (which would scale a suffix twice) and 10.1+.
        return f"--memPoolSize=workspace:{plan.workspace_mib}"
    return f"--workspace={plan.workspace_mib}"


def _build_only_flag(plan: BuildPlan) -> str:
    return "--skipInference" if _at_least(plan.tensorrt_version, 8, 6) else "--buildOnly"


def _precision_flags(plan: BuildPlan) -> list[str]:
    if not plan.strongly_typed:
        return [{"INT8": "--int8", "FP16": "--fp16"}[f] for f in plan.builder_flags if f in ("INT8", "FP16")]
    if plan.major == 10:
        return ["--stronglyTyped"]
    return []  # 11.x: strongly typed always; --stronglyTyped is a deprecated no-op


def trtexec_command(plan: BuildPlan, bundle_dir: str = ".") -> list[str]:
    """The trtexec command line that builds the same engine as `build_engine` (build only)."""
    channels, height, width = plan.input_chw

    def shape(batch: int) -> str:
        return f"{plan.input_name}:{batch}x{channels}x{height}x{width}"

    command = [
        "trtexec",
        f"--onnx={_bundle_path(bundle_dir, plan.onnx)}",
        f"--saveEngine={_bundle_path(bundle_dir, plan.engine)}",
        f"--minShapes={shape(plan.profile['min'])}",
        f"--optShapes={shape(plan.profile['opt'])}",
        f"--maxShapes={shape(plan.profile['max'])}",
        _memory_flag(plan),
        f"--timingCacheFile={_bundle_path(bundle_dir, plan.timing_cache)}",
        *_precision_flags(plan),
    ]
    if plan.dla_core is not None:
        command.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            command.append("--allowGPUFallback")
    command.append(_build_only_flag(plan))
    return command


def is_pinned(plan: BuildPlan) -> bool:
    """The plan names one TensorRT release and one GPU, as engine files are named on the device."""
    return _version_parts(plan.tensorrt_version)[2] is not None and plan.compute_capability != "auto"


def trtexec_line(plan: BuildPlan, bundle_dir: str = ".") -> str:
    """The shell line for a pinned plan (see `is_pinned`): it makes the folders trtexec writes
    into (a fresh bundle has no engines/), then builds the engine under the name that the finish
    (`resolve_plan`) and the C++ loader look for, so they use it."""
    folders = sorted(
        {str(PurePosixPath(_bundle_path(bundle_dir, rel)).parent) for rel in (plan.engine, plan.timing_cache)}
    )
    return f"mkdir -p {' '.join(shlex.quote(f) for f in folders)} && {shlex.join(trtexec_command(plan, bundle_dir))}"


def releases_of(version: str) -> tuple[str, ...]:
    """The TensorRT releases (major.minor.patch) a plan version stands for: itself when it names
    the patch, the releases JetPack ships for "8.5", "10.3", ..., none for a wildcard ("10.x")."""
    major, minor, patch = _version_parts(version)
    if patch is not None:
        return (f"{major}.{minor}.{patch}",)
    return JETPACK_RELEASES.get(version, ())


def format_plan(plan: BuildPlan, bundle_dir: str = ".") -> str:
    """The plan as a few human-readable lines (what `--dry-run` prints)."""
    profile = plan.profile
    device = "GPU"
    if plan.dla_core is not None:
        device = f"DLA core {plan.dla_core}" + (" (GPU fallback)" if plan.gpu_fallback else "")
    typing = "strongly typed (precision from the ONNX)" if plan.strongly_typed else "weakly typed"
    flags = ", ".join(plan.builder_flags) or "none"
    lines = [
        f"TensorRT build plan: {plan.model} {plan.precision} for {plan.target}",
        f"  TensorRT      {plan.tensorrt_version}, {typing}",
        f"  network flags {', '.join(plan.network_flags) or 'none'}",
        f"  builder flags {flags}",
        f"  device        {device}, compute capability {plan.compute_capability}",
        f"  input         {plan.input_name} Nx{'x'.join(map(str, plan.input_chw))}, "
        f"batch min {profile['min']} / opt {profile['opt']} / max {profile['max']}",
        f"  workspace     {plan.workspace_mib} MiB",
        f"  onnx          {plan.onnx}",
        f"  engine        {plan.engine}",
        f"  timing cache  {plan.timing_cache}",
    ]
    if is_pinned(plan):
        lines.append(f"  trtexec       {trtexec_line(plan, bundle_dir)}")
    else:  # the engine's name needs the release and GPU found there
        lines.append(
            "  trtexec       run --dry-run where TensorRT and the GPU are: it prints the line for the release found"
        )
    return "\n".join(lines)
