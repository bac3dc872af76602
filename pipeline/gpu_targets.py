"""GPU (TensorRT) targets: build plans in the bundle, the on-device finish, and `--dry-run`.

On a host that is not the target (no TensorRT, or another GPU) the build writes a complete bundle
with the precision graphs, `build_plan.json` (one plan per precision and TensorRT version the
target ships) and the command that finishes it. On the device, the same command with
`--bundle` verifies the bundle, builds the engines with the TensorRT found there, validates them
on the GPU against the host's FP32 reference and updates the report and manifest. The finish
needs neither torch nor onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_json, sha256_file
from pipeline.config import Config, TargetConfig



@dataclass
class PlannedEngines:
    """What the engine stage of a TensorRT target leaves: pending work and files for the bundle."""

    pending: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    reason: str = ""
    cached: bool = False


def make_plans(config: Config, target_name: str, target: TargetConfig, crop: int, dla_core: int | None = None) -> list[Any]:
    from pipeline.backends.tensorrt import make_build_plan

    plans = []
    for version in target.tensorrt_versions:  # "10.x" stays a wildcard the device resolves
        for precision in target.precisions:
            # DLA has no FP32 path: an explicit --dla-core applies to fp16/int8-trt only.
            core = dla_core if precision != "fp32" else None
            plans.append(
                make_build_plan(target_name, target, config.model.name, precision, f"models/model.{precision}.onnx", (3, crop, crop), version, core)
            )
    return plans


def host_mismatch(target_name: str, target: TargetConfig) -> str | None:
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
            f"{target.compute_capability}: an engine built here would not run there, so it is not labelled as {target_name}'s"
        )
    return None


def plan_engines(config: Config, target_name: str, target: TargetConfig, models: dict[str, Path], spec: Any, dla_core: int | None = None) -> PlannedEngines:
    """The build plans for the bundle; engines are left pending (the finish step builds them)."""
    from pipeline.backends.tensorrt import BUILD_PLAN_FILE, write_build_plans

    plans = make_plans(config, target_name, target, spec.crop, dla_core)
    path = write_build_plans(target_name, plans, config.path(config.cache_dir) / "plans" / target_name)
    pending = [f"engine:{p}" for p in target.precisions]
    existing = config.path(config.engines_dir) / f"{config.model.name}-{target_name}" / BUILD_PLAN_FILE
    unchanged = existing.is_file() and existing.read_bytes() == path.read_bytes()
    return PlannedEngines(pending, {BUILD_PLAN_FILE: path}, host_mismatch(target_name, target) or "", cached=unchanged)


def dry_run(config: Config, options: Any) -> None:
    """Print every plan of the target and its trtexec equivalent; needs no TensorRT."""
    from rich.console import Console

    from pipeline.backends.tensorrt import format_plan, tensorrt_status

    console = Console(highlight=False, soft_wrap=True)  # trtexec lines stay copy-pasteable
    target_name, target = config.target(options.target)
    if target.backend != "tensorrt":
        console.print(f"{target_name} uses {target.backend}: no TensorRT plan (stages: export, simplify, precision {', '.join(target.precisions)}, engine, validate, report)")
        return
    console.print(f"build plan for {target_name} ({target.description}); this host: {tensorrt_status()}", markup=False)
    bundle = f"{config.engines_dir.as_posix()}/{config.model.name}-{target_name}"
    for plan in make_plans(config, target_name, target, config.preprocessing.crop, options.dla_core):
        console.print(format_plan(plan, bundle_dir=bundle), markup=False)
        console.print("")


# ---------------------------------------------------------------------------------------------
# On the device


def finish_bundle(config: Config, options: Any, bundle: Path) -> Any:
    """Build and validate the bundle's TensorRT engines on this device; update report and manifest."""
    from pipeline.backends.tensorrt import build_engine, find_tensorrt, gpu_device, resolve_plan, tensorrt_status
    from pipeline.build import BuildOutcome, console
    from pipeline.bundle import BundleError, update_manifest, verify_bundle

    target_name, target = config.target(options.target)
    try:
        # Unlisted files are allowed here: a finish killed after writing an engine left one.
        manifest = verify_bundle(bundle, allow_unlisted=True)
    except BundleError as exc:
        raise ValueError(str(exc)) from None
    if manifest["target"]["name"] != target_name:
        raise ValueError(f"{bundle} was made for target {manifest['target']['name']}, not {target_name}")
    if target.backend != "tensorrt":
        raise ValueError(f"{target_name} is not a TensorRT target: nothing to finish")
    trt = find_tensorrt()
    if trt is None:
        raise RuntimeError(f"cannot finish {bundle}: {tensorrt_status()} (on Jetson: JetPack's python3-libnvinfer; elsewhere: pip install '.[tensorrt]')")
    reason = host_mismatch(target_name, target)
    if reason:
        raise RuntimeError(f"cannot finish {bundle} here: {reason}")
    gpu = gpu_device()
    console.print(f"[bold]finishing {bundle}[/bold] with TensorRT {trt.version} on {gpu.name if gpu else '?'} (sm {gpu.compute_capability if gpu else '?'})")
    engines = []
    plans = [resolve_plan(plan, trt, gpu) for plan in plans_for_device(bundle, trt)]
    for plan in plans:
        path = bundle / plan.engine
        if plan.engine in manifest["files"]:  # verified above: same TensorRT, GPU and profile
            console.print(f"  {plan.precision}: {plan.engine} is in the bundle: reused")
        else:
            path = build_engine(plan, bundle, trt, log=lambda m: console.print(f"  {m}"), gpu=gpu)
        engines.append({
            "path": plan.engine, "precision": plan.precision, "tensorrt_version": trt.version,
            "compute_capability": plan.compute_capability, "device_name": gpu.name if gpu else "",
            "profile": plan.profile, "dla_core": plan.dla_core, "sha256": sha256_file(path),
        })
    report = validate_on_device(config, bundle, manifest, engines, trt, options.progress)
    from pipeline.stages.report import check_gate, render_report

    failures = [f.message for f in check_gate(report)]
    report["gate"] = {"enabled": options.gate, "failures": failures}
    written = render_report(report, bundle / "report")
    versions = {**manifest.get("versions", {}), "tensorrt": trt.version}
    changed = [e["path"] for e in engines] + [p.relative_to(bundle).as_posix() for p in written]
    changed += sorted({p.timing_cache for p in plans if (bundle / p.timing_cache).is_file()})
    update_manifest(bundle, changed, {"engines": engines, "pending": [], "versions": versions})
    return BuildOutcome(bundle, report, failures, [], [], manifest["rebuild_command"])


