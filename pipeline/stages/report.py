"""report: Markdown, self-contained HTML (plots inline) and JSON; and the regression gate.

Everything is rendered from `report.json`, so `python -m pipeline report <bundle>` reproduces
the Markdown, HTML and plots of any bundle without re-running anything.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from pipeline.artifacts import read_json, write_json_atomic, write_text_atomic
from pipeline.errors import BundleError
from pipeline.host import host_info, utc_now
from pipeline.metrics import Budget, top1_drop
from pipeline.names import FP16, FP32, FP32_TORCH, INT8, INT8_FLAVOURS, REFERENCE
# Files `report` re-makes from report.json (which itself must verify).
RENDERED = ("report/report.md", "report/report.html", "report/accuracy.png", "report/latency.png", "report/sensitivity.png")
REPORT_KEYS = ("bundle", "target", "backend", "model", "results", "created_utc", "host", "evaluation_images", "calibration_images")


@dataclass(frozen=True)
class GateFailure:
    precision: str
    message: str


def check_gate(report: dict[str, Any]) -> list[GateFailure]:
    """Budgets of pipeline.toml against the measured results (top-1 drop, agreement)."""
    results = {r["precision"]: r for r in report["results"]}
    reference = results.get(REFERENCE)
    failures: list[GateFailure] = []
    if reference is None:
        return failures
    for precision, budget in report.get("budgets", {}).items():
        if precision not in results:
            continue
        acc = results[precision]["accuracy"]
        drop = top1_drop(reference["accuracy"]["top1"], acc["top1"])
        failures += [GateFailure(precision, m) for m in Budget(**budget).misses(acc["agreement"], drop, precision)]
    failures += _latency_failures(report, {f.precision for f in failures})
    return failures


def fastest_precision(report: dict[str, Any], excluded: set[str] = frozenset()) -> tuple[str, float] | None:
    """The engine with the lowest p50 at batch 1 (torch eager is a baseline, not an engine)."""
    candidates = []
    for r in report["results"]:
        lat1 = next((lat for lat in r["latency"] if lat["batch"] == 1), None)
        if r["precision"] != FP32_TORCH and r["precision"] not in excluded and lat1 is not None:
            candidates.append((lat1["p50_ms"], r["precision"]))
    return (min(candidates)[1], min(candidates)[0]) if candidates else None


def _latency_failures(report: dict[str, Any], accuracy_failed: set[str]) -> list[GateFailure]:
    """The target's latency budget: met when some precision within its accuracy budget is fast enough.

    A CPU proxy measurement says nothing about the device's latency, so it is not gated.
    """
    budget_ms = report.get("latency_budget_ms")
    if not budget_ms or report.get("cpu_proxy"):
        return []
    fastest = fastest_precision(report, accuracy_failed)
    if fastest is None or fastest[1] <= budget_ms:
        return []
    name, p50 = fastest
    return [GateFailure("latency", f"latency: fastest precision within the accuracy budgets, {name}, has p50 {p50:.3f} ms at batch 1, over the {budget_ms:g} ms budget by {p50 - budget_ms:.3f} ms")]


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured runner: what the final table and the Markdown show."""
    results = report["results"]
    reference = next((r for r in results if r["precision"] == REFERENCE), None)
    torch_row = next((r for r in results if r["precision"] == FP32_TORCH), None)
    rows = []
    for r in results:
        lat1 = next((lat for lat in r["latency"] if lat["batch"] == 1), None)
        base1 = next((lat for lat in torch_row["latency"] if lat["batch"] == 1), None) if torch_row else None
        rows.append(
            {
                "precision": r["precision"],
                "top1": 100 * r["accuracy"]["top1"],
                "top5": 100 * r["accuracy"]["top5"],
                "drop": top1_drop(reference["accuracy"]["top1"], r["accuracy"]["top1"]) if reference else None,
                "agreement": 100 * r["accuracy"]["agreement"],
                "cosine": r["accuracy"]["cosine_mean"],
                "max_abs": r["accuracy"]["max_abs_error"],
                "p50_b1": lat1["p50_ms"] if lat1 else None,
                "p99_b1": lat1["p99_ms"] if lat1 else None,
                "speedup_vs_torch": (base1["p50_ms"] / lat1["p50_ms"]) if (lat1 and base1) else None,
                "throughput": max((lat["throughput_ips"] for lat in r["latency"]), default=None),
            }
        )
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _plot_accuracy(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(report)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    names = [r["precision"] for r in rows]
    ax.bar(names, [r["top1"] for r in rows], color="#4c72b0", label="top-1")
    ax.plot(names, [r["agreement"] for r in rows], "o", color="#dd8452", label="agreement with FP32")
    low = min([r["top1"] for r in rows] + [r["agreement"] for r in rows])
    ax.set_ylim(max(0, low - 5), 100.5)
    ax.set_ylabel("%")
    ax.set_title("Accuracy per precision (evaluation subset)")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def _plot_latency(report: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    batches = sorted({int(b) for r in results for b in r.get("samples_ms", {})})
    fig, axes = plt.subplots(1, max(len(batches), 1), figsize=(4 * max(len(batches), 1), 3.2), dpi=110, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        data = [r["samples_ms"][str(batch)] if str(batch) in r["samples_ms"] else r["samples_ms"].get(batch, []) for r in results]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(results) + 1), [r["precision"] for r in results], rotation=30, fontsize=8)
        ax.set_title(f"latency, batch {batch}")
        ax.set_ylabel("ms")
    return _png(fig)


def _plot_sensitivity(report: dict[str, Any]) -> bytes | None:
    entries = [(flavour, d["sensitivity"]) for flavour, d in report.get("precision_details", {}).items() if isinstance(d, dict) and d.get("sensitivity")]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flavour, items = entries[0]
    top = items[:12]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2), dpi=110)
    ax.barh([i["module"] for i in top][::-1], [100 * i["gain"] for i in top][::-1], color="#55a868")
    ax.set_xlabel("agreement gained when kept in FP32 (points)")
    ax.set_title(f"Per-module INT8 sensitivity ({flavour})")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    rows = summary_rows(report)
    lines = [
        f"# Validation report: {report['bundle']}",
        "",
        f"- target: **{report['target']}** ({report['backend']}){' — measured on the CPU proxy (ONNX Runtime), not on the target GPU' if report.get('cpu_proxy') else ''}",
        f"- model: {report['model']['arch']} ({report['model']['num_classes']} classes), checkpoint sha256 {report['model']['checkpoint_sha256'][:16]}…",
        f"- evaluation images: {report['evaluation_images']} (calibration: {report['calibration_images']}, disjoint); skipped bad images: {len(report.get('skipped_images', []))}",
        f"- created: {report['created_utc']}; host: {report['host'].get('cpu', '?')}, {report['host'].get('cpu_count', '?')} cores",
        "",
        "## Accuracy and speed",
        "",
        "| precision | top-1 % | top-5 % | drop (pts) | agreement % | cosine | max abs err | p50 b1 (ms) | p99 b1 (ms) | speed-up vs torch b1 | best throughput (img/s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['precision']} | {r['top1']:.2f} | {r['top5']:.2f} | {_fmt(r['drop'], '+.2f')} | {r['agreement']:.2f} | {r['cosine']:.5f} | "
            f"{r['max_abs']:.3g} | {_fmt(r['p50_b1'], '.3f')} | {_fmt(r['p99_b1'], '.3f')} | {_fmt(r['speedup_vs_torch'], '.2f')} | {_fmt(r['throughput'], '.0f')} |"
        )
    lines += ["", "## Latency per batch size", "", "| precision | batch | p50 ms | p90 ms | p99 ms | img/s |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        for lat in r["latency"]:
            lines.append(f"| {r['precision']} | {lat['batch']} | {lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} | {lat['p99_ms']:.3f} | {lat['throughput_ips']:.0f} |")
    lines += ["", "## Gate", ""]
    gate = report.get("gate", {})
    if gate.get("failures"):
        lines += [f"- FAILED: {f}" for f in gate["failures"]]
    else:
        lines.append("- every budget met" if report.get("budgets") else "- no budgets configured")
    for precision, budget in report.get("budgets", {}).items():
        lines.append(f"- budget {precision}: top-1 drop <= {budget['max_top1_drop']} pts, agreement >= {budget['min_agreement']}")
    fastest = fastest_precision(report, {f.split(":")[0] for f in gate.get("failures", [])})
    if report.get("latency_budget_ms"):
        proxy = " (not gated: CPU proxy)" if report.get("cpu_proxy") else ""
        lines.append(f"- latency budget: p50 <= {report['latency_budget_ms']:g} ms at batch 1{proxy}")
    if fastest:
        lines.append(f"- fastest precision within the accuracy budgets: **{fastest[0]}** (p50 {fastest[1]:.3f} ms at batch 1)")
    lines += ["", "## Precision graphs", ""]
    for flavour, details in report.get("precision_details", {}).items():
        if isinstance(details, dict) and "fp32_layers" in details:
            kept = ", ".join(details["fp32_layers"]) or "none (every quantizable layer is INT8)"
            lines.append(f"- {flavour}: layers kept in FP32: {kept}")
            lines += [f"  - {method}" for method in details.get("methods", [])]
    lines += [f"- calibration: {report.get('calibration_method', 'n/a')}", ""]
    lines += report.get("notes", [])
    lines += ["", "## Stages", "", "| stage | wall s | cached |", "|---|---|---|"]
    for stage in report.get("stages", []):
        lines.append(f"| {stage['stage']} | {stage['wall_s']:.2f} | {'yes' if stage['cached'] else 'no'} |")
    lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in plots.items()]
    return "\n".join(lines) + "\n"


