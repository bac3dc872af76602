"""The INT8 graphs' structure and the means that make them, on any CPU.

Nothing here rests on which answers flip: ONNX Runtime's INT8 kernels round differently on AVX2
and AVX-512 VNNI machines, and the tiny VT is untrained. Assertions are on graph contents (Q/DQ
placement, integer ranges, FP16 types outside Q/DQ), on exact arithmetic identities (the twin
against exact Q/DQ), and on policies driven by injected scorers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data import normalize
from pipeline.host import cpu_isa
from pipeline.metrics import Budget


@pytest.fixture(scope="module")
def tiny(tiny_cpu_bundle):
    config = load_config(tiny_cpu_bundle / "pipeline.toml")
    cache = tiny_cpu_bundle / ".cache"
    fp32 = next((cache / "simplify").glob("*/model.fp32.onnx"))
    precision = next((cache / "precision").glob("*/record.json")).parent
    crops = np.load(next((cache / "data").glob("*/calib_crops.npy")))
    images = np.ascontiguousarray(normalize(crops, config.preprocessing.spec()))
    return config, fp32, precision, images


def _initializers(graph):
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


# --- the CPU's instruction set ------------------------------------------------------------------


def test_cpu_isa_avx2_only_has_no_int8_dot_product():
    info = cpu_isa("processor : 0\nflags : fpu sse4_2 avx f16c fma avx2\n", "x86_64")
    assert info["features"] == ["avx2", "fma", "f16c"] and info["int8_dot"] is None
    assert "vpmaddubsw" in info["int8_kernel"]


def test_cpu_isa_names_vnni_amx_and_arm_dot_products():
    assert cpu_isa("flags : avx2 avx512f avx512bw avx512_vnni\n", "x86_64")["int8_dot"] == "AVX-512 VNNI"
    assert cpu_isa("flags : avx2 avx512_vnni amx_tile amx_int8\n", "x86_64")["int8_dot"] == "AMX-INT8"
    assert cpu_isa("flags : avx2 avx_vnni\n", "x86_64")["int8_dot"] == "AVX-VNNI"
    arm = cpu_isa("Features : fp asimd asimddp i8mm sve\n", "aarch64")
    assert arm["int8_dot"] == "Arm i8mm" and arm["features"] == ["asimd", "asimddp", "i8mm", "sve"]
    assert cpu_isa("Features : fp asimd asimddp\n", "aarch64")["int8_dot"] == "Arm dotprod"
    assert cpu_isa("", "x86_64")["int8_dot"] is None  # no /proc/cpuinfo: nothing claimed


def test_int8_note_says_why_int8_is_not_faster_without_vnni():
    from pipeline.stages.report import _int8_cpu_note

    results = [{"precision": p, "latency": [{"batch": 1, "p50_ms": ms}]} for p, ms in (("fp32", 1.0), ("int8", 0.9))]
    plain = _int8_cpu_note(results, cpu_isa("flags : avx2 fma\n", "x86_64"))
    assert len(plain) == 1 and "no 8-bit dot-product" in plain[0] and "gains only 1.11x" in plain[0]
    same = [{"precision": p, "latency": [{"batch": 1, "p50_ms": 1.0}]} for p in ("fp32", "int8")]
    assert "not faster than FP32" in _int8_cpu_note(same, cpu_isa("flags : avx2 fma\n", "x86_64"))[0]
    vnni = _int8_cpu_note(results, cpu_isa("flags : avx2 avx512_vnni\n", "x86_64"))
    assert "AVX-512 VNNI" in vnni[0] and "not faster" not in vnni[0]
    assert _int8_cpu_note(results[:1], {}) == []


# --- graph structure ----------------------------------------------------------------------------


def test_int8_weights_use_seven_bits(tiny):
    """The ONNX Runtime graph's weights stay within -64..64 (saturation-free u8s8 on AVX2)."""
    import onnx

    graph = onnx.load(str(tiny[2] / "model.int8.onnx")).graph
    values = _initializers(graph)
    weights = [
        values[n.input[0]]
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and values.get(n.input[0]) is not None
        and values[n.input[0]].dtype == np.int8
        and values[n.input[0]].ndim > 1
    ]
    assert weights and all(np.abs(w.astype(np.int32)).max() <= 64 for w in weights)
    assert max(np.abs(w.astype(np.int32)).max() for w in weights) == 64
    trt = onnx.load(str(tiny[2] / "model.int8-trt.onnx")).graph
    trt_values = _initializers(trt)
    assert (
        max(np.abs(v.astype(np.int32)).max() for v in trt_values.values() if v.dtype == np.int8 and v.ndim > 1) == 127
    )


