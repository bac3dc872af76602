"""What the report says, computed from report.json alone: the verdict and what to change when it
fails, the per-class table, and the answers that changed (confusion and gallery).

The templates only lay these out, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Any, Dict, List, Optional, Tuple

import numpy as np

from pipeline.metrics import Budget, top1_drop
from pipeline.names import FP16, FP32_TORCH, INT8_FLAVOURS, REFERENCE, precision_of
from pipeline.report.gate import (
    accuracy_failures,
    check_gate,
    choose_precision,
    fastest_precision,
    latency_at,
    result_of,
)

CLASS_ROWS = 20  # more classes than this: the table shows the ones that lost the most
CONFUSION_CLASSES = 12  # rows and columns of a confusion table, the classes with the most flips
GALLERY_SIZE = 36  # changed images shown per precision, those that lost the most confidence


@dataclass
class BudgetRow:
    """One precision against its accuracy budget: the verdict table."""

    precision: str
    status: str  # "pass", "fail" or "no budget"
    top1: float  # %
    drop: Optional[float]  # points below FP32 (negative: a gain)
    max_drop: Optional[float]  # points
    agreement: float  # %
    min_agreement: Optional[float]  # %
    p50_b1: Optional[float]  # ms


@dataclass
class Verdict:
    passed: bool
    enforced: bool  # False: built with --no-gate, a failure did not fail the build
    headline: str
    rows: List[BudgetRow]
    failures: List[str]
    choice: str  # the precision chosen for the target's latency budget, as a sentence
    actions: List[str]  # settings to change; `code` and **bold** in Markdown's inline syntax
    kept_fp32: Dict[str, List[str]]  # INT8 flavour -> modules kept in FP32


def _class_name(names: List[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"class {index}"


def engine_precisions(report: Dict[str, Any]) -> List[str]:
    """Every measured precision but the torch eager baseline, FP32 first."""
    names = [r["precision"] for r in report["results"] if r["precision"] != FP32_TORCH]
    return sorted(names, key=lambda p: p != REFERENCE)


def budget_rows(report: Dict[str, Any]) -> List[BudgetRow]:
    reference = result_of(report, REFERENCE)
    failed = {f.precision for f in accuracy_failures(report)}
    budgets = report.get("budgets", {})
    rows = []
    for precision in engine_precisions(report):
        if precision == REFERENCE:
            continue
        r = result_of(report, precision)
        budget = budgets.get(precision)
        lat1 = latency_at(r, 1)
        rows.append(
            BudgetRow(
                precision=precision,
                status="no budget" if budget is None else ("fail" if precision in failed else "pass"),
                top1=100 * r["accuracy"]["top1"],
                drop=top1_drop(reference["accuracy"]["top1"], r["accuracy"]["top1"]) if reference else None,
                max_drop=budget["max_top1_drop"] if budget else None,
                agreement=100 * r["accuracy"]["agreement"],
                min_agreement=100 * budget["min_agreement"] if budget else None,
                p50_b1=lat1["p50_ms"] if lat1 else None,
            )
        )
    return rows


def make_verdict(report: Dict[str, Any]) -> Verdict:
    failures = check_gate(report)
    failed_accuracy = sorted({f.precision for f in failures if f.precision != "latency"})
    latency_failed = any(f.precision == "latency" for f in failures)
    enforced = bool(report.get("gate", {}).get("enabled", True))
    if failures:
        parts = []
        if failed_accuracy:
            parts.append(
                f"{', '.join(failed_accuracy)} "
                f"{'misses its accuracy budget' if len(failed_accuracy) == 1 else 'miss their accuracy budgets'}"
            )
        if latency_failed:
            parts.append(f"no precision within budget meets the {report['latency_budget_ms']:g} ms latency budget")
        headline = "FAILED: " + "; ".join(parts) + ("" if enforced else " (gate not enforced: built with --no-gate)")
    elif report.get("budgets") or report.get("latency_budget_ms"):
        headline = "PASSED: every budget met"
    else:
        headline = "NOT GATED: no budgets configured"
    details = report.get("precision_details", {})
    kept = {
        f: list(d.get("fp32_layers", [])) for f, d in details.items() if isinstance(d, dict) and d.get("fp32_layers")
    }
    return Verdict(
        passed=not failures,
        enforced=enforced,
        headline=headline,
        rows=budget_rows(report),
        failures=[f.message for f in failures],
        choice=_choice(report, set(failed_accuracy)),
        actions=_actions(report, failed_accuracy, latency_failed),
        kept_fp32=kept,
    )


def _choice(report: Dict[str, Any], failed: AbstractSet[str]) -> str:
    choice = choose_precision(report, failed)
    if choice is None:
        return "No precision is within its accuracy budget: there is nothing to choose."
    name, p50 = choice.precision, choice.p50_ms
    if choice.fastest == name:
        text = (
            f"Chosen precision: **{name}**, the fastest of those within their accuracy budgets (p50 "
            f"{p50:.3f} ms at batch 1"
        )
    else:
        text = (
            f"Chosen precision: **{name}**, the simplest of those within their accuracy budgets that none "
            f"beats by more than the timing spread (p50 {p50:.3f} ms at batch 1; {choice.fastest} measured "
            f"{choice.fastest_p50_ms:.3f} ms, within the {choice.spread_ms:.3f} ms spread"
        )
    budget_ms = report.get("latency_budget_ms")
    if not budget_ms:
        return text + "; the target has no latency budget)."
    met = "meets" if p50 <= budget_ms else "misses"
    proxy = ", not gated: measured on the CPU proxy, not on the target" if report.get("cpu_proxy") else ""
    return text + f"); it {met} the target's {budget_ms:g} ms latency budget{proxy}."


def _actions(report: Dict[str, Any], failed: List[str], latency_failed: bool) -> List[str]:
    """What to change, most specific first; one line per setting, naming every precision it concerns."""
    actions: List[str] = []
    int8 = [p for p in failed if p in INT8_FLAVOURS]
    if int8:
        actions += _int8_actions(report, int8)
    if FP16 in failed:
        actions.append(
            "FP16 rounding changes this model's answers (see which images below): ship **fp32**, or an INT8 "
            "graph within its budget, on this target."
        )
    if failed:
        actions += _budget_actions(report, failed)
    if latency_failed:
        actions += _latency_actions(report, set(failed))
    return actions


def _budget_actions(report: Dict[str, Any], failed: List[str]) -> List[str]:
    """The config keys that accept the loss or drop the graphs: a graph variant (int8-trt-fp16) is
    judged by its precision's budget and goes with it, so the keys name the precision."""
    precisions = list(dict.fromkeys(precision_of(graph) for graph in failed))
    budgets = []
    for precision in precisions:
        budget = report["budgets"][precision]
        measured = ", ".join(
            f"{result_of(report, graph)['accuracy']['agreement']:.4f}" + (f" ({graph})" if graph != precision else "")
            for graph in failed
            if precision_of(graph) == precision
        )
        points = "point" if budget["max_top1_drop"] == 1 else "points"
        budgets.append(
            f"`[budgets.{precision}] min_agreement` (now {budget['min_agreement']:g}, measured {measured}) "
            f"and `max_top1_drop` (now {budget['max_top1_drop']:g} {points})"
        )
    quoted = ", ".join(f'"{p}"' for p in precisions)
    return [
        "Accept the loss only if the application can: " + "; ".join(budgets) + ".",
        f"Or ship without {'it' if len(precisions) == 1 else 'them'}: remove {quoted} from "
        f"`[targets.{report['target']}] precisions`.",
    ]