def render_html(markdown_text: str, images: dict[str, bytes], report: dict[str, Any]) -> str:
    """A self-contained page: tables from the summary, plots as data URIs."""
    rows = summary_rows(report)
    head = "".join(f"<th>{h}</th>" for h in ["precision", "top-1 %", "drop", "agreement %", "cosine", "p50 b1 ms", "speed-up vs torch"])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [r["precision"], f"{r['top1']:.2f}", _fmt(r["drop"], "+.2f"), f"{r['agreement']:.2f}", f"{r['cosine']:.5f}", _fmt(r["p50_b1"], ".3f"), _fmt(r["speedup_vs_torch"], ".2f")]) + "</tr>"
        for r in rows
    )
    pictures = "".join(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/></figure>' for name, data in images.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(report["bundle"])
        + "</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>"
        f"<h1>{html.escape(report['bundle'])}</h1><table><tr>{head}</tr>{body}</table>{pictures}"
        f"<h2>Full report</h2><pre>{html.escape(markdown_text)}</pre></body></html>\n"
    )


def render_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write report.json, report.md, report.html and the plot PNGs into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {"accuracy": _plot_accuracy(report), "latency": _plot_latency(report)}
    sensitivity = _plot_sensitivity(report)
    if sensitivity is not None:
        images["sensitivity"] = sensitivity
    written = []
    plot_files = {}
    for name, data in images.items():
        path = folder / f"{name}.png"
        path.write_bytes(data)
        plot_files[name] = path.name
        written.append(path)
    markdown_text = render_markdown(report, plot_files)
    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", markdown_text)
    write_text_atomic(folder / "report.html", render_html(markdown_text, images, report))
    return [folder / "report.json", folder / "report.md", folder / "report.html", *written]