def plans_for_device(bundle: Path, trt: Any) -> list[Any]:
    """The bundle's plans for the TensorRT found here: per precision, the most specific version."""
    from pipeline.backends.tensorrt import read_build_plans
    from pipeline.backends.tensorrt_plan import version_matches

    plans = read_build_plans(bundle)
    chosen: dict[str, Any] = {}
    for plan in plans:
        if not version_matches(plan.tensorrt_version, trt.version):
            continue
        best = chosen.get(plan.precision)
        if best is None or len(plan.tensorrt_version.replace("x", "")) > len(best.tensorrt_version.replace("x", "")):
            chosen[plan.precision] = plan
    if not chosen:
        shipped = ", ".join(sorted({p.tensorrt_version for p in plans}))
        raise RuntimeError(f"{bundle}/build_plan.json has no plan for TensorRT {trt.version} (plans for {shipped}); this device's TensorRT is not one the target ships")
    return list(chosen.values())


def validate_on_device(config: Config, bundle: Path, manifest: dict[str, Any], engines: list[dict[str, Any]], trt: Any, progress: bool) -> dict[str, Any]:
    """Run each engine on the bundled evaluation crops against the host's FP32 logits."""
    from pipeline.backends.tensorrt import TensorRTRunner
    from pipeline.data import PreprocessSpec, normalize
    from pipeline.stages.validate import results_to_json, validate_all

    pp = manifest["preprocessing"]
    images = np.ascontiguousarray(normalize(np.load(bundle / "reference/eval_crops.npy"), PreprocessSpec.from_dict(pp)))
    labels = np.load(bundle / "reference/eval_labels.npy")
    reference = np.load(bundle / "reference/fp32_logits.npy")
    vc = config.validate_
    # Batch sizes beyond the engines' optimization profile cannot run; measure the ones that can.
    largest = min(e["profile"]["max"] for e in engines)
    batch_sizes = tuple(b for b in vc.batch_sizes if b <= largest) or (1,)
    runners = {e["precision"]: (lambda e=e: TensorRTRunner(bundle / e["path"], trt, name=e["precision"])) for e in engines}
    measured = results_to_json(validate_all(runners, images, labels, reference, batch_sizes, vc.warmup, vc.runs, progress))
    report = read_json(bundle / "report" / "report.json")
    report["cpu_proxy_results"] = report["results"]
    if "fp32" not in runners:  # the host's FP32 row stays the accuracy reference of the gate
        measured.insert(0, next(r for r in report["results"] if r["precision"] == "fp32"))
    report["results"] = measured
    report["cpu_proxy"] = False
    report["notes"] = [n for n in report.get("notes", []) if "CPU proxy" not in n]
    report["notes"].append(f"- engines built and measured on the device with TensorRT {trt.version}; agreement is against the host's FP32 ONNX Runtime logits.")
    return report
