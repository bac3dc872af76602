"""The report's pictures: accuracy, latency and sensitivity plots (matplotlib, rendered to PNG
here, never fetched from anywhere) and the thumbnails of the gallery.

Each plot comes with a caption that says what is drawn and on which range, because a bar chart
whose axis starts at 58% tells a different story from one that starts at 0.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.names import INT8_FLAVOURS
from pipeline.report.gate import accuracy_failures

SENSITIVITY_MODULES = 12  # modules shown per INT8 flavour: the costliest
THUMBNAIL_PX = 112
PASS, FAIL, NEUTRAL, KEPT = "#2da44e", "#cf222e", "#4c72b0", "#d4762c"


@dataclass
class Figure:
    name: str  # file stem: <name>.png beside the report
    title: str
    caption: str
    png: bytes

    @property
    def file(self) -> str:
        return f"{self.name}.png"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a build host or a Jetson over ssh
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return buffer.getvalue()


def _agreement_floor(values: List[float]) -> float:
    """Lower end of the agreement axis: a round number below every value and budget (points
    near 100% are what matters, so the axis is not 0-100; the caption states the range)."""
    low = min(values + [100.0])
    return float(max(0.0, min(90.0, 5.0 * np.floor((low - 1.0) / 5.0))))


def plot_accuracy(report: Dict[str, Any]) -> Figure:
    plt = _pyplot()
    results = report["results"]
    names = [r["precision"] for r in results]
    top1 = [100 * r["accuracy"]["top1"] for r in results]
    agreement = [100 * r["accuracy"]["agreement"] for r in results]
    budgets = {p: 100 * b["min_agreement"] for p, b in report.get("budgets", {}).items()}
    failed = {f.precision for f in accuracy_failures(report)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    bars = left.bar(names, top1, color=NEUTRAL)
    left.bar_label(bars, labels=[f"{v:.1f}" for v in top1], fontsize=8, padding=2)
    left.set_ylim(0, 108)
    left.set_yticks(range(0, 101, 20))
    left.set_ylabel("top-1 accuracy (%)")
    left.set_title("Top-1 accuracy, axis 0-100%", fontsize=10)
    floor = _agreement_floor(agreement + list(budgets.values()))
    positions = np.arange(len(names))
    right.scatter(positions, agreement, s=50, zorder=3, color=[FAIL if n in failed else PASS for n in names])
    for i, name in enumerate(names):
        if name in budgets:
            right.hlines(budgets[name], i - 0.35, i + 0.35, colors="#444", linestyles="dashed", zorder=2)
        right.annotate(
            f"{agreement[i]:.1f}", (i, agreement[i]), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
        )
    right.set_xticks(positions, names)
    right.set_xlim(-0.6, len(names) - 0.4)
    right.set_ylim(floor, 101)
    right.set_ylabel("agreement with FP32 (%)")
    right.set_title(f"Same answer as FP32, axis {floor:g}-100%", fontsize=10)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=25, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    caption = (
        f"Left: top-1 accuracy of each precision on the {report['evaluation_images']} evaluation images, on a "
        "0-100% axis. Right: top-1 agreement with FP32 (share of images given the same answer as the FP32 "
        f"reference), on a {floor:g}-100% axis; "
        "the dashed line is the precision's `min_agreement` budget, red points miss their accuracy budget."
    )
    return Figure("accuracy", "Accuracy and agreement", caption, _png(fig))


def _samples(result: Dict[str, Any], batch: int) -> List[float]:
    samples = result.get("samples_ms", {})
    return list(samples.get(str(batch), samples.get(batch, [])))  # JSON keys are strings


def _horizontal_boxplot(ax: Any, data: List[List[float]]) -> None:
    """matplotlib >= 3.10 spells it `orientation`, the 3.7 of a Python 3.8 Jetson only `vert`."""
    import inspect

    style: Dict[str, Any] = {"whis": (1, 99), "showfliers": False, "widths": 0.6}
    if "orientation" in inspect.signature(ax.boxplot).parameters:
        ax.boxplot(data, orientation="horizontal", **style)
    else:
        ax.boxplot(data, vert=False, **style)


def plot_latency(report: Dict[str, Any]) -> Figure:
    plt = _pyplot()
    results = report["results"]
    batches = sorted({int(b) for r in results for b in r.get("samples_ms", {})}) or [1]
    budget = report.get("latency_budget_ms")
    values = [t for r in results for b in batches for t in _samples(r, b)] + ([budget] if budget else [])
    log = bool(values) and max(values) / max(min(values), 1e-9) > 20
    fig, axes = plt.subplots(
        1, len(batches), figsize=(5 * len(batches), 0.45 * len(results) + 1.6), dpi=110, squeeze=False
    )
    for ax, batch in zip(axes[0], batches):
        rows = [(r["precision"], _samples(r, batch)) for r in results]
        rows = [(name, data) for name, data in rows if data]
        if rows:
            _horizontal_boxplot(ax, [d for _, d in rows])
            ax.set_yticks(range(1, len(rows) + 1), [n for n, _ in rows], fontsize=8)
        if budget and batch == 1:
            ax.axvline(budget, color=FAIL, linestyle="dashed", linewidth=1, label=f"budget {budget:g} ms")
            ax.legend(fontsize=8, loc="lower right")
        if log:
            ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ms per batch" + (" (log scale)" if log else ""))
        ax.set_title(f"batch {batch}", fontsize=10)
        ax.grid(axis="x", alpha=0.3, which="both")
    runs = max((lat["runs"] for r in results for lat in r["latency"]), default=0)
    host = report.get("host", {})
    if report.get("cpu_proxy"):
        where = "on the CPU proxy (this host's CPU, not the target)"
    elif report.get("backend") == "onnxruntime":
        where = f"with ONNX Runtime on {host.get('cpu', 'the host CPU')} ({host.get('cpu_count', '?')} cores)"
    else:
        where = "on the device with TensorRT"
    caption = (
        f"Latency per call, one panel per batch size, {runs} timed calls per precision after warm-up, measured "
        f"{where}. Box: 25th-75th percentile, middle line: median (p50), whiskers: 1st-99th percentile. "
        + (
            "The time axis is logarithmic (the slowest and fastest differ by more than 20x). "
            if log
            else "The time axis is linear. "
        )
        + (f"Dashed: the target's {budget:g} ms budget at batch 1." if budget else "The target has no latency budget.")
    )
    return Figure("latency", "Latency distributions", caption, _png(fig))


def _sensitivities(report: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    details = report.get("precision_details", {})
    return [
        (f, details[f]) for f in INT8_FLAVOURS if isinstance(details.get(f), dict) and details[f].get("sensitivity")
    ]


def plot_sensitivity(report: Dict[str, Any]) -> Optional[Figure]:
    """Per INT8 flavour whose fallback ran: agreement gained per module kept in FP32."""
    entries = _sensitivities(report)
    if not entries:
        return None
    plt = _pyplot()
    tallest = max(min(len(d["sensitivity"]), SENSITIVITY_MODULES) for _, d in entries)
    fig, axes = plt.subplots(1, len(entries), figsize=(7 * len(entries), 0.32 * tallest + 1.5), dpi=110, squeeze=False)
    for ax, (flavour, details) in zip(axes[0], entries):
        top = details["sensitivity"][:SENSITIVITY_MODULES]
        kept = set(details.get("fp32_layers", []))
        ax.barh(
            [i["module"] for i in top],
            [100 * i["gain"] for i in top],
            color=[KEPT if i["module"] in kept else NEUTRAL for i in top],
        )
        ax.invert_yaxis()
        ax.axvline(0, color="#444", linewidth=0.8)
        ax.set_xlabel("agreement gained when kept in FP32 (points)")
        ax.set_title(f"{flavour}: {len(top)} costliest of {len(details['sensitivity'])} modules", fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    caption = (
        "For each INT8 graph that missed its budget on the calibration images when fully quantized: the top-1 "
        "agreement with FP32 on the calibration images gained by keeping only that module in FP32, costliest first "
        f"(at most {SENSITIVITY_MODULES} shown). Orange: kept in FP32 in the shipped graph."
    )
    return Figure("sensitivity", "INT8 sensitivity per module", caption, _png(fig))


def make_figures(report: Dict[str, Any]) -> List[Figure]:
    figures = [plot_accuracy(report), plot_latency(report), plot_sensitivity(report)]
    return [f for f in figures if f is not None]


def thumbnail_uri(crop: np.ndarray) -> str:
    """One evaluation crop (uint8 CHW, as bundled) as a small JPEG data URI."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(np.asarray(crop, dtype=np.uint8).transpose(1, 2, 0)))
    if max(image.size) > THUMBNAIL_PX:
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
