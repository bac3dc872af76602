"""Calibration methods on the tiny VT, and the mixed-precision fallback policy.

The fallback's policy (order, stop rule, `max_fp32_layers`) is tested with an injected scorer:
argmax flips of an untrained model depend on the CPU's INT8 kernels (AVX2 vs AVX-512 VNNI
round differently), so no assertion here rests on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data import normalize
from pipeline.metrics import Budget
from pipeline.search.fallback import FallbackPolicy, SearchProbe, keep_costliest_in_fp32, quantizable_groups
from pipeline.stages.calibrate import calibrate, load_tensors_data, ranges_to_json, save_tensors_data
from pipeline.stages.precision import CalibrationScorer, Int8Job, int8_with_fallback


@pytest.fixture(scope="module")
def calibration_inputs(tiny_cpu_bundle):
    config = load_config(tiny_cpu_bundle / "pipeline.toml")
    fp32 = next((tiny_cpu_bundle / ".cache/simplify").glob("*/model.fp32.onnx"))
    crops = np.load(next((tiny_cpu_bundle / ".cache/data").glob("*/calib_crops.npy")))
    labels = np.load(next((tiny_cpu_bundle / ".cache/data").glob("*/calib_labels.npy")))
    return config, fp32, np.ascontiguousarray(normalize(crops, config.preprocessing.spec())), labels


def with_method(config, method: str):
    return config.model_copy(update={"precision": config.precision.model_copy(update={"calibration": method})})


def test_entropy_and_percentile_differ_from_minmax(calibration_inputs):
    config, fp32, images, _ = calibration_inputs
    ranges = {
        m: ranges_to_json(calibrate(fp32, images, with_method(config, m), progress=False))
        for m in ("minmax", "entropy", "percentile")
    }
    names = sorted(ranges["minmax"])
    assert names == sorted(ranges["entropy"]) == sorted(ranges["percentile"])
    minmax_high = np.array([ranges["minmax"][n][1] for n in names])
    for method in ("entropy", "percentile"):
        high = np.array([ranges[method][n][1] for n in names])
        assert np.all(high <= minmax_high + 1e-6)  # both clip, never widen
        narrower = np.sum(high < minmax_high - 1e-6)
        assert narrower >= len(names) // 4, f"{method} clipped only {narrower} of {len(names)} tensors"


def test_calibration_streams_in_chunks_and_reports_progress(calibration_inputs, monkeypatch):
    """Photos go through the calibrator a chunk at a time (its memory is one chunk's activations);
    the ranges of a streamed pass cover the same tensors, and every chunk is reported."""
    from pipeline.stages import calibrate as calibrate_module

    config, fp32, images, _ = calibration_inputs
    images = np.concatenate([images] * 3)  # more photos than one chunk of 8
    monkeypatch.setattr(calibrate_module, "CALIBRATION_CHUNK", 8)
    steps = []
    streamed = ranges_to_json(calibrate(fp32, images, with_method(config, "minmax"), progress=steps.append))
    assert [s.done for s in steps] == list(range(8, len(images), 8)) + [len(images)] and steps[-1].finished
    monkeypatch.setattr(calibrate_module, "CALIBRATION_CHUNK", len(images))
    whole = ranges_to_json(calibrate(fp32, images, with_method(config, "minmax")))
    assert sorted(streamed) == sorted(whole)
    for name in whole:  # minmax merges exactly
        np.testing.assert_allclose(streamed[name], whole[name], rtol=1e-6)


def test_progress_steps_print_one_line_each_without_a_terminal(capsys):
    from pipeline.cli import ProgressLines
    from pipeline.progress import Step

    lines = ProgressLines(live=False)
    lines.step(Step("int8: rank", 3, 41, "/vt.0/tokenizer"))
    lines.step(Step("calibrating", 64, 500))
    err = capsys.readouterr().err.splitlines()
    assert err == ["    int8: rank: 3/41 (/vt.0/tokenizer)", "    calibrating: 64/500"]


def test_calibration_is_saved_losslessly(calibration_inputs, tmp_path):
    config, fp32, images, _ = calibration_inputs
    tensors = calibrate(fp32, images, config, progress=False)
    save_tensors_data(tensors, tmp_path / "tensors.npz")
    loaded = load_tensors_data(tmp_path / "tensors.npz")
    assert loaded.calibration_method == tensors.calibration_method
    assert sorted(loaded.data) == sorted(tensors.data)
    for name, data in tensors.data.items():
        for attr in ("lowest", "highest", "hist", "hist_edges"):
            if hasattr(data, attr):
                np.testing.assert_array_equal(
                    np.asarray(getattr(loaded.data[name], attr)), np.asarray(getattr(data, attr))
                )


# --- the fallback policy, with an injected writer and scorer -----------------------------------

COSTS = {"/stem": 0.004, "/vt.0/tokenizer": 0.03, "/vt.0/transformer": 0.01, "/head": 0.001}
GROUPS = {module: [f"{module}/MatMul", f"{module}/Add"] for module in COSTS}


class FakeGraphs:
    """A graph 'file' records which nodes stay FP32; its agreement is 1 - the cost of the rest."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []

    def write(self, path: Path, keep_fp32: list[str]) -> None:
        self.writes.append(list(keep_fp32))
        path.write_text(json.dumps(keep_fp32))

    @staticmethod
    def score(path: Path) -> tuple[float, float]:
        kept = {node.rsplit("/", 1)[0] for node in json.loads(path.read_text())}
        lost = sum(cost for module, cost in COSTS.items() if module not in kept)
        return 1.0 - lost, 100.0 * lost / 2


def run_policy(tmp_path, budget, max_layers):
    graphs = FakeGraphs()
    outcome = keep_costliest_in_fp32(
        "int8", tmp_path / "int8.onnx", GROUPS, (graphs.write, graphs.score), FallbackPolicy(budget, max_layers)
    )
    return outcome, graphs


def test_fallback_keeps_nothing_when_the_budget_is_met(tmp_path):
    outcome, graphs = run_policy(tmp_path, Budget(max_top1_drop=5.0, min_agreement=0.9), 8)
    assert outcome.fp32_layers == [] and outcome.sensitivity == [] and graphs.writes == [[]]
    assert outcome.agreement == pytest.approx(1 - sum(COSTS.values()))


def test_fallback_adds_the_costliest_modules_until_the_budget_is_met(tmp_path):
    # Needs the tokenizer (0.03) and the transformer (0.01) back in FP32: agreement 0.995 > 0.99.
    outcome, _ = run_policy(tmp_path, Budget(max_top1_drop=5.0, min_agreement=0.99), 8)
    assert [item["module"] for item in outcome.sensitivity] == sorted(COSTS, key=COSTS.get, reverse=True)
    gains = [item["gain"] for item in outcome.sensitivity]
    assert gains == sorted(gains, reverse=True)
    assert outcome.fp32_layers == ["/vt.0/tokenizer", "/vt.0/transformer"]
    assert outcome.agreement == pytest.approx(1 - 0.004 - 0.001)
    kept = json.loads((tmp_path / "int8.onnx").read_text())
    assert sorted(kept) == sorted(GROUPS["/vt.0/tokenizer"] + GROUPS["/vt.0/transformer"])


def test_fallback_stops_at_max_fp32_layers(tmp_path):
    outcome, _ = run_policy(tmp_path, Budget(max_top1_drop=0.0, min_agreement=1.0), 2)
    assert outcome.fp32_layers == ["/vt.0/tokenizer", "/vt.0/transformer"]  # budget still missed
    assert outcome.agreement < 1.0


def test_the_search_probes_each_module_once_then_bisects(tmp_path):
    """The search's cost in probes, not seconds: one ranking probe per module, then the longest
    prefix allowed and a bisection (so a change that multiplies the probes fails here)."""
    outcome, graphs = run_policy(tmp_path, Budget(max_top1_drop=5.0, min_agreement=0.99), 8)
    assert outcome.probes == {"rank": len(GROUPS), "confirm": 3}  # 4 modules, then 2, then 1
    assert len(graphs.writes) == 1 + len(GROUPS) + 3
    many = {f"/block.{i}": [f"/block.{i}/Conv"] for i in range(40)}
    costs = {module: 0.001 * (i + 1) for i, module in enumerate(many)}

    def score(path: Path) -> tuple:
        kept = {node.rsplit("/", 1)[0] for node in json.loads(path.read_text())}
        lost = sum(cost for module, cost in costs.items() if module not in kept)
        return 1.0 - lost, 0.0, lost

    write = lambda path, keep: path.write_text(json.dumps(keep))  # noqa: E731
    outcome = keep_costliest_in_fp32(
        "int8", tmp_path / "g.onnx", many, (write, score), FallbackPolicy(Budget(min_agreement=0.6), 12)
    )
    assert outcome.probes["rank"] == 40 and outcome.probes["confirm"] <= 1 + 4  # 12 allowed: log2(12) rounds up to 4
    assert outcome.fp32_layers == [f"/block.{i}" for i in range(39, 39 - len(outcome.fp32_layers), -1)]


def test_a_priced_search_keeps_the_modules_that_remove_most_error_per_millisecond(tmp_path):
    """With a profile (injected: module -> ms keeping it in FP32 costs), the order is logit error
    removed per millisecond; a module that removes no error is never kept."""
    errors = {"/conv.big": 0.004, "/conv.small": 0.002, "/matmul": 0.0015, "/useless": 0.0}
    cost_ms = {"/conv.big": 2.0, "/conv.small": 0.1, "/matmul": -0.05, "/useless": 0.0}
    groups = {module: [f"{module}/Conv"] for module in errors}

    def score(path: Path) -> tuple:
        kept = {node.rsplit("/", 1)[0] for node in json.loads(path.read_text())}
        lost = sum(e for module, e in errors.items() if module not in kept)
        return 1.0 - 10 * lost, 0.0, lost

    write = lambda path, keep: path.write_text(json.dumps(keep))  # noqa: E731
    priced = []
    probe = SearchProbe(write, score, price=lambda path, g: priced.append(sorted(g)) or cost_ms)
    outcome = keep_costliest_in_fp32(
        "int8", tmp_path / "g.onnx", groups, probe, FallbackPolicy(Budget(min_agreement=0.96), 4)
    )
    assert priced == [sorted(groups)]  # one profile of the fully quantized graph prices every module
    # /matmul costs nothing (INT8 is slower there): first; then /conv.small (0.02/ms) before /conv.big (0.002/ms)
    assert [item["module"] for item in outcome.sensitivity] == ["/matmul", "/conv.small", "/conv.big", "/useless"]
    # prices as ranked: rounded to steps of 2 % of what keeping every module costs (2.1 ms)
    assert [item["cost_ms"] for item in outcome.sensitivity] == [-0.042, 0.084, 2.016, 0.0]
    assert outcome.fp32_layers == ["/matmul", "/conv.small"]  # agreement 1 - 10 * 0.004 = 0.96
    unpriced = keep_costliest_in_fp32(
        "int8", tmp_path / "h.onnx", groups, (write, score), FallbackPolicy(Budget(min_agreement=0.96), 4)
    )
    assert unpriced.fp32_layers == ["/conv.big"]  # by error alone: the biggest first, one is enough
    everything = keep_costliest_in_fp32(
        "int8", tmp_path / "i.onnx", groups, (write, score), FallbackPolicy(Budget(min_agreement=1.0), 4)
    )
    assert "/useless" not in everything.fp32_layers and len(everything.fp32_layers) == 3


@pytest.mark.parametrize("runtime, flavour", [("onnxruntime", "int8"), ("openvino", "int8-trt")])
def test_module_costs_come_from_one_profile_of_each_graph(calibration_inputs, tmp_path, runtime, flavour):
    """A runtime's per-node profile of the FP32 and the fully quantized graph prices modules by name."""
    import onnx

    from pipeline.graphs.quantize import fallback_ops, quantize_graph
    from pipeline.search.node_cost import NODE_PROFILERS, Profiling, module_costs

    if runtime == "openvino":
        pytest.importorskip("openvino")
    config, fp32, images, _ = calibration_inputs
    tensors = calibrate(fp32, images, config, progress=False)
    int8 = tmp_path / "int8.onnx"
    quantize_graph(fp32, int8, tensors, flavour)
    graph = onnx.load(str(fp32)).graph
    nodes = NODE_PROFILERS[runtime](fp32, images, runs=3)
    assert nodes and all(ms >= 0 for ms in nodes.values())
    if runtime == "openvino":  # each layer is found among the nodes (ONNX Runtime names its fused nodes anew)
        assert set(nodes) <= {node.name for node in graph.node}
    groups: dict = {}
    for node in graph.node:
        if node.op_type in fallback_ops(flavour):
            groups.setdefault(node.name.rsplit("/", 1)[0], []).append(node.name)
    costs = module_costs(fp32, int8, groups, images, Profiling(runtime, runs=3))
    assert set(costs) == set(groups)
    assert sum(c.fp32_ms for c in costs.values()) > 0 and sum(c.int8_ms for c in costs.values()) > 0


def test_openvino_layers_are_found_among_the_onnx_nodes():
    from pipeline.search.node_cost import onnx_node_of

    names = {"/stem/stem.0/Conv", "/a/x_QuantizeLinear", "/fc/Gemm"}
    writers = {"logits": "/fc/Gemm"}
    assert onnx_node_of("/stem/stem.0/Conv/WithoutBiases", names, writers) == "/stem/stem.0/Conv"
    assert onnx_node_of("/a/x_QuantizeLinear/DequantizationSubtract", names, writers) == "/a/x_QuantizeLinear"
    assert onnx_node_of("logits", names, writers) == "/fc/Gemm"
    assert onnx_node_of("images_abcd_acdb_/stem/stem.0/Conv/WithoutBiases", names, writers) is None  # a Reorder
    assert onnx_node_of("/stem", names, writers) is None


def test_the_search_stops_where_the_budget_cannot_be_reached_and_says_so(tmp_path):
    outcome, graphs = run_policy(tmp_path, Budget(max_top1_drop=0.0, min_agreement=1.0), 2)
    assert outcome.probes == {"rank": len(GROUPS), "confirm": 1}
    assert outcome.notes == ["budget not reached with the 2 costliest module(s) in FP32 (the most allowed)"]


def test_fallback_with_zero_layers_allowed_only_reports(tmp_path):
    outcome, graphs = run_policy(tmp_path, Budget(max_top1_drop=0.0, min_agreement=1.0), 0)
    assert outcome.fp32_layers == [] and graphs.writes == [[]]


def test_fallback_wiring_on_the_tiny_vt(calibration_inputs, tmp_path, monkeypatch):
    """The real writer and scorer: module paths survive simplification, and the kept modules are
    excluded from quantization (shape checks only, no assertion on which answers flip)."""
    import onnx

    config, fp32, images, labels = calibration_inputs
    export_nodes = json.loads(next((fp32.parents[2] / "export").glob("*/nodes.json")).read_text())
    from pipeline.graphs.quantize import fallback_ops

    groups = quantizable_groups(fp32, export_nodes, fallback_ops("int8"))
    assert any(module.startswith("/vt.") for module in groups)
    scorer = CalibrationScorer(images, labels, np.zeros((len(labels), 10), dtype=np.float32))

    # A scorer that says every graph misses the budget, less so the more nodes read float weights
    # (every module helps): the fallback keeps exactly 2 modules.
    def float_nodes(path: Path) -> int:
        g = onnx.load(str(path)).graph
        dequantized = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
        return sum(1 for n in g.node if n.op_type in fallback_ops("int8") and not set(n.input) & dequantized)

    monkeypatch.setattr(CalibrationScorer, "score", lambda self, path: (0.5 + 0.001 * float_nodes(path), 50.0))
    job = Int8Job(fp32, calibrate(fp32, images, config, progress=False), scorer, export_nodes, 2)
    outcome = int8_with_fallback(
        job, "int8", tmp_path / "int8.onnx", Budget(max_top1_drop=0.0, min_agreement=1.0), log=lambda m: None
    )
    assert outcome.sensitivity and len(outcome.fp32_layers) == 2
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    dq_inputs = {i for n in graph.node if n.op_type != "DequantizeLinear" for i in n.input}
    kept_nodes = [n for n in graph.node if n.name in set(groups[outcome.fp32_layers[0]])]
    assert kept_nodes, "kept nodes vanished from the graph"
    produced_by_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in kept_nodes:  # a module kept in FP32 reads no dequantized weight
        weight = node.input[1] if len(node.input) > 1 else None
        assert weight not in produced_by_dq
    assert dq_inputs  # the rest of the graph is quantized


def test_the_onnxruntime_quantizer_takes_the_recipes_keywords(calibration_inputs):
    """The pinned ONNX Runtime floor is the one quantize.py names, the installed one meets it, and its
    QDQQuantizer takes every keyword the recipe passes (its signature changed between releases)."""
    import inspect
    import re

    import onnxruntime
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from pipeline.graphs.quantize import MIN_ONNXRUNTIME, RECIPES, load_fp32, quantizer_arguments

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"onnxruntime>=([\d.]+)"', pyproject).group(1) == MIN_ONNXRUNTIME

    def version(text: str) -> tuple:
        return tuple(int(part) for part in text.split(".")[:2])

    assert version(onnxruntime.__version__) >= version(MIN_ONNXRUNTIME)
    config, fp32, images, _ = calibration_inputs
    accepted = set(inspect.signature(QDQQuantizer.__init__).parameters)
    for recipe in RECIPES.values():
        arguments = quantizer_arguments(load_fp32(fp32), recipe, calibrate(fp32, images, config, progress=False))
        assert set(arguments) <= accepted, sorted(set(arguments) - accepted)


def test_prices_within_one_step_tie_and_the_error_removed_decides():
    """Two profiles of one CPU differ by a few percent per node: modules whose prices differ by less
    than a step keep the order of the error they remove, whichever profile priced them."""
    from pipeline.search.fallback import _ranked

    def order(kept_ms):
        sensitivity = [
            {"module": "/a", "error_gain": 3e-4, "gain": 0.0},
            {"module": "/b", "error_gain": 2e-4, "gain": 0.0},
            {"module": "/big", "error_gain": 1e-4, "gain": 0.0},
        ]
        return _ranked(sensitivity, kept_ms)

    # Unrounded, /b removes more error per millisecond in the first profile, /a in the second.
    first = order({"/a": 0.29, "/b": 0.18, "/big": 9.5})
    second = order({"/a": 0.27, "/b": 0.19, "/big": 9.5})
    assert first == second == ["/a", "/b", "/big"]
