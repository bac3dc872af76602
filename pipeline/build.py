"""`build`: run the stages in order for one target and write the engine bundle.

config -> data subsets -> export -> simplify -> precision -> engine -> validate -> report -> bundle.
Every stage is cached by content; this module only wires them together and prints progress.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import StageCache, StageResult, read_json, sha256_file, sha256_json
from pipeline.bundle import BundleContents, host_info, tool_versions, utc_now, write_bundle
from pipeline.config import Config, TargetConfig
from pipeline.stages.engine import session_settings

console = Console(stderr=True, highlight=False)

HOST_TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "numpy", "pillow", "vt-edge")


@dataclass
class BuildOptions:
    target: str = "cpu"
    config_path: Path = Path("pipeline.toml")
    gate: bool = True
    progress: bool = True
    require_engine: bool = False
    dla_core: int | None = None


@dataclass
class BuildOutcome:
    bundle: Path
    report: dict[str, Any]
    gate_failures: list[str]
    pending: list[str] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    finish_command: str = ""
    left_reason: str = ""  # why the engines were left for the device


class StageLog:
    """One line per stage with its time, and the record of what was cached."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def run(self, name: str, work: Callable[[], Any], summary: Callable[[Any], str] | None = None) -> Any:
        started = time.perf_counter()
        result = work()
        wall = time.perf_counter() - started
        cached = bool(getattr(result, "cached", False))
        detail = summary(result) if summary else ""
        self.entries.append({"stage": name, "wall_s": round(wall, 3), "cached": cached})
        state = "[dim]cached[/dim]" if cached else f"{wall:6.1f} s"
        console.print(f"  {name:<10} {state:>8}  {detail}")
        return result

    @property
    def all_cached(self) -> bool:
        return all(e["cached"] for e in self.entries)


def bundle_name(config: Config, target_name: str) -> str:
    return f"{config.model.name}-{target_name}"


@dataclass
class Graphs:
    """What the host-side stages made: the data subsets, the model and every precision graph."""

    data: Any
    model: Any
    exported: StageResult
    simplified: StageResult
    precision: StageResult
    models: dict[str, Path]  # precision -> ONNX graph
    keys: dict[str, str]  # precision -> content hash of its graph


@dataclass
class EngineStep:
    """The engine stage's outcome: ONNX Runtime graphs here, or plans left for the device."""

    stage: StageResult | None = None
    pending: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    left_reason: str = ""


def build(config: Config, options: BuildOptions) -> BuildOutcome:
    target_name, target = config.target(options.target)
    cache = StageCache(config.path(config.cache_dir))
    log = StageLog()
    console.print(f"[bold]vt-edge build[/bold] target [cyan]{target_name}[/cyan] ({target.backend}), config {options.config_path}")
    graphs = make_graphs(config, target, options, cache, log)
    engine = engine_step(config, target_name, target, options, cache, log, graphs)
    cpu_proxy = target.backend != "onnxruntime"
    validation = log.run("validate", lambda: run_validation(config, cache, graphs, options.progress, cpu_proxy),
                         lambda r: f"{len(json.loads(r.output('results').read_text()))} runners, {len(graphs.data.evaluation.labels)} images")
    build_key = sha256_json({
        "target": target_name, "settings": target.model_dump(), "gate": options.gate, "validation": validation.record.key,
        "stages": [graphs.exported.record.key, graphs.simplified.record.key, graphs.precision.record.key, graphs.data.content_hash],
        "engine": engine.stage.record.key if engine.stage else {k: sha256_file(v) for k, v in engine.files.items()},
    })
    bundle = config.path(config.engines_dir) / bundle_name(config, target_name)
    if _bundle_up_to_date(bundle, build_key):
        outcome = _unchanged_bundle(bundle, engine, log)
    else:
        outcome = _write_bundle(config, target_name, target, options, graphs, engine, validation, build_key, bundle, log, cpu_proxy)
    print_summary(outcome.report, log)
    return _finish_or_leave(config, options, bundle, outcome, log)


