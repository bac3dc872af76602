"""Calibration methods and the mixed-precision fallback on the tiny VT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Budget, load_config
from pipeline.stages.checks import cpu_session, normalised_batch, run_batched
from pipeline.stages.precision import Proxy, calibrate, int8_with_fallback, quantizable_groups, ranges_to_json


@pytest.fixture(scope="module")
def calibration_inputs(tiny_cpu_bundle):
    config = load_config(tiny_cpu_bundle / "pipeline.toml")
    fp32 = next((tiny_cpu_bundle / ".cache/simplify").glob("*/model.fp32.onnx"))
    crops = np.load(next((tiny_cpu_bundle / ".cache/data").glob("*/calib_crops.npy")))
    labels = np.load(next((tiny_cpu_bundle / ".cache/data").glob("*/calib_labels.npy")))
    return config, fp32, normalised_batch(crops, config), labels


def with_method(config, method: str):
    return config.model_copy(update={"precision": config.precision.model_copy(update={"calibration": method})})


def test_entropy_and_percentile_differ_from_minmax(calibration_inputs):
    config, fp32, images, _ = calibration_inputs
    ranges = {m: ranges_to_json(calibrate(fp32, images, with_method(config, m), progress=False)) for m in ("minmax", "entropy", "percentile")}
    names = sorted(ranges["minmax"])
    assert names == sorted(ranges["entropy"]) == sorted(ranges["percentile"])
    minmax_high = np.array([ranges["minmax"][n][1] for n in names])
    for method in ("entropy", "percentile"):
        high = np.array([ranges[method][n][1] for n in names])
        assert np.all(high <= minmax_high + 1e-6)  # both clip, never widen
        narrower = np.sum(high < minmax_high - 1e-6)
        assert narrower >= len(names) // 4, f"{method} clipped only {narrower} of {len(names)} tensors"


def test_fallback_keeps_the_costliest_modules_in_fp32(calibration_inputs, tmp_path):
    import json

    config, fp32, images, labels = calibration_inputs
    tensors = calibrate(fp32, images, config, progress=False)
    proxy = Proxy(images, labels, run_batched(cpu_session(fp32), images))
    export_nodes = json.loads(next((fp32.parents[2] / "export").glob("*/nodes.json")).read_text())
    groups = quantizable_groups(fp32, export_nodes, ("Conv", "Gemm", "MatMul"))
    assert any(module.startswith("/vt.") for module in groups)  # module paths survive simplification
    # A budget no INT8 graph of an untrained model meets: the fallback must measure and keep layers.
    impossible = Budget(max_top1_drop=0.0, min_agreement=1.0)
    outcome = int8_with_fallback("int8", fp32, tmp_path / "int8.onnx", tensors, proxy, impossible, export_nodes, 2, log=lambda m: None)
    # Premise (deterministic for the seeded tiny model): plain INT8 disagrees with FP32 somewhere.
    assert outcome.sensitivity, "the plain INT8 graph met an impossible budget"
    assert len(outcome.sensitivity) == len(groups)
    gains = [item["gain"] for item in outcome.sensitivity]
    assert gains == sorted(gains, reverse=True)
    assert 1 <= len(outcome.fp32_layers) <= 2
    assert outcome.fp32_layers[0] == outcome.sensitivity[0]["module"]
    assert (tmp_path / "int8.onnx").is_file()
