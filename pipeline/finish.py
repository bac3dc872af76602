"""The on-device entry point: finish a bundle where its engines can be built.

On the device, `python -m pipeline build --target T --bundle DIR` verifies the bundle, builds
the engines with the TensorRT found there, validates them on the GPU against the host's FP32
reference logits on the bundled evaluation crops, and updates the report and the manifest.
It needs neither torch nor onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from pipeline.artifacts import read_json, sha256_file
from pipeline.config import Config, TargetConfig
from pipeline.context import BuildOptions, BuildOutcome
from pipeline.errors import BundleError, StageError
from pipeline.names import FP32
from pipeline.progress import quiet

Log = Callable[[str], Any]


def _checked_bundle(config: Config, options: BuildOptions, bundle: Path) -> tuple[str, TargetConfig, Dict[str, Any]]:
    """(target name, target, manifest) of a bundle this device may finish."""
    from pipeline.stages.bundle import verify_bundle

    target_name, target = config.target(options.target)
    # Unlisted files are allowed here: a finish killed after writing an engine left one.
    manifest = verify_bundle(bundle, allow_unlisted=True)
    if manifest["target"]["name"] != target_name:
        raise BundleError(f"{bundle} was made for target {manifest['target']['name']}, not {target_name}")
    if target.backend != "tensorrt":
        raise BundleError(f"{target_name} is not a TensorRT target: nothing to finish")
    return target_name, target, manifest


def _device(bundle: Path, target_name: str, target: TargetConfig) -> tuple[Any, Any]:
    """(TensorRT, GPU) of this device, or a one-line reason why it cannot finish the bundle."""
    from pipeline.backends.tensorrt import find_tensorrt, gpu_device, tensorrt_status
    from pipeline.stages.engine import host_mismatch

    trt = find_tensorrt()
    if trt is None:
        raise StageError(
            f"cannot finish {bundle}: {tensorrt_status()} (on Jetson: JetPack's python3-libnvinfer; elsewhere: "
            "pip install '.[tensorrt]')"
        )
    reason = host_mismatch(target_name, target)
    if reason:
        raise StageError(f"cannot finish {bundle} here: {reason}")
    return trt, gpu_device()


def _build_engines(
    bundle: Path, manifest: Dict[str, Any], plans: List[Any], trt: Any, gpu: Any, log: Log
) -> List[Dict[str, Any]]:
    from pipeline.backends.tensorrt import build_engine

    engines = []
    for plan in plans:
        path = bundle / plan.engine
        if plan.engine in manifest["files"]:  # verified above: same TensorRT, GPU and profile
            log(f"  {plan.precision}: {plan.engine} is in the bundle: reused")
        elif path.is_file():  # built here under the name resolve_plan gives, e.g. by the printed trtexec line
            log(
                f"  {plan.precision}: {plan.engine} was built on this device (trtexec?): validated and "
                "recorded, not rebuilt"
            )
        else:
            path = build_engine(plan, bundle, trt, log=lambda m: log(f"  {m}"), gpu=gpu)
        engines.append(
            {
                "path": plan.engine,
                "precision": plan.precision,
                "tensorrt_version": trt.version,
                "compute_capability": plan.compute_capability,
                "device_name": gpu.name if gpu else "",
                "profile": plan.profile,
                "dla_core": plan.dla_core,
                "sha256": sha256_file(path),
            }
        )
    return engines


def finish_bundle(config: Config, options: BuildOptions, bundle: Path, log: Log = quiet) -> BuildOutcome:
    """Build and validate the bundle's TensorRT engines on this device; update report and manifest.

    One process at a time writes the bundle; the finished bundle passes `verify`'s check.
    """
    from pipeline.stages.bundle import bundle_lock, verify_bundle

    with bundle_lock(bundle, log, options.lock_timeout_s):
        _remove_partial_writes(bundle)
        outcome = _finish(config, options, bundle, log)
        verify_bundle(bundle)
    return outcome


def _remove_partial_writes(bundle: Path) -> None:
    """Temporary files of a finish that was killed mid-write (see artifacts.atomic_path)."""
    for leftover in bundle.rglob(".*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink()


def _finish(config: Config, options: BuildOptions, bundle: Path, log: Log) -> BuildOutcome:
    from pipeline.backends.tensorrt import resolve_plan
    from pipeline.stages.bundle import update_manifest
    from pipeline.stages.report import judge, render_report

    target_name, target, manifest = _checked_bundle(config, options, bundle)
    trt, gpu = _device(bundle, target_name, target)
    log(
        f"finishing {bundle} with TensorRT {trt.version} on {gpu.name if gpu else '?'} (sm "
        f"{gpu.compute_capability if gpu else '?'})"
    )
    plans = [resolve_plan(plan, trt, gpu) for plan in plans_for_device(bundle, trt)]
    engines = _build_engines(bundle, manifest, plans, trt, gpu, log)
    report = validate_on_device(config, bundle, manifest, engines, trt, options.progress)
    verdict = judge(report, options.gate)
    written = render_report(report, bundle / "report", bundle / "reference/eval_crops.npy", verdict)
    versions = {**manifest.get("versions", {}), "tensorrt": trt.version}
    changed = [e["path"] for e in engines] + [p.relative_to(bundle).as_posix() for p in written]
    changed += sorted({p.timing_cache for p in plans if (bundle / p.timing_cache).is_file()})
    update_manifest(bundle, changed, {"engines": engines, "pending": [], "versions": versions})
    return BuildOutcome(bundle, report, list(verdict.failures), [], [], manifest["rebuild_command"])


def plans_for_device(bundle: Path, trt: Any) -> List[Any]:
    """The bundle's plans for the TensorRT found here: per precision, the most specific version."""
    from pipeline.backends.tensorrt import read_build_plans, select_plans

    plans = read_build_plans(bundle)
    chosen = select_plans(plans, trt.version)
    if not chosen:
        shipped = ", ".join(sorted({p.tensorrt_version for p in plans}))
        raise StageError(
            f"{bundle}/build_plan.json has no plan for TensorRT {trt.version} (plans for {shipped}); this "
            "device's TensorRT is not one the target ships"
        )
    return chosen


