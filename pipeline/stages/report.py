"""report: the verdict, Markdown and self-contained HTML (from templates, plots and thumbnails
inline), JSON; and the regression gate.

Everything is rendered from `report.json` (plus the bundle's evaluation crops for the gallery's
thumbnails), so `python -m pipeline report <bundle>` reproduces the Markdown, HTML and plots of
any bundle without re-running anything. The gate lives in report_gate, what the report says in
report_views, the pictures in report_plots; this module renders and assembles.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import read_json, sha256_file, write_bytes_atomic, write_json_atomic, write_text_atomic
from pipeline.bundle.paths import refuse_symlinks
from pipeline.errors import BundleError
from pipeline.host import host_info, utc_now
from pipeline.names import FP16, FP32, INT8, INT8_FLAVOURS, with_variants
from pipeline.report import TEMPLATES
from pipeline.report.gate import GateFailure, check_gate, choose_precision, fastest_precision, summary_rows
from pipeline.report.model import FORMAT_VERSION, check_report
from pipeline.report.plots import make_figures
from pipeline.report.text import markdown_text, visible
from pipeline.report.views import make_verdict, what_changed
from pipeline.stages.runtime_choice import as_json as runtime_json
from pipeline.stages.runtime_choice import reference_result, runtime_choices, shipped_results

# Files `report` re-makes from report.json (which itself must verify).
RENDERED = (
    "report/report.md",
    "report/report.html",
    "report/accuracy.png",
    "report/latency.png",
    "report/sensitivity.png",
)

__all__ = [
    "GateFailure",
    "check_gate",
    "choose_precision",
    "fastest_precision",
    "summary_rows",
    "render_report",
    "rerender",
    "assemble_report",
]


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _inline_html(text: str) -> Any:
    """The actions' Markdown inline syntax (`code`, **bold**) as HTML, everything else escaped."""
    from markupsafe import Markup, escape

    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", html))


@functools.lru_cache(maxsize=None)
def template_environment(markdown: bool) -> Any:
    """The Jinja environment of the Markdown or the HTML templates (made once: it caches the compiled templates)."""
    import jinja2

    # Markdown has no autoescape: every variable of its templates passes through markdown_text.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=not markdown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=markdown_text if markdown else None,
    )
    env.filters.update(fmt=_fmt, inline=_inline_html)
    return env


def _load_crops(crops_file: Optional[Path]) -> Optional[np.ndarray]:
    """The evaluation crops for the gallery's thumbnails (memory-mapped: only a few are read)."""
    if crops_file is None or not Path(crops_file).is_file():
        return None
    try:
        return np.load(crops_file, mmap_mode="r")
    except (OSError, ValueError):
        return None  # a gallery without thumbnails beats no report


def judge(report: Dict[str, Any], enabled: bool) -> Any:
    """The gate's verdict on an assembled report (the host build's, the device finish's), made
    once: its failures are recorded in `report["gate"]` and the renderings are handed the verdict
    itself. A re-render of a saved report.json makes it again from the same numbers."""
    report["gate"] = {"enabled": enabled, "failures": []}
    verdict = make_verdict(as_recorded(report))
    report["gate"]["failures"] = list(verdict.failures)
    return verdict


def render_context(report: Dict[str, Any], crops: Optional[np.ndarray] = None, verdict: Any = None) -> Dict[str, Any]:
    """What both templates are given (`verdict`: the assembly's, else made from `report`)."""
    return {
        "r": report,
        "verdict": verdict if verdict is not None else make_verdict(report),
        "summary": summary_rows(report),
        "changed": what_changed(report, crops),
        "figures": make_figures(report),
        "skipped": len(report.get("skipped_images", [])),
    }


