"""The report people read: verdict first, real tables, the images that changed, honest plots, a
self-contained page; and `report A B`, the comparison that fails CI on a regression."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from pipeline.stages.bundle import verify_bundle

BUNDLE = "engines/tiny-cpu"
FLIPPED = 12  # images whose int8 answer the failing report changes


def built_report(project: Path) -> dict:
    return json.loads((project / BUNDLE / "report/report.json").read_text())


def failing_report(report: dict) -> dict:
    """The tiny build's report with int8 answering differently on FLIPPED images (losing more
    confidence on later ones), a budget that this misses and a fallback that was not allowed."""
    report = copy.deepcopy(report)
    reference = report["per_image"]["reference"]
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    labels = report["per_image"]["labels"]
    fp32 = next(r for r in report["results"] if r["precision"] == "fp32")
    for i in range(FLIPPED):  # FP32 right and sure of it, int8 wrong: the class loses top-1
        reference["top1"][i] = fp32["predictions"]["top1"][i] = labels[i]
        reference["confidence"][i] = 0.9
    top1 = list(reference["top1"])
    held = list(reference["confidence"])
    for i in range(FLIPPED):
        top1[i] = (labels[i] + 1) % 10
        held[i] = round(0.9 - 0.05 * (i + 1), 4)
    int8["predictions"] = {"top1": top1, "confidence": [0.5] * len(top1), "reference_class_confidence": held}
    int8["accuracy"]["agreement"] = float(np.mean(np.array(top1) == np.array(reference["top1"])))
    report["budgets"] = {"int8": {"max_top1_drop": 100.0, "min_agreement": 0.98}}
    report["precision_settings"] = {
        **report.get("precision_settings", {}),
        "max_fp32_layers": 0,
        "calibration": "minmax",
    }
    report["gate"] = {"enabled": True, "failures": []}
    return report


def render(report: dict, folder: Path, crops: Path | None = None) -> tuple[str, str]:
    from pipeline.stages.report import render_report

    render_report(report, folder, crops)
    return (folder / "report.html").read_text(), (folder / "report.md").read_text()


def assert_self_contained(page: str) -> None:
    assert not re.search(r"https?://", page), re.search(r".{60}https?://.{60}", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    for source in re.findall(r'src="([^"]*)"', page):
        assert source.startswith("data:image/"), source[:60]


def test_validate_records_per_image_answers(tiny_cpu_bundle):
    report = built_report(tiny_cpu_bundle)
    images = report["evaluation_images"]
    assert len(report["per_image"]["labels"]) == images and len(report["class_names"]) == 10
    fp32 = next(r for r in report["results"] if r["precision"] == "fp32")
    assert fp32["predictions"]["top1"] == report["per_image"]["reference"]["top1"]
    for result in report["results"]:
        predictions = result["predictions"]
        assert {len(v) for v in predictions.values()} == {images}
        assert all(0.0 <= c <= 1.0 for c in predictions["confidence"])
        agree = np.mean(np.array(predictions["top1"]) == np.array(report["per_image"]["reference"]["top1"]))
        assert agree == pytest.approx(result["accuracy"]["agreement"])
        top1 = np.mean(np.array(predictions["top1"]) == np.array(report["per_image"]["labels"]))
        assert top1 == pytest.approx(result["accuracy"]["top1"])


def test_passing_report_puts_the_verdict_first_in_tables(tiny_cpu_bundle, tmp_path):
    report = built_report(tiny_cpu_bundle)
    page, markdown = render(report, tmp_path, tiny_cpu_bundle / BUNDLE / "reference/eval_crops.npy")
    banner = page.index('<section class="banner pass" id="verdict">')
    assert banner < page.index("<table>") < page.index('id="summary"')  # the verdict comes before anything else
    assert "PASSED: every budget met" in page and "Chosen precision: <strong>" in page
    assert "<th>agreement %</th>" in page and '<td class="l">int8</td>' in page
    assert 'id="changed"' in page and "Top-1 per class" in page
    assert "<pre>" not in page  # no Markdown pasted as text
    assert_self_contained(page)
    assert markdown.index("> **PASSED: every budget met**") < markdown.index("## Accuracy and speed")
    assert "| precision | verdict |" in markdown and "| int8 | pass |" in markdown and "| class | images |" in markdown


def test_failing_report_says_what_failed_what_to_change_and_which_images_changed(tiny_cpu_bundle, tmp_path):
    report = failing_report(built_report(tiny_cpu_bundle))
    page, markdown = render(report, tmp_path, tiny_cpu_bundle / BUNDLE / "reference/eval_crops.npy")
    banner = page[page.index('<section class="banner fail"') : page.index("</section>")]
    assert "FAILED: int8 misses its accuracy budget" in banner
    assert "top-1 agreement" in banner and "below budget 0.9800" in banner
    assert (
        "<code>[budgets.int8] min_agreement</code>" in banner and "<code>[precision] max_fp32_layers</code>" in banner
    )
    assert "<code>[precision] calibration</code>" in banner
    assert '<span class="pill fail">FAIL</span>' in banner
    assert f"int8: {FLIPPED} of {report['evaluation_images']} answers differ from FP32" in page
    section = page[page.index('<h3 id="changed-int8">') :]
    section = section[: re.search(r"<h[23] ", section[4:]).start() + 4]
    cards = re.findall(r'<div class="card[^"]*">\s*<img src="data:image/jpeg;base64,', section)
    assert len(cards) == FLIPPED  # every changed image, with its thumbnail
    shown = [int(i) for i in re.findall(r"<div>#(\d+) · true:", section)]
    assert shown == list(range(FLIPPED - 1, -1, -1))  # the most confidence lost first
    assert "FP32 \\ int8" in page  # the confusion of flipped answers
    assert '<td class="worse">' in page and "class=&#34;" not in page  # classes that lost top-1 are marked
    assert_self_contained(page)
    assert "> **FAILED: int8 misses its accuracy budget**" in markdown and "### What to do" in markdown
    assert f"| #{FLIPPED - 1} |" in markdown and "| int8 | **FAIL** |" in markdown


def test_gallery_is_capped_and_works_without_crops(tiny_cpu_bundle, tmp_path):
    from pipeline.report.views import GALLERY_SIZE, what_changed

    report = built_report(tiny_cpu_bundle)
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    reference = report["per_image"]["reference"]["top1"]
    int8["predictions"]["top1"] = [(c + 1) % 10 for c in reference]  # every answer changed
    changes = next(c for c in what_changed(report, None).changes if c.precision == "int8")
    assert changes.changed == len(reference) and len(changes.gallery) == min(GALLERY_SIZE, len(reference))
    assert all(item.thumbnail is None for item in changes.gallery) and "no thumbnails" in changes.gallery_note


def test_report_without_per_image_data_still_renders(tiny_cpu_bundle, tmp_path):
    report = built_report(tiny_cpu_bundle)
    for key in ("per_image", "class_names", "precision_settings", "evaluation_set_sha256"):
        report.pop(key)
    for result in report["results"]:
        result.pop("predictions")
    page, markdown = render(report, tmp_path)
    assert "no per-image predictions" in page and "no per-image predictions" in markdown
    assert '<section class="banner pass"' in page


def test_plots_have_stated_ranges_and_captions(tiny_cpu_bundle):
    from pipeline.report.plots import make_figures

    figures = {f.name: f for f in make_figures(failing_report(built_report(tiny_cpu_bundle)))}
    assert {"accuracy", "latency"} <= set(figures)
    assert (
        "0-100% axis" in figures["accuracy"].caption and "-100% axis" in figures["accuracy"].caption.split("Right:")[1]
    )
    assert "1st-99th percentile" in figures["latency"].caption
    for figure in figures.values():
        assert figure.png.startswith(b"\x89PNG") and figure.caption


def test_latency_rule_needs_both_the_relative_and_the_absolute_slowdown():
    from pipeline.report.compare import LatencyRule

    rule = LatencyRule(max_slowdown=0.10, min_slowdown_ms=0.1)
    assert rule.regressed(1.0, 1.2)  # +20%, +0.2 ms
    assert not rule.regressed(0.3, 0.39)  # +30% but 0.09 ms: noise on a tiny number
    assert not rule.regressed(100.0, 105.0)  # +5 ms but 5%
    assert not rule.regressed(1.0, 0.5)


def test_report_compare_passes_on_itself_and_fails_on_regression(tiny_cpu_bundle, tmp_path):
    bundle = tiny_cpu_bundle / BUNDLE
    same = run_cli(tmp_path, "report", str(bundle), str(bundle), "--output", str(tmp_path / "same.md"))
    assert same.returncode == 0, same.stderr
    assert "no regression" in same.stdout and "# No regression" in (tmp_path / "same.md").read_text()
    baseline = built_report(tiny_cpu_bundle)
    worse = copy.deepcopy(baseline)
    for report, top1 in (
        (baseline, 0.9),
        (worse, 0.4),
    ):  # 50 points lost; fp16 has no budget in the tiny project: Budget()'s 1 point applies
        next(r for r in report["results"] if r["precision"] == "fp16")["accuracy"]["top1"] = top1
    fp32 = next(r for r in worse["results"] if r["precision"] == "fp32")
    for lat in fp32["latency"]:
        lat["p50_ms"] = lat["p50_ms"] * 2 + 1
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    result = run_cli(tmp_path, "report", "worse.json", "baseline.json", "-o", "cmp.md")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "regression against baseline.json" in errors[0] and "(and 1 more)" in errors[0]
    written = (tmp_path / "cmp.md").read_text()
    assert "# REGRESSED" in written and "fp16: top-1 drop 50.00 points exceeds budget 1.00" in written
    assert "fp32: p50 at batch 1" in written and "| fp32 |" in written
    bad = run_cli(tmp_path, "report", "worse.json", str(tmp_path / "nope.json"))
    assert bad.returncode == 1 and "nope.json: no report.json here" in bad.stderr


def test_compare_judges_answers_image_by_image_and_skips_latency_across_machines(tiny_cpu_bundle):
    from pipeline.report.compare import compare_reports

    baseline = built_report(tiny_cpu_bundle)
    candidate = failing_report(baseline)
    candidate["host"] = {**candidate["host"], "cpu": "another CPU"}
    for lat in next(r for r in candidate["results"] if r["precision"] == "fp32")["latency"]:
        lat["p50_ms"] *= 10
    comparison = compare_reports(candidate, baseline)
    int8 = next(row for row in comparison.rows if row.precision == "int8")
    before, after = (
        next(r for r in rep["results"] if r["precision"] == "int8")["predictions"]["top1"]
        for rep in (baseline, candidate)
    )
    assert int8.agreement == pytest.approx(np.mean(np.array(before) == np.array(after))) and int8.agreement < 0.98
    assert [m for m in comparison.regressions if m.startswith("int8: agreement with the baseline")]
    assert not [m for m in comparison.regressions if "p50" in m]
    assert any(n.startswith("latency not compared") for n in comparison.notes)


def test_report_command_rerenders_an_older_bundle_with_class_names_from_the_manifest(tiny_cpu_bundle, tmp_path):
    from pipeline.stages.bundle import update_manifest

    copy_dir = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, copy_dir)
    report = built_report(tiny_cpu_bundle)
    names = report.pop("class_names")
    (copy_dir / "report/report.json").write_text(json.dumps(report))
    update_manifest(copy_dir, ["report/report.json"])
    result = run_cli(tmp_path, "report", str(copy_dir))
    assert result.returncode == 0, result.stderr
    verify_bundle(copy_dir)
    page = (copy_dir / "report/report.html").read_text()
    assert 'id="verdict"' in page and "data:image/png;base64," in page
    assert f'<td class="l">{names[0]}</td>' in page  # the per-class table names the classes
    assert_self_contained(page)


def test_device_finish_records_the_same_per_image_answers(tiny_cpu_bundle, tmp_path, monkeypatch):
    """validate_on_device with ONNX Runtime standing in for TensorRT: the engines' rows carry the
    same per-image fields as the host's, against the host's FP32 logits."""
    import types

    import pipeline.backends.tensorrt as tensorrt
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.config import load_config
    from pipeline.finish import validate_on_device
    from pipeline.stages.bundle import read_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, bundle)
    monkeypatch.setattr(tensorrt, "TensorRTRunner", lambda path, trt, name: OrtRunner(name, path))
    engines = [{"precision": p, "path": f"models/model.{p}.onnx", "profile": {"max": 4}} for p in ("fp16", "int8-trt")]
    config = load_config(tiny_cpu_bundle / "pipeline.toml")
    report = validate_on_device(
        config, bundle, read_manifest(bundle), engines, types.SimpleNamespace(version="10.3"), False
    )
    host = built_report(tiny_cpu_bundle)
    assert report["per_image"] == host["per_image"] and report["class_names"] == host["class_names"]
    for result in report["results"]:
        assert set(result["predictions"]) == {"top1", "confidence", "reference_class_confidence"}
        assert len(result["predictions"]["top1"]) == report["evaluation_images"]
    page, _ = render(report, tmp_path / "report", bundle / "reference/eval_crops.npy")
    assert "<th>fp16</th>" in page and "<th>int8-trt</th>" in page and 'id="verdict"' in page  # per-class columns


def test_device_finish_times_its_engines_interleaved(tiny_cpu_bundle, tmp_path, monkeypatch):
    """validate_on_device with recording runners standing in for TensorRT: after each engine's
    warm-up, every round times one call of each engine, and the choice reads those samples."""
    import types

    import pipeline.backends.tensorrt as tensorrt
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.backends.timing import TimedCall
    from pipeline.config import load_config
    from pipeline.finish import validate_on_device
    from pipeline.report.gate import choose_precision, result_of, samples_at
    from pipeline.stages.bundle import read_manifest

    calls: list = []

    class Recording(OrtRunner):
        def timed_call(self, images):
            inner = super().timed_call(images)
            return TimedCall(lambda: (calls.append((self.name, len(images))), inner.call()))

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, bundle)
    monkeypatch.setattr(tensorrt, "TensorRTRunner", lambda path, trt, name: Recording(name, path))
    engines = [
        {"precision": p, "path": f"models/model.{p}.onnx", "profile": {"max": 4}} for p in ("fp32", "fp16", "int8-trt")
    ]
    config = load_config(tiny_cpu_bundle / "pipeline.toml")
    report = validate_on_device(
        config, bundle, read_manifest(bundle), engines, types.SimpleNamespace(version="10.3"), False
    )
    vc, names = config.validate_, ["fp32", "fp16", "int8-trt"]
    expected = []
    for batch in vc.batch_sizes:
        expected += [(n, batch) for n in names for _ in range(vc.warmup)] + [(n, batch) for n in names] * vc.runs
    assert calls == expected
    assert all(len(samples_at(result_of(report, n), 1)) == vc.runs for n in names)  # what the choice reads
    assert choose_precision(report).precision in names


def test_the_fp16_outside_tensorrt_graph_is_judged_by_the_int8_trt_budget(tiny_cpu_bundle):
    from pipeline.names import with_variants
    from pipeline.report.gate import check_gate

    report = built_report(tiny_cpu_bundle)
    assert "int8-trt-fp16" in {r["precision"] for r in report["results"]}
    budget = {"max_top1_drop": 100.0, "min_agreement": 0.99}
    report["budgets"] = with_variants({"int8-trt": budget})
    assert report["budgets"] == {"int8-trt": budget, "int8-trt-fp16": budget}
    variant = next(r for r in report["results"] if r["precision"] == "int8-trt-fp16")
    variant["accuracy"]["agreement"] = 0.5
    assert "int8-trt-fp16" in {f.precision for f in check_gate(report)}


def test_a_failing_graph_variant_is_advised_through_its_precisions_keys(tiny_cpu_bundle):
    """int8-trt-fp16 is judged by int8-trt's budget and ships with it: the advice names only keys
    pipeline.toml has ([budgets.int8-trt], "int8-trt" in the target's precisions)."""
    from pipeline.report.views import make_verdict

    report = json.loads((tiny_cpu_bundle / BUNDLE / "report/report.json").read_text())
    assert any(r["precision"] == "int8-trt-fp16" for r in report["results"])
    for graph in ("int8-trt", "int8-trt-fp16"):  # the report carries the variant's budget (its precision's)
        report["budgets"][graph] = {"max_top1_drop": 100.0, "min_agreement": 0.99}
    for result in report["results"]:
        if result["precision"] in ("int8-trt", "int8-trt-fp16"):
            result["accuracy"]["agreement"] = 0.5  # both graphs miss the budget
    actions = " ".join(make_verdict(report).actions)
    assert "`[budgets.int8-trt] min_agreement`" in actions and "(int8-trt-fp16)" in actions
    assert "budgets.int8-trt-fp16" not in actions and '"int8-trt-fp16"' not in actions
    assert 'remove "int8-trt" from `[targets.cpu] precisions`' in actions