def _int8_actions(report: Dict[str, Any], flavours: List[str]) -> List[str]:
    """The fallback and calibration settings that can bring INT8 graphs within budget."""
    settings = report.get("precision_settings", {})
    method = settings.get("calibration", report.get("calibration_method", "?"))
    limit = settings.get("max_fp32_layers")
    details = {f: report.get("precision_details", {}).get(f) or {} for f in flavours}
    names = ", ".join(f"**{f}**" for f in flavours)
    actions = []
    if limit == 0:
        actions.append(
            f"Let the fallback keep the costliest modules of {names} in FP32: `[precision] max_fp32_layers` is "
            "0 (the default is 8)."
        )
    full = [f for f in flavours if limit and len(details[f].get("fp32_layers", [])) >= limit]
    if full:
        actions.append(
            f"The fallback kept {limit} module(s) of {', '.join(full)} in FP32, its limit: raise `[precision] "
            f"max_fp32_layers` (now {limit})."
        )
    for flavour in flavours:
        d = details[flavour]
        if "agreement" in d and Budget(**report["budgets"][flavour]).met(d["agreement"], d.get("top1_drop", 0.0)):
            kept = f" with {len(d.get('fp32_layers', []))} module(s) in FP32" if d.get("fp32_layers") else ""
            actions.append(
                f"**{flavour}** met its budget on the {report.get('calibration_images', '?')} calibration "
                f"images (agreement {d['agreement']:.4f}{kept}) but not on the evaluation images: calibrate "
                "on more images (`[data] calib_per_class`), so that the fallback sees what the evaluation sees."
            )
    others = [m for m in ("percentile", "minmax", "entropy") if m != method]
    actions.append(
        f'Try another calibration: `[precision] calibration` is "{method}"; try "{others[0]}" or "{others[1]}" '
        "(entropy clips ranges hardest, minmax not at all)."
    )
    return actions