def _bundled_evaluation(bundle: Path, manifest: Dict[str, Any]) -> Any:
    from pipeline.data import PreprocessSpec, normalize
    from pipeline.stages.validate import EvaluationSet

    spec = PreprocessSpec.from_dict(manifest["preprocessing"])
    images = np.ascontiguousarray(normalize(np.load(bundle / "reference/eval_crops.npy"), spec))
    return EvaluationSet(
        images, np.load(bundle / "reference/eval_labels.npy"), np.load(bundle / "reference/fp32_logits.npy")
    )


def validate_on_device(
    config: Config, bundle: Path, manifest: Dict[str, Any], engines: List[Dict[str, Any]], trt: Any, progress: bool
) -> Dict[str, Any]:
    """Run each engine on the bundled evaluation crops against the host's FP32 logits."""
    from pipeline.backends.tensorrt import TensorRTRunner
    from pipeline.metrics import image_predictions
    from pipeline.stages.report import per_image_record
    from pipeline.stages.validate import Timing, results_to_json, validate_all

    vc = config.validate_
    # Batch sizes beyond the engines' optimization profile cannot run; measure the ones that can.
    largest = min(e["profile"]["max"] for e in engines)
    timing = Timing(tuple(b for b in vc.batch_sizes if b <= largest) or (1,), vc.warmup, vc.runs, infer_batch=largest)
    runners = {
        e["precision"]: (lambda e=e: TensorRTRunner(bundle / e["path"], trt, name=e["precision"])) for e in engines
    }
    evaluation = _bundled_evaluation(bundle, manifest)
    # The engines are timed interleaved, one call each per round: the latency choice compares them.
    measured = results_to_json(validate_all({"tensorrt": runners}, evaluation, timing, progress))
    report = read_json(bundle / "report" / "report.json")
    # The host's FP32 logits are the reference of every engine here, as on the host.
    report["per_image"] = per_image_record(
        evaluation.labels, image_predictions(evaluation.reference, evaluation.reference)
    )
    report.setdefault("class_names", list(manifest["labels"]))
    report["cpu_proxy_results"] = report["results"]
    if FP32 not in runners:  # the host's FP32 row stays the accuracy reference of the gate
        measured.insert(0, next(r for r in report["results"] if r["precision"] == FP32))
    report["results"] = measured
    report["cpu_proxy"] = False
    report["notes"] = [n for n in report.get("notes", []) if "CPU proxy" not in n]
    report["notes"].append(
        f"- engines built and measured on the device with TensorRT {trt.version}; agreement is against the "
        "host's FP32 ONNX Runtime logits."
    )
    return report