def render_report(
    report: Dict[str, Any], folder: Path, crops_file: Optional[Path] = None, verdict: Any = None
) -> List[Path]:
    """Write report.json, report.md, report.html and the plot PNGs into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    report = as_recorded(report)
    context = render_context(report, _load_crops(crops_file), verdict)
    written = []
    for figure in context["figures"]:
        path = folder / figure.file
        write_bytes_atomic(path, figure.png)  # like every write into a bundle: whole, and never through a link
        written.append(path)
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", template_environment(True).get_template("report.md.j2").render(**context))
    write_text_atomic(
        folder / "report.html", template_environment(False).get_template("report.html.j2").render(**context)
    )
    return [folder / "report.json", folder / "report.md", folder / "report.html", *written]


def as_recorded(report: Dict[str, Any]) -> Dict[str, Any]:
    """`report` as report.json holds it: no NaN or Infinity (report_model refuses them, as no
    measurement is one). The error of outputs that overflowed (FP16) is recorded as null, and a
    budget that allows any top-1 drop (`inf`) as 100 points, every answer lost."""
    recorded = copy.deepcopy(report)
    for result in recorded.get("results", []) + (recorded.get("cpu_proxy_results") or []):
        accuracy = result.get("accuracy", {})
        for key in ("cosine_mean", "max_abs_error"):
            if isinstance(accuracy.get(key), float) and not math.isfinite(accuracy[key]):
                accuracy[key] = None
    for budget in recorded.get("budgets", {}).values():
        if budget.get("max_top1_drop") == math.inf:
            budget["max_top1_drop"] = 100.0
    return recorded


def read_report(source: Path) -> Dict[str, Any]:
    """A report.json, checked against the report model (report_model.Report)."""
    where = visible(str(source))
    if not source.is_file():
        raise BundleError(f"{where}: no report.json here")
    try:
        report = read_json(source)
    except ValueError as exc:  # not JSON, not UTF-8
        raise BundleError(f"{where}: not valid JSON ({visible(str(exc))})") from None
    except RecursionError:
        raise BundleError(f"{where}: not a vt-edge report (JSON nested too deeply to read)") from None
    return check_report(report, source)


def rerender(bundle: Path) -> List[Path]:
    """`python -m pipeline report <bundle>`: re-render from the bundle's report.json."""
    source = bundle / "report" / "report.json"
    refuse_symlinks(bundle)  # the renderings are written into it
    if not source.is_file():
        raise BundleError(f"{source}: no report.json in this bundle (is {bundle} a bundle folder?)")
    report = read_report(source)
    if "class_names" not in report and (bundle / "manifest.json").is_file():
        report["class_names"] = list(
            read_json(bundle / "manifest.json").get("labels", [])
        )  # reports made before they carried them
    return render_report(report, bundle / "report", bundle / "reference" / "eval_crops.npy")


def render_comparison(comparison: Any) -> str:
    """`report A B --output FILE`: the comparison (report_compare.Comparison) as Markdown."""
    return template_environment(True).get_template("compare.md.j2").render(c=comparison)


# ---------------------------------------------------------------------------------------------
# Assembly: the report.json of a new bundle


@dataclass
class ReportSources:
    """The build's records the report is assembled from."""

    results: List[Dict[str, Any]]  # validate stage's results.json: every runner, shipped or not
    model: Any  # the loaded checkpoint
    data: Any  # the data split (image counts, skipped images)
    stage_details: Dict[str, Dict[str, Any]]  # export / simplify / precision record details
    stages: List[Dict[str, Any]]  # the stage log
    skipped: Optional[List[Dict[str, str]]] = None  # graphs a runtime could not open (validate stage)


