"""The cpu target's two runtimes: the OpenVINO runner, graphs a runtime cannot open, the choice
of the runtime per precision, and a build that records it in the bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

from conftest import run_cli
from pipeline.metrics import Budget

pytest.importorskip("openvino")


def _graph_with(op: str, domain: str, path: Path) -> Path:
    """A classifier-shaped graph (images -> logits of 4 classes) through one `op` node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),  # N x 3
        helper.make_node("Pad", ["flat", "pads"], ["padded"]),  # N x 4
        helper.make_node("MatMul", ["padded", "w"], ["hidden"]),
    ]
    # `op` on N x 2 x 2 matrices (Inverse needs square ones), then back to N x 4
    nodes += [
        helper.make_node("Reshape", ["hidden", "square"], ["squares"]),
        helper.make_node(op or "Identity", ["squares"], ["result"], domain=domain if op else ""),
        helper.make_node("Reshape", ["result", "flat4"], ["logits"]),
    ]
    inits = [
        weight,
        numpy_helper.from_array(np.array([-1, 3], np.int64), "shape"),
        numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array([-1, 2, 2], np.int64), "square"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "flat4"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_openvino_runner_computes_what_onnx_runtime_computes(tmp_path):
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.backends.openvino import OpenVinoRunner, OpenVinoSettings

    path = _graph_with("Relu", "", tmp_path / "relu.onnx")
    images = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    with OpenVinoRunner("fp32", path, OpenVinoSettings(threads=1)) as ov, OrtRunner("fp32", path) as ort:
        np.testing.assert_allclose(ov.infer(images), ort.infer(images), atol=1e-5)
        assert ov.infer(images[:1]).shape == (1, 4)  # the batch stays dynamic
        described = ov.describe()
        assert (
            described["backend"] == "openvino"
            and described["threads_used"] == 1
            and described["inference_precision"] == "f32"
        )
        assert len(ov.time_batch(images[:1], warmup=1, runs=3)) == 3


def test_a_graph_openvino_cannot_compile_is_skipped_there_with_one_line(tmp_path):
    """com.microsoft::Inverse: ONNX Runtime runs it, OpenVINO has no conversion rule for it."""
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.backends.openvino import OpenVinoSettings, open_runner
    from pipeline.stages.validate import EvaluationSet, Timing, validate_all

    path = _graph_with("Inverse", "com.microsoft", tmp_path / "inverse.onnx")
    images = np.random.default_rng(2).normal(size=(4, 3, 8, 8)).astype(np.float32)
    with OrtRunner("fp32", _graph_with("", "", tmp_path / "plain.onnx")) as reference:
        evaluation = EvaluationSet(images, np.zeros(4, np.int64), reference.infer(images))
    runtimes = {
        "onnxruntime": {"int8": lambda: OrtRunner("int8", path)},
        "openvino": {"int8": lambda: open_runner("int8", path, OpenVinoSettings())},
    }
    skipped: list = []
    results = validate_all(runtimes, evaluation, Timing((1,), warmup=0, runs=2), progress=False, skipped=skipped)
    assert [(r.precision, r.runtime) for r in results] == [("int8", "onnxruntime")]
    assert [(s.precision, s.runtime) for s in skipped] == [("int8", "openvino")]
    assert "\n" not in skipped[0].reason and "Inverse" in skipped[0].reason


def _result(precision: str, runtime: str, p50: float, spread: float, agreement: float = 1.0, top1: float = 0.9) -> dict:
    samples = list(np.linspace(p50 - spread, p50 + spread, 9))
    return {
        "precision": precision,
        "runtime": runtime,
        "accuracy": {"top1": top1, "agreement": agreement},
        "latency": [{"batch": 1, "p50_ms": p50}],
        "samples_ms": {"1": samples},
        "runner": {runtime: "1.0"},
    }


BUDGETS = {"int8": Budget(max_top1_drop=0.3, min_agreement=0.99)}


def _choose(results: List[dict], setting: str = "auto", skipped: Optional[List[Dict[str, str]]] = None):
    from pipeline.stages.runtime_choice import choose_runtimes

    return choose_runtimes(results, skipped or [], setting, BUDGETS.get, reference_top1=0.9)


def test_auto_ships_the_runtime_faster_by_more_than_the_spread():
    choices = _choose([_result("int8", "onnxruntime", 10.0, 0.5), _result("int8", "openvino", 6.0, 0.5)])
    assert choices["int8"].runtime == "openvino" and "faster" in choices["int8"].reason
    choices = _choose([_result("int8", "onnxruntime", 5.0, 0.5), _result("int8", "openvino", 6.0, 0.5)])
    assert choices["int8"].runtime == "onnxruntime" and "faster" in choices["int8"].reason


def test_the_shipped_results_keep_the_order_the_precisions_were_measured_in():
    """fp32 on OpenVINO and int8 on ONNX Runtime: the tables still list fp32 before int8."""
    from pipeline.stages.runtime_choice import shipped_results

    results = [
        _result("fp32", "onnxruntime", 10.0, 0.5),
        _result("int8", "onnxruntime", 5.0, 0.5),
        _result("fp32", "openvino", 6.0, 0.5),
        _result("int8", "openvino", 7.0, 0.5),
    ]
    choices = _choose(results)
    assert (choices["fp32"].runtime, choices["int8"].runtime) == ("openvino", "onnxruntime")
    assert [(r["precision"], r["runtime"]) for r in shipped_results(results, choices)] == [
        ("fp32", "openvino"),
        ("int8", "onnxruntime"),
    ]


def test_auto_keeps_onnx_runtime_when_openvino_is_within_the_spread():
    choices = _choose([_result("int8", "onnxruntime", 10.0, 2.0), _result("int8", "openvino", 9.0, 2.0)])
    assert choices["int8"].runtime == "onnxruntime" and "within" in choices["int8"].reason


def test_a_faster_runtime_that_misses_the_budget_there_does_not_ship():
    choices = _choose(
        [_result("int8", "onnxruntime", 10.0, 0.1), _result("int8", "openvino", 5.0, 0.1, agreement=0.97)]
    )
    assert choices["int8"].runtime == "onnxruntime"
    assert "openvino misses the accuracy budget" in choices["int8"].reason
    measured = {m.runtime: m for m in choices["int8"].measured}
    assert not measured["openvino"].meets_budget and measured["onnxruntime"].meets_budget


def test_a_named_runtime_ships_unless_it_cannot_run_the_graph():
    both = [_result("int8", "onnxruntime", 5.0, 0.1), _result("int8", "openvino", 9.0, 0.1)]
    assert _choose(both, "openvino")["int8"].runtime == "openvino"
    only_ort = [_result("int8", "onnxruntime", 5.0, 0.1)]
    choice = _choose(
        only_ort, "openvino", [{"precision": "int8", "runtime": "openvino", "reason": "RuntimeError: no rule"}]
    )["int8"]
    assert choice.runtime == "onnxruntime" and "openvino cannot run it (RuntimeError: no rule)" in choice.reason


def test_the_torch_baseline_is_no_candidate():
    choices = _choose([_result("fp32-torch", "torch", 1.0, 0.1), _result("fp32", "onnxruntime", 2.0, 0.1)])
    assert set(choices) == {"fp32"}


def test_an_auto_build_records_the_runtime_of_each_precision(tiny_project):
    config = tiny_project / "pipeline.toml"
    config.write_text(
        config.read_text().replace(
            'precisions = ["fp32", "fp16", "int8", "int8-trt"]', 'precisions = ["fp32", "int8"]\nruntime = "auto"'
        )
    )
    result = run_cli(tiny_project, "build", "--target", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    bundle = tiny_project / "engines" / "tiny-cpu"
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report" / "report.json").read_text())
    assert manifest["format_version"] == 3
    assert set(report["runtimes"]) == {"fp32", "int8"}
    for precision, choice in report["runtimes"].items():
        session = manifest["session"][precision]
        assert session["runtime"] == choice["runtime"]
        assert {m["runtime"] for m in choice["measured"]} | set(choice["skipped"]) == {"onnxruntime", "openvino"}
        shipped = next(r for r in report["results"] if r["precision"] == precision)
        assert shipped["runtime"] == choice["runtime"]  # the report's row is the runner that ships
        optimized = manifest["precisions"][precision]["optimized"]
        assert (optimized is None) == (choice["runtime"] == "openvino")
    assert "CPU runtime per precision" in (bundle / "report" / "report.md").read_text()
    assert run_cli(tiny_project, "verify", str(bundle)).returncode == 0


def test_a_graph_variant_is_judged_by_its_precisions_budget():
    """int8-trt-fp16 has no budget of its own: int8-trt's decides where it ships."""
    from types import SimpleNamespace

    from pipeline.stages.runtime_choice import runtime_choices

    results = [
        _result("fp32", "onnxruntime", 10.0, 0.1),
        _result("fp32", "openvino", 10.0, 0.1),
        _result("int8-trt-fp16", "onnxruntime", 9.0, 0.1),
        _result("int8-trt-fp16", "openvino", 5.0, 0.1, agreement=0.9),
    ]
    config = SimpleNamespace(budgets={"int8-trt": Budget(max_top1_drop=0.3, min_agreement=0.99)})
    target = SimpleNamespace(backend="onnxruntime", runtime="auto")
    choice = runtime_choices(config, target, results, [])["int8-trt-fp16"]
    assert choice.runtime == "onnxruntime" and "openvino misses the accuracy budget" in choice.reason