def test_int8_trt_fp16_is_fp16_outside_the_qdq_pairs(tiny):
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(tiny[2] / "model.int8-trt-fp16.onnx"))
    assert model.opset_import[0].version >= 19
    graph = model.graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [TensorProto.FLOAT]
    floats = [t for t in graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)  # scales and biases too
    types = {
        v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    }
    types.update({t.name: t.data_type for t in graph.initializer})
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    original = onnx.load(str(tiny[2] / "model.int8-trt.onnx")).graph
    assert len(qdq) == sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in original.node)
    for node in qdq:
        assert types[node.input[1]] == TensorProto.FLOAT16  # FP16 scales
        if node.op_type == "QuantizeLinear":
            assert types[node.input[0]] == TensorProto.FLOAT16
        else:
            assert types[node.output[0]] == TensorProto.FLOAT16
    float32 = [n for n in graph.node if n.output[0] in types and types[n.output[0]] == TensorProto.FLOAT]
    assert [n.op_type for n in float32] == ["Cast"]  # only the cast back to the FP32 output


def test_int8_trt_fp16_runs_on_onnx_runtime_like_its_fp32_outside_twin(tiny):
    from pipeline.backends.onnxruntime import onnx_logits

    images = tiny[3][:8]
    fp16 = onnx_logits(tiny[2] / "model.int8-trt-fp16.onnx", images, qdq_fusion=False)
    fp32 = onnx_logits(tiny[2] / "model.int8-trt.onnx", images, qdq_fusion=False)
    assert fp16.dtype == np.float32 and fp16.shape == fp32.shape and np.all(np.isfinite(fp16))
    cosine = np.sum(fp16 * fp32, 1) / (np.linalg.norm(fp16, axis=1) * np.linalg.norm(fp32, axis=1))
    assert cosine.min() > 0.99


def test_bundle_and_plans_carry_both_int8_trt_graphs(tiny_cpu_bundle):
    manifest = json.loads((tiny_cpu_bundle / "engines/tiny-cpu/manifest.json").read_text())
    assert manifest["precisions"]["int8-trt-fp16"]["onnx"] == "models/model.int8-trt-fp16.onnx"
    assert "models/model.int8-trt-fp16.onnx" in manifest["files"] and "models/model.int8-trt.onnx" in manifest["files"]
    report = json.loads((tiny_cpu_bundle / "engines/tiny-cpu/report/report.json").read_text())
    rows = {r["precision"]: r for r in report["results"]}
    assert rows["int8-trt-fp16"]["runner"]["qdq_fusion"] is False and rows["int8-trt"]["runner"]["qdq_fusion"] is False
    assert rows["int8"]["runner"]["qdq_fusion"] is True
    assert report["precision_details"]["int8"]["methods"] and any(
        "int8-trt-fp16" in m for m in report["precision_details"]["int8-trt"]["methods"]
    )
    assert "cpu_isa" in report["host"] and "cpu_isa" in manifest["host"]


# --- the torch twin and the fine-tune ------------------------------------------------------------


def test_twin_quantizes_weights_exactly_as_the_graph_stores_them(tiny):
    import onnx

    from pipeline.graphs.twin import load_twin, quantize_weight

    for flavour in ("int8", "int8-trt"):
        twin = load_twin(tiny[2] / f"model.{flavour}.onnx", tiny[1])
        values = _initializers(twin.graph)
        assert twin.weights
        for out, (base, qmax, axis) in twin.weights.items():
            node = next(n for n in twin.graph.node if n.output[0] == out)
            shape = [1] * values[node.input[0]].ndim
            shape[axis] = -1
            stored = values[node.input[0]].astype(np.float32) * values[node.input[1]].reshape(shape)
            np.testing.assert_array_equal(quantize_weight(twin.params[base], qmax, axis).detach().numpy(), stored)
        assert onnx.load(str(tiny[2] / f"model.{flavour}.onnx"))


def test_twin_matches_exact_qdq_arithmetic(tiny):
    import torch

    from pipeline.backends.onnxruntime import onnx_logits
    from pipeline.graphs.twin import load_twin

    images = tiny[3][:8]
    for flavour in ("int8", "int8-trt"):
        path = tiny[2] / f"model.{flavour}.onnx"
        with torch.no_grad():
            twin = load_twin(path, tiny[1])(torch.from_numpy(images)).numpy()
        exact = onnx_logits(path, images, qdq_fusion=False)
        # Same ops and rounding; a value that lands on a rounding boundary may differ by one step.
        assert np.abs(twin - exact).max() < 0.05 * np.abs(exact).max() + 1e-3