def assemble_report(ctx: Any, sources: ReportSources) -> Dict[str, Any]:
    config, target, data, model = ctx.config, ctx.target, sources.data, sources.model
    choices = runtime_choices(config, target, sources.results, sources.skipped or [])
    results = shipped_results(sources.results, choices)  # one row per precision: the runner that ships
    notes = _fp16_note(results) + _int8_cpu_note(results, host_info().get("cpu_isa", {}))
    if ctx.cpu_proxy:
        notes.append(
            f"- CPU proxy: the {ctx.target_name} precision graphs were run with ONNX Runtime on this host's "
            "CPU; accuracy carries over to the device, latency does not. The device finish measures the "
            "engines."
        )
    details = sources.stage_details
    notes += _model_notes(model, details)
    notes += _runtime_note(choices, host_info()) if choices else []
    reference = reference_result(sources.results)
    return {
        "format_version": FORMAT_VERSION,
        "bundle": ctx.bundle_name,
        "target": ctx.target_name,
        "backend": target.backend,
        "cpu_proxy": ctx.cpu_proxy,
        "created_utc": utc_now(),
        "model": {**model.spec, "checkpoint_sha256": model.checkpoint_sha256},
        "evaluation_images": int(len(data.evaluation.labels)),
        "calibration_images": int(len(data.calib.labels)),
        "skipped_images": [[str(p), why] for p, why in data.skipped],
        "calibration_method": config.precision.calibration,
        "precision_settings": config.precision.model_dump(),  # what the verdict's advice names
        "budgets": with_variants({p: b.model_dump() for p, b in config.budgets.items() if p in target.precisions}),
        "results": results,
        "precision_details": {k: v for k, v in details["precision"].items() if k in INT8_FLAVOURS},
        "export": details["export"],
        "simplify": {k: v for k, v in details["simplify"].items() if not k.startswith("ops_")},
        "stages": sources.stages,
        "host": host_info(),
        "notes": notes,
        "latency_budget_ms": target.latency_budget_ms,
        "class_names": list(model.class_names),
        "evaluation_set_sha256": sha256_file(data.eval_list),  # a comparison checks both reports saw the same images
        # On the host the FP32 ONNX Runtime graph is the reference every precision is compared against.
        "per_image": per_image_record(data.evaluation.labels, reference["predictions"]),
        "runtimes": runtime_json(choices) if choices else None,
    }


def report_of_build(ctx: Any, graphs: Any, validation: Any) -> Tuple[Dict[str, Any], Any]:
    """The host build's report and its gate's verdict, made once, here (`judge`)."""
    import json

    details = {name: result.record.details for name, result in graphs.stages.items()}
    results = json.loads(validation.output("results").read_text())
    skipped = validation.record.details.get("skipped")
    report = assemble_report(
        ctx, ReportSources(results, graphs.model, graphs.data, details, ctx.log.as_json(), skipped)
    )
    return report, judge(report, ctx.options.gate)


def _model_notes(model: Any, details: Dict[str, Dict[str, Any]]) -> List[str]:
    """What was done to the model the user brought: an imported ONNX file's changes, LayerNorms
    decomposed for TensorRT 8.5, where the class names came from."""
    notes = []
    changes = details["export"].get("notes", [])
    if details["export"].get("imported"):
        notes.append(
            f"- Model imported from ONNX ({model.spec.get('source', 'file')})"
            + (f": {'; '.join(changes)}." if changes else ", unchanged.")
        )
    decomposed = details["simplify"].get("layernorm_decomposed", 0)
    if decomposed:
        notes.append(
            f"- {decomposed} LayerNormalization nodes decomposed into primitive ops: the target lists TensorRT "
            "8.5, whose ONNX parser lacks LayerNormalization; FP16 graphs keep the variance (Pow, ReduceMean, "
            "Add, Sqrt) in FP32."
        )
    if getattr(model, "classes_from", "checkpoint") == "dataset":
        notes.append(
            "- Class names: the image set's class folders (give a labels file with `--labels` or `[model] "
            "labels` to name the outputs)."
        )
    return notes


def per_image_record(labels: Any, reference: Dict[str, List[Any]]) -> Dict[str, Any]:
    """The evaluation labels and the reference's answers, per image: with each result's
    `predictions`, what the report's per-class table, confusion and gallery are made from."""
    return {
        "labels": [int(label) for label in labels],
        "reference": {"top1": list(reference["top1"]), "confidence": list(reference["confidence"])},
    }