def make_graphs(config: Config, target: TargetConfig, options: BuildOptions, cache: StageCache, log: StageLog) -> Graphs:
    """data -> export -> simplify -> precision, each cached by content."""
    from pipeline.stages.dataset import prepare_data_cached
    from pipeline.stages.export import load_model, run_export
    from pipeline.stages.precision import run_precision
    from pipeline.stages.simplify import run_simplify

    model = load_model(config)  # a bad checkpoint fails before any data work
    data = log.run("data", lambda: prepare_data_cached(config, cache, options.progress),
                   lambda d: f"{len(d.calib.labels)} calibration / {len(d.evaluation.labels)} evaluation images, {len(d.skipped)} skipped")
    opset = target.opset or config.export.opset
    check = data.evaluation.crops[: config.export.check_images]
    exported = log.run("export", lambda: run_export(config, cache, model, check, data.content_hash, opset),
                       lambda r: f"opset {opset}, max |torch - onnx| {r.record.details['max_abs_diff_vs_torch']:.2e}")
    simplified = log.run("simplify", lambda: run_simplify(config, cache, exported, check, data.content_hash),
                         lambda r: f"nodes {r.record.details['nodes_before']} -> {r.record.details['nodes_after']}, max |diff| {r.record.details['max_abs_diff_vs_export']:.2e}")
    precision = log.run("precision", lambda: run_precision(config, cache, simplified, exported, data.calib.crops, data.calib.labels,
                                                          data.content_hash, target.precisions, options.progress, console.print),
                        _precision_summary)
    models = {"fp32": simplified.output("onnx"), **{p: precision.output(p) for p in target.precisions if p != "fp32"}}
    # Downstream keys are the graphs' content, so a re-made graph that differs re-runs what follows.
    keys = {p: sha256_file(path) for p, path in models.items()}
    return Graphs(data, model, exported, simplified, precision, models, keys)


def engine_step(config: Config, target_name: str, target: TargetConfig, options: BuildOptions, cache: StageCache,
                log: StageLog, graphs: Graphs) -> EngineStep:
    if target.backend == "onnxruntime":
        from pipeline.stages.engine import run_cpu_engines

        stage = log.run("engine", lambda: run_cpu_engines(config, cache, graphs.models, graphs.keys),
                        lambda r: f"ONNX Runtime optimized graphs for {', '.join(graphs.models)}")
        return EngineStep(stage=stage)
    from pipeline.gpu_targets import plan_engines

    planned = log.run("engine", lambda: plan_engines(config, target_name, target, graphs.models, graphs.data.spec, options.dla_core),
                      lambda p: _pending_summary(p.pending))
    return EngineStep(pending=planned.pending, files=planned.files, left_reason=planned.reason)


def _unchanged_bundle(bundle: Path, engine: EngineStep, log: StageLog) -> BuildOutcome:
    log.entries.append({"stage": "report", "wall_s": 0.0, "cached": True})
    console.print(f"  {'report':<10} {'[dim]cached[/dim]':>8}  {bundle} is up to date")
    report = read_json(bundle / "report" / "report.json")
    manifest = read_json(bundle / "manifest.json")
    return BuildOutcome(bundle, report, report["gate"]["failures"], list(manifest["pending"]), log.entries,
                        manifest["rebuild_command"], engine.left_reason)


def _write_bundle(config: Config, target_name: str, target: TargetConfig, options: BuildOptions, graphs: Graphs,
                  engine: EngineStep, validation: StageResult, build_key: str, bundle: Path, log: StageLog,
                  cpu_proxy: bool) -> BuildOutcome:
    from pipeline.stages.report import check_gate

    report = assemble_report(config, target_name, target, graphs, validation, log, cpu_proxy)
    failures = [f.message for f in check_gate(report)]
    report["gate"] = {"enabled": options.gate, "failures": failures}
    contents = bundle_contents(config, target_name, target, graphs, engine, validation, report, options, build_key)
    log.run("report", lambda: _write_report_and_bundle(bundle, contents, report), lambda path: f"{path}")
    return BuildOutcome(bundle, report, failures, engine.pending, log.entries, contents.manifest["rebuild_command"], engine.left_reason)


def _finish_or_leave(config: Config, options: BuildOptions, bundle: Path, outcome: BuildOutcome, log: StageLog) -> BuildOutcome:
    """Build the pending engines right away when this host is the target; else leave them."""
    if not outcome.pending:
        return outcome
    if not outcome.left_reason:
        from pipeline.gpu_targets import finish_bundle

        finished = finish_bundle(config, options, bundle)
        print_summary(finished.report, log)
        return finished
    if options.require_engine:
        raise RuntimeError(f"--require-engine: the {options.target} engine cannot be built on this host: {outcome.left_reason}")
    return outcome