def _latency_actions(report: Dict[str, Any], failed: AbstractSet[str]) -> List[str]:
    budget_ms = report["latency_budget_ms"]
    actions = []
    faster = fastest_precision(report)
    if faster and faster[0] in failed and faster[1] <= budget_ms:
        actions.append(
            f"**{faster[0]}** would meet the {budget_ms:g} ms budget (p50 {faster[1]:.3f} ms) but misses its accuracy "
            "budget: bring it within (above) and it is chosen."
        )
    actions.append(
        f"Or raise `[targets.{report['target']}] latency_budget_ms` (now {budget_ms:g}) if the application allows it."
    )
    return actions


# ---------------------------------------------------------------------------------------------
# What changed: needs the per-image predictions the validate stage records


@dataclass
class ClassRow:
    name: str
    images: int
    top1: List[Optional[float]]  # % per precision, in PerClassTable.precisions order
    lost: float  # the most points any precision lost against FP32 in this class


@dataclass
class PerClassTable:
    precisions: List[str]
    rows: List[ClassRow]
    note: str


@dataclass
class GalleryItem:
    index: int  # position in the evaluation set (reference/eval_set.json)
    truth: str
    reference: str
    reference_confidence: float  # %
    answer: str
    confidence: float  # %
    lost: float  # points of confidence the FP32 answer lost
    outcome: str  # "was right, now wrong", "was wrong, now right", "wrong before and after"
    thumbnail: Optional[str] = None  # data URI


@dataclass
class Confusion:
    rows: List[str]  # FP32's answers
    columns: List[str]  # the precision's answers
    counts: List[List[int]]
    note: str


@dataclass
class Changes:
    """The images whose top-1 answer differs from FP32's, for one precision."""

    precision: str
    images: int
    changed: int
    broken: int  # FP32 right, now wrong
    fixed: int  # FP32 wrong, now right
    still_wrong: int
    confusion: Optional[Confusion] = None
    gallery: List[GalleryItem] = field(default_factory=list)
    gallery_note: str = ""


@dataclass
class PerImage:
    """report.json's per-image arrays, as numpy."""

    labels: np.ndarray
    reference_top1: np.ndarray
    reference_confidence: np.ndarray
    predictions: Dict[str, Dict[str, np.ndarray]]  # precision -> top1, confidence, reference_class_confidence


def per_image(report: Dict[str, Any]) -> Optional[PerImage]:
    """None when the report predates per-image predictions (or they do not line up)."""
    record = report.get("per_image")
    if not isinstance(record, dict) or "labels" not in record:
        return None
    labels = np.asarray(record["labels"], dtype=np.int64)
    predictions = {}
    for r in report["results"]:
        p = r.get("predictions") or {}
        if r["precision"] != FP32_TORCH and len(p.get("top1", [])) == len(labels):
            predictions[r["precision"]] = {k: np.asarray(v) for k, v in p.items()}
    reference = record["reference"]
    if len(reference["top1"]) != len(labels) or REFERENCE not in predictions:
        return None
    return PerImage(labels, np.asarray(reference["top1"]), np.asarray(reference["confidence"]), predictions)