def _fp16_note(results: List[Dict[str, Any]]) -> List[str]:
    """What the CPU measurement of the FP16 graph means, with the numbers of this run."""
    p50 = {r["precision"]: next((lat["p50_ms"] for lat in r["latency"] if lat["batch"] == 1), None) for r in results}
    if p50.get(FP16) is None or p50.get(FP32) is None:
        return []
    return [
        f"- fp16 on this CPU: p50 {p50[FP16]:.3f} ms vs fp32 {p50[FP32]:.3f} ms at batch 1 "
        f"({p50[FP32] / p50[FP16]:.2f}x). ONNX Runtime's CPU provider has few FP16 kernels and inserts casts to "
        "FP32 around the rest, so FP16 brings no compute speed-up on a CPU; it is validated here for accuracy, "
        "and its speed is measured on the GPU."
    ]


# The CPU kinds whose INT8 kernels differ: what a report says it did not measure.
CPU_KINDS = ("AVX2 only (no 8-bit dot product)", "AVX-512 VNNI / AVX-VNNI", "AMX", "Arm dotprod / i8mm")


def _cpu_kind(isa: Dict[str, Any]) -> str:
    dot = str(isa.get("int8_dot") or "")
    if not dot:
        return CPU_KINDS[0]
    return next((kind for kind, key in zip(CPU_KINDS[1:], ("VNNI", "AMX", "Arm")) if key.lower() in dot.lower()), dot)


def _runtime_note(runtimes: Dict[str, Any], host: Dict[str, Any]) -> List[str]:
    """What to expect: per precision the runtime that won on this CPU and by how much, and which
    kinds of CPU (whose INT8 kernels differ) were not measured."""
    rows = []
    for precision, choice in runtimes.items():
        timed = {m.runtime: m.p50_ms for m in choice.measured if m.p50_ms is not None}
        if len(timed) == 2:
            (a, ta), (b, tb) = sorted(timed.items(), key=lambda item: item[1])
            rows.append(f"{precision} {a} {ta:.3f} ms vs {b} {tb:.3f} ms ({tb / ta:.2f}x; ships on {choice.runtime})")
        elif timed:
            rows.append(f"{precision} on {choice.runtime} only ({next(iter(timed.values())):.3f} ms)")
    if not rows:
        return []
    isa = host.get("cpu_isa") or {}
    here = _cpu_kind(isa)
    others = ", ".join(kind for kind in CPU_KINDS if kind != here)
    return [
        f"- What to expect: measured on {host.get('cpu', 'this CPU')} ({here}), batch 1: {'; '.join(rows)}. "
        f"Not measured: {others}, where the INT8 kernels of both runtimes differ (a dot-product instruction "
        "gives INT8 about four times FP32's arithmetic rate, AVX2 about twice), so the winner may differ there."
    ]


def _int8_cpu_note(results: List[Dict[str, Any]], isa: Dict[str, Any]) -> List[str]:
    """What this CPU's instruction set lets INT8 do, and what it measured."""
    p50 = {r["precision"]: next((lat["p50_ms"] for lat in r["latency"] if lat["batch"] == 1), None) for r in results}
    if p50.get(INT8) is None or p50.get(FP32) is None or not isa:
        return []
    speedup = p50[FP32] / p50[INT8]
    measured = f"int8 p50 {p50[INT8]:.3f} ms vs fp32 {p50[FP32]:.3f} ms at batch 1 ({speedup:.2f}x)"
    if isa.get("int8_dot"):
        return [f"- int8 on this CPU ({isa['int8_kernel']}): {measured}."]
    verdict = "INT8 is not faster than FP32 here" if speedup < 1.05 else f"INT8 gains only {speedup:.2f}x here"
    return [
        f"- int8 on this CPU: {measured}. It has no 8-bit dot-product instruction (features: "
        f"{', '.join(isa.get('features', [])) or 'none detected'}; no AVX-512 VNNI, AVX-VNNI or AMX): ONNX Runtime "
        f"multiplies with {isa.get('int8_kernel', 'its generic kernels')}, about twice FP32's arithmetic rate "
        f"where VNNI gives four times, and a small model's per-op overhead does not shrink with INT8. {verdict}; "
        "the latency gate's choice below is made on these measurements. A CPU with VNNI (or Arm dotprod/i8mm) "
        "runs the same graph faster, with the same answers (7-bit weights)."
    ]