def rerender(bundle: Path) -> list[Path]:
    """`python -m pipeline report <bundle>`: re-render from the bundle's report.json."""
    source = bundle / "report" / "report.json"
    if not source.is_file():
        raise BundleError(f"{source}: no report.json in this bundle (is {bundle} a bundle folder?)")
    report = read_json(source)
    missing = [key for key in REPORT_KEYS if not isinstance(report, dict) or key not in report]
    if missing:
        raise BundleError(f"{source}: not a vt-edge report (missing {', '.join(missing)})")
    return render_report(report, bundle / "report")


# ---------------------------------------------------------------------------------------------
# Assembly: the report.json of a new bundle


@dataclass
class ReportSources:
    """The build's records the report is assembled from."""

    results: List[Dict[str, Any]]  # validate stage's results.json
    model: Any  # the loaded checkpoint
    data: Any  # the data split (image counts, skipped images)
    stage_details: Dict[str, Dict[str, Any]]  # export / simplify / precision record details
    stages: List[Dict[str, Any]]  # the stage log


def assemble_report(ctx: Any, sources: ReportSources) -> Dict[str, Any]:
    config, target, data, model = ctx.config, ctx.target, sources.data, sources.model
    notes = _fp16_note(sources.results) + _int8_cpu_note(sources.results, host_info().get("cpu_isa", {}))
    if ctx.cpu_proxy:
        notes.append(f"- CPU proxy: the {ctx.target_name} precision graphs were run with ONNX Runtime on this host's CPU; accuracy carries over to the device, latency does not. The device finish measures the engines.")
    details = sources.stage_details
    return {
        "bundle": ctx.bundle_name, "target": ctx.target_name, "backend": target.backend, "cpu_proxy": ctx.cpu_proxy,
        "created_utc": utc_now(),
        "model": {**model.spec, "checkpoint_sha256": model.checkpoint_sha256},
        "evaluation_images": int(len(data.evaluation.labels)),
        "calibration_images": int(len(data.calib.labels)),
        "skipped_images": [[str(p), why] for p, why in data.skipped],
        "calibration_method": config.precision.calibration,
        "budgets": {p: b.model_dump() for p, b in config.budgets.items() if p in target.precisions},
        "results": sources.results,
        "precision_details": {k: v for k, v in details["precision"].items() if k in INT8_FLAVOURS},
        "export": details["export"],
        "simplify": {k: v for k, v in details["simplify"].items() if not k.startswith("ops_")},
        "stages": sources.stages,
        "host": host_info(),
        "notes": notes,
        "latency_budget_ms": target.latency_budget_ms,
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
        f"multiplies with {isa.get('int8_kernel', 'its generic kernels')}, about twice FP32's arithmetic rate where VNNI "
        f"gives four times, and a small model's per-op overhead does not shrink with INT8. {verdict}; the latency "
        "gate's choice below is made on these measurements. A CPU with VNNI (or Arm dotprod/i8mm) runs the same graph "
        "faster, with the same answers (7-bit weights)."
    ]