def _bundle_up_to_date(bundle: Path, build_key: str) -> bool:
    """The bundle was made from exactly these stage outputs and no file of it changed since."""
    from pipeline.bundle import BundleError, verify_bundle

    try:
        manifest = verify_bundle(bundle)
    except BundleError:
        return False
    return manifest.get("build_key") == build_key


def _precision_summary(result: StageResult) -> str:
    details = result.record.details
    parts = [f"calibration {details.get('calibration')}"]
    for flavour in ("int8", "int8-trt"):
        if flavour in details:
            kept = details[flavour]["fp32_layers"]
            parts.append(f"{flavour}: {len(kept)} layer(s) kept FP32")
    return ", ".join(parts)


def _pending_summary(pending: list[str]) -> str:
    return "engines left for the device: " + ", ".join(pending) if pending else "engines built"


def run_validation(config: Config, cache: StageCache, graphs: Graphs, progress: bool, cpu_proxy: bool) -> StageResult:
    """Measure FP32 (torch and ONNX Runtime) and each precision graph on the evaluation subset."""
    import onnxruntime

    from pipeline.backends.onnxruntime import OrtRunner, TorchRunner
    from pipeline.stages.checks import normalised_batch
    from pipeline.stages.validate import infer_all, results_to_json, validate_all

    vc = config.validate_
    data, model, models = graphs.data, graphs.model, graphs.models
    settings = {**vc.model_dump(), "cpu_proxy": cpu_proxy, "host": host_info()["cpu"]}
    inputs = {**graphs.keys, "evaluation_images": data.content_hash, "checkpoint": model.checkpoint_sha256}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        images = normalised_batch(data.evaluation.crops, config)
        labels = data.evaluation.labels
        session = session_settings(config)
        fp32 = OrtRunner("fp32", models["fp32"], session)  # the reference, then measured like the rest
        reference = infer_all(fp32, images)
        runners: dict[str, Callable[[], Any]] = {}
        if vc.torch_baseline:
            runners["fp32-torch"] = lambda: TorchRunner(model.module, vc.threads)
        for precision, path in models.items():
            runners[precision] = (lambda: fp32) if precision == "fp32" else (lambda p=precision, f=path: OrtRunner(p, f, session))
        results = validate_all(runners, images, labels, reference, vc.batch_sizes, vc.warmup, vc.runs, progress)
        (workdir / "results.json").write_text(json.dumps(results_to_json(results)))
        np.save(workdir / "fp32_logits.npy", reference)
        return {"results": "results.json", "reference": "fp32_logits.npy"}, {"images": int(len(labels))}

    return cache.run("validate", inputs, settings, {"onnxruntime": onnxruntime.__version__}, body, "1")


def assemble_report(config: Config, target_name: str, target: TargetConfig, graphs: Graphs, validation: StageResult,
                    log: StageLog, cpu_proxy: bool) -> dict[str, Any]:
    data, model = graphs.data, graphs.model
    results = json.loads(validation.output("results").read_text())
    notes = _fp16_note(results)
    if cpu_proxy:
        notes.append(f"- CPU proxy: the {target_name} precision graphs were run with ONNX Runtime on this host's CPU; accuracy carries over to the device, latency does not. The device finish measures the engines.")
    return {
        "bundle": bundle_name(config, target_name),
        "target": target_name,
        "backend": target.backend,
        "cpu_proxy": cpu_proxy,
        "created_utc": utc_now(),
        "model": {**model.spec, "checkpoint_sha256": model.checkpoint_sha256},
        "evaluation_images": int(len(data.evaluation.labels)),
        "calibration_images": int(len(data.calib.labels)),
        "skipped_images": [[str(p), why] for p, why in data.skipped],
        "calibration_method": config.precision.calibration,
        "budgets": {p: b.model_dump() for p, b in config.budgets.items() if p in target.precisions},
        "results": results,
        "precision_details": {k: v for k, v in graphs.precision.record.details.items() if k.startswith("int8")},
        "export": graphs.exported.record.details,
        "simplify": {k: v for k, v in graphs.simplified.record.details.items() if not k.startswith("ops_")},
        "stages": log.entries,
        "host": host_info(),
        "notes": notes,
        "latency_budget_ms": target.latency_budget_ms,
    }