def per_class_table(data: PerImage, names: List[str]) -> PerClassTable:
    precisions = sorted(data.predictions, key=lambda p: p != REFERENCE)
    rows = []
    for cls in np.unique(data.labels):
        mask = data.labels == cls
        top1 = [100.0 * float(np.mean(data.predictions[p]["top1"][mask] == cls)) for p in precisions]
        rows.append(ClassRow(_class_name(names, int(cls)), int(mask.sum()), top1, max(top1[0] - v for v in top1)))
    note = f"all {len(rows)} classes"
    if len(rows) > CLASS_ROWS:
        rows = sorted(rows, key=lambda row: -row.lost)[:CLASS_ROWS]
        note = f"the {CLASS_ROWS} of {len(np.unique(data.labels))} classes that lost the most top-1 against FP32"
    return PerClassTable(precisions, rows, note)


def changes_of(data: PerImage, precision: str, names: List[str], crops: Optional[np.ndarray]) -> Changes:
    answer = data.predictions[precision]["top1"]
    changed = np.flatnonzero(answer != data.reference_top1)
    right_before = data.reference_top1[changed] == data.labels[changed]
    right_after = answer[changed] == data.labels[changed]
    result = Changes(
        precision,
        int(len(answer)),
        int(len(changed)),
        int(np.sum(right_before & ~right_after)),
        int(np.sum(~right_before & right_after)),
        int(np.sum(~right_before & ~right_after)),
    )
    if len(changed):
        result.confusion = _confusion(data.reference_top1[changed], answer[changed], names)
        result.gallery, result.gallery_note = _gallery(data, precision, changed, names, crops)
    return result


def _confusion(before: np.ndarray, after: np.ndarray, names: List[str]) -> Confusion:
    """FP32 answer x new answer over the flipped images, the classes with the most flips."""
    rows = [int(c) for c, _ in _most_common(before)][:CONFUSION_CLASSES]
    columns = [int(c) for c, _ in _most_common(after)][:CONFUSION_CLASSES]
    counts = [[int(np.sum((before == r) & (after == c))) for c in columns] for r in rows]
    shown = sum(map(sum, counts))
    note = "" if shown == len(before) else f"{len(before) - shown} of {len(before)} flips are between classes not shown"
    return Confusion([_class_name(names, r) for r in rows], [_class_name(names, c) for c in columns], counts, note)


def _most_common(values: np.ndarray) -> List[Tuple[int, int]]:
    classes, counts = np.unique(values, return_counts=True)
    return sorted(zip(classes, counts), key=lambda item: (-item[1], item[0]))


def _gallery(
    data: PerImage, precision: str, changed: np.ndarray, names: List[str], crops: Optional[np.ndarray]
) -> Tuple[List[GalleryItem], str]:
    p = data.predictions[precision]
    lost = data.reference_confidence[changed] - p["reference_class_confidence"][changed]
    order = changed[np.argsort(-lost, kind="stable")][:GALLERY_SIZE]
    usable = crops is not None and len(crops) == len(data.labels)
    items = []
    for i in order:
        truth, before, after = int(data.labels[i]), int(data.reference_top1[i]), int(p["top1"][i])
        outcome = (
            "was right, now wrong"
            if before == truth
            else ("was wrong, now right" if after == truth else "wrong before and after")
        )
        items.append(
            GalleryItem(
                int(i),
                _class_name(names, truth),
                _class_name(names, before),
                100 * float(data.reference_confidence[i]),
                _class_name(names, after),
                100 * float(p["confidence"][i]),
                100 * float(data.reference_confidence[i] - p["reference_class_confidence"][i]),
                outcome,
            )
        )
    if usable:
        from pipeline.report.plots import thumbnail_uri

        for item in items:
            item.thumbnail = thumbnail_uri(crops[item.index])
    note = f"{len(items)} of {len(changed)} changed images, most confidence lost first"
    if not usable:
        note += "; no thumbnails (the evaluation crops, reference/eval_crops.npy, were not found)"
    return items, note


@dataclass
class WhatChanged:
    per_class: PerClassTable
    changes: List[Changes]  # every precision but FP32

    @property
    def unchanged(self) -> List[str]:
        """Precisions that give FP32's answer on every image (one line, not a section each)."""
        return [c.precision for c in self.changes if not c.changed]


def what_changed(report: Dict[str, Any], crops: Optional[np.ndarray]) -> Optional[WhatChanged]:
    data = per_image(report)
    if data is None:
        return None
    names = list(report.get("class_names") or [])
    others = [p for p in data.predictions if p != REFERENCE]
    return WhatChanged(per_class_table(data, names), [changes_of(data, p, names, crops) for p in others])