def test_finetune_exports_the_same_qdq_graph_with_new_weights(tiny, tmp_path):
    import onnx

    from pipeline.graphs.quantize import quantize_graph
    from pipeline.search.qat import FinetuneSettings, finetune, write_weights
    from pipeline.stages.calibrate import load_tensors_data

    config, fp32, precision, images = tiny
    tensors = load_tensors_data(next((fp32.parents[2] / "calibrate").glob("*/tensors.npz")))
    tuned = finetune(
        precision / "model.int8-trt.onnx",
        fp32,
        images,
        FinetuneSettings(steps=2, batch=4, learning_rate=1e-3, check_every=0),
    )
    assert tuned.steps_run == 2 and tuned.stopped == "steps"
    write_weights(fp32, tuned.weights, tmp_path / "tuned.onnx")
    quantize_graph(tmp_path / "tuned.onnx", tmp_path / "qat.onnx", tensors, "int8-trt")
    before, after = onnx.load(str(precision / "model.int8-trt.onnx")).graph, onnx.load(str(tmp_path / "qat.onnx")).graph
    assert [(n.op_type, list(n.input)) for n in before.node] == [(n.op_type, list(n.input)) for n in after.node]
    old, new = _initializers(before), _initializers(after)
    activation_scales = [n.input[1] for n in before.node if n.op_type == "QuantizeLinear" and n.input[0] not in old]
    assert activation_scales and all(np.array_equal(old[s], new[s]) for s in activation_scales)
    assert any(not np.array_equal(old[k], new[k]) for k in old if old[k].dtype == np.int8 and old[k].ndim > 1)


# --- the escalation policy, with injected scorers ------------------------------------------------


def test_fallback_orders_modules_by_the_logit_error_they_remove(tmp_path):
    from pipeline.search.fallback import FallbackPolicy, keep_costliest_in_fp32

    errors = {"/stem": 0.001, "/layer3": 0.02, "/vt.1/tokenizer": 0.05, "/fc": 0.0}
    groups = {m: [f"{m}/Conv"] for m in errors}

    def write(path: Path, keep: list) -> None:
        path.write_text(json.dumps(keep))

    def score(path: Path):
        kept = {n.rsplit("/", 1)[0] for n in json.loads(path.read_text())}
        error = sum(e for m, e in errors.items() if m not in kept)
        return (0.99 if error < 0.03 else 0.98), 0.0, error  # agreement moves in coarse steps, error does not

    outcome = keep_costliest_in_fp32(
        "int8", tmp_path / "g.onnx", groups, (write, score), FallbackPolicy(Budget(min_agreement=0.99), 8)
    )
    assert [s["module"] for s in outcome.sensitivity][:2] == ["/vt.1/tokenizer", "/layer3"]
    assert outcome.fp32_layers == ["/vt.1/tokenizer"] and outcome.logit_error == pytest.approx(0.021)


def _escalation(tiny, tmp_path, monkeypatch, scores):
    """int8_with_fallback on the tiny VT with a scripted scorer and a recorded (no-op) fine-tune."""
    from pipeline.search import qat

    calls = []

    def no_op_finetune(*args, **kwargs):  # the FP32 weights unchanged
        calls.append(args)
        return qat.FinetuneResult({}, 5, "steps", "cpu", 0.1, 0.1)

    return _escalation_with(tiny, tmp_path, monkeypatch, scores, no_op_finetune), calls


def _escalation_with(tiny, tmp_path, monkeypatch, scores, finetune):
    from pipeline.search import qat
    from pipeline.stages.calibrate import load_tensors_data
    from pipeline.stages.precision import CalibrationScorer, Int8Job, int8_with_fallback

    config, fp32, precision, images = tiny
    monkeypatch.setattr(qat, "finetune", finetune)
    scorer = CalibrationScorer(images, np.zeros(len(images), dtype=np.int64), np.zeros((len(images), 10), np.float32))
    monkeypatch.setattr(CalibrationScorer, "score", lambda self, path: next(scores))
    export_nodes = json.loads(next((fp32.parents[2] / "export").glob("*/nodes.json")).read_text())
    tensors = load_tensors_data(next((fp32.parents[2] / "calibrate").glob("*/tensors.npz")))
    job = Int8Job(fp32, tensors, scorer, export_nodes, 1, qat.FinetuneSettings(steps=5), calibration="minmax")
    return int8_with_fallback(job, "int8", tmp_path / "model.int8.onnx", Budget(min_agreement=0.99), log=lambda m: None)