def _fp16_note(results: list[dict[str, Any]]) -> list[str]:
    """What the CPU measurement of the FP16 graph means, with the numbers of this run."""
    p50 = {r["precision"]: next((lat["p50_ms"] for lat in r["latency"] if lat["batch"] == 1), None) for r in results}
    if p50.get("fp16") is None or p50.get("fp32") is None:
        return []
    return [
        f"- fp16 on this CPU: p50 {p50['fp16']:.3f} ms vs fp32 {p50['fp32']:.3f} ms at batch 1 "
        f"({p50['fp32'] / p50['fp16']:.2f}x). ONNX Runtime's CPU provider has few FP16 kernels and inserts casts to "
        "FP32 around the rest, so FP16 brings no compute speed-up on a CPU; it is validated here for accuracy, "
        "and its speed is measured on the GPU."
    ]


def bundle_contents(config: Config, target_name: str, target: TargetConfig, graphs: Graphs, engine: EngineStep,
                    validation: StageResult, report: dict[str, Any], options: BuildOptions, build_key: str) -> BundleContents:
    data, model, models, engine_stage, pending = graphs.data, graphs.model, graphs.models, engine.stage, engine.pending
    files: dict[str, Path] = {f"models/model.{p}.onnx": path for p, path in models.items()}
    precisions: dict[str, dict[str, Any]] = {p: {"onnx": f"models/model.{p}.onnx", "optimized": None} for p in models}
    if engine_stage is not None:
        for p in models:
            rel = f"models/model.{p}.ort-opt.onnx"
            files[rel] = engine_stage.output(p)
            precisions[p]["optimized"] = rel
    files["reference/fp32_logits.npy"] = validation.output("reference")
    files["reference/eval_set.json"] = data.eval_list
    files["reference/eval_labels.npy"] = data.arrays["eval_labels"]
    files["reference/eval_crops.npy"] = data.arrays["eval_crops"]
    files.update(engine.files)
    spec = data.spec
    input_shape = [-1, 3, spec.crop, spec.crop]
    config_arg = shlex.quote(str(options.config_path))
    rebuild = f"python -m pipeline build --target {target_name} --config {config_arg}"
    if pending:
        bundle_arg = shlex.quote(f"{config.engines_dir.as_posix()}/{bundle_name(config, target_name)}")
        rebuild = f"python -m pipeline build --target {target_name} --config {config_arg} --bundle {bundle_arg}"
    manifest = {
        "format_version": 1,
        "name": bundle_name(config, target_name),
        "created_utc": report["created_utc"],
        "target": {
            "name": target_name,
            "backend": target.backend,
            "compute_capability": target.compute_capability,
            "tensorrt_majors": list(target.tensorrt_majors),
        },
        "model": {"name": config.model.name, "arch": model.spec.get("arch", "custom"), "num_classes": len(model.classes), "spec": model.spec},
        "input": {"name": "images", "dtype": "float32", "layout": "NCHW", "shape": input_shape},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, len(model.classes)]},
        "preprocessing": spec.to_dict(),
        "labels": list(model.class_names),
        "precisions": precisions,
        "engines": [],
        "versions": tool_versions(HOST_TOOLS),
        "host": report["host"],
        "rebuild_command": rebuild,
        "pending": pending,
        "build_key": build_key,
        "session": asdict(session_settings(config)) if target.backend == "onnxruntime" else None,
    }
    return BundleContents(files=files, manifest=manifest)


def _write_report_and_bundle(bundle: Path, contents: BundleContents, report: dict[str, Any]) -> Path:
    import tempfile

    from pipeline.stages.report import render_report

    with tempfile.TemporaryDirectory(prefix="vt-edge-report.") as tmp:
        for path in render_report(report, Path(tmp)):
            contents.files[f"report/{path.name}"] = path
        return write_bundle(bundle, contents)


def print_summary(report: dict[str, Any], log: StageLog) -> None:
    from pipeline.stages.report import summary_rows

    table = Table(title=f"{report['bundle']}{' (CPU proxy)' if report.get('cpu_proxy') else ''}")
    for column in ("precision", "top-1 %", "drop pts", "agreement %", "p50 b1 ms", "vs torch b1"):
        table.add_column(column, justify="right")
    for row in summary_rows(report):
        table.add_row(
            row["precision"], f"{row['top1']:.2f}", "" if row["drop"] is None else f"{row['drop']:+.2f}",
            f"{row['agreement']:.2f}", "" if row["p50_b1"] is None else f"{row['p50_b1']:.3f}",
            "" if row["speedup_vs_torch"] is None else f"{row['speedup_vs_torch']:.2f}x",
        )
    Console(highlight=False).print(table)
    if log.all_cached:
        console.print("nothing changed: every stage came from the cache")