def test_the_search_comes_first_and_no_fine_tune_runs_when_it_meets_the_budget(tiny, tmp_path, monkeypatch):
    scores = iter([(0.5, 9.0, 0.2)] * 2 + [(0.995, 0.1, 0.01)] * 200)  # the quantized graph, scored and ranked
    outcome, calls = _escalation(tiny, tmp_path, monkeypatch, scores)
    assert calls == [] and len(outcome.fp32_layers) == 1
    assert outcome.methods[0] == "calibration: minmax" and "7-bit" in outcome.methods[1]
    assert outcome.methods[3].startswith("FP32 fallback: 1 module(s)") and "confirm probes" in outcome.methods[3]


def test_a_fine_tune_runs_once_when_the_most_fp32_modules_allowed_miss_the_budget(tiny, tmp_path, monkeypatch):
    scores = iter([(0.5, 9.0, 0.2)] * 2 + [(0.9, 1.0, 0.1)] * 200)
    outcome, calls = _escalation(tiny, tmp_path, monkeypatch, scores)
    assert len(calls) == 1 and len(outcome.fp32_layers) == 1  # the graph the FP32 module leaves
    assert any(m.startswith("budget not reached with the 1 costliest module(s)") for m in outcome.methods)
    assert outcome.methods[-1].startswith("quantization-aware fine-tune: 5 of 5 steps") and outcome.methods[
        -1
    ].endswith("not kept")


# --- the budget check on a few hundred images -----------------------------------------------------


def test_expected_agreement_follows_the_error_not_the_luck_of_the_flips():
    from pipeline.metrics import agreement, agreement_lower_bound, expected_agreement

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 10)).astype(np.float32)
    assert expected_agreement(reference, reference) == 1.0 and agreement_lower_bound(reference, reference) == 1.0
    small = reference + rng.normal(scale=0.01, size=reference.shape).astype(np.float32)
    large = reference + rng.normal(scale=0.1, size=reference.shape).astype(np.float32)
    assert 1.0 > expected_agreement(small, reference) > expected_agreement(large, reference) > 0.9
    # On many images the expectation and the count agree; the bound sits below both.
    assert abs(expected_agreement(large, reference) - agreement(large, reference)) < 0.02
    assert agreement_lower_bound(large, reference) < min(
        expected_agreement(large, reference), agreement(large, reference)
    )


def test_twin_with_every_qdq_left_float_is_the_fp32_graph(tiny):
    """The twin's hook for error budgets: unquantized tensors give back the FP32 graph exactly
    (in the `int8` graph a range that starts at zero stands for the ReLU the quantizer removed)."""
    import torch

    from pipeline.backends.onnxruntime import onnx_logits
    from pipeline.graphs.twin import QUANTIZE, load_twin

    images = tiny[3][:4]
    reference = onnx_logits(tiny[1], images)
    for flavour in ("int8", "int8-trt"):
        twin = load_twin(tiny[2] / f"model.{flavour}.onnx", tiny[1])
        twin.float_tensors = {n.input[0] for n in twin.graph.node if n.op_type == QUANTIZE} | {
            b for b, _, _ in twin.weights.values()
        }
        with torch.no_grad():
            np.testing.assert_allclose(twin(torch.from_numpy(images)).numpy(), reference, rtol=1e-4, atol=1e-4)


def test_a_graph_the_twin_cannot_take_goes_on_without_the_fine_tune(tiny, tmp_path, monkeypatch):
    from pipeline.graphs.twin import TwinUnsupportedOp

    def refuses(*args, **kwargs):
        raise TwinUnsupportedOp("TopK", "/head/TopK", "not in the twin's tables")

    scores = iter([(0.5, 9.0, 0.2)] * 2 + [(0.9, 1.0, 0.1)] * 200)
    outcome = _escalation_with(tiny, tmp_path, monkeypatch, scores, refuses)
    assert outcome.methods[-1].startswith("no quantization-aware fine-tune: ") and "TopK" in outcome.methods[-1]
    assert (tmp_path / "model.int8.onnx").is_file() and len(outcome.fp32_layers) == 1
