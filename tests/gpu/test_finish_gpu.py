"""On a machine with TensorRT and an NVIDIA GPU: the whole GPU chain on the tiny VT.

The bundle is made here (export, precision graphs, validation of the graphs) and, since this
host is the target, its engines are built, run and validated in the same command. Skipped, with
the reason, where TensorRT, a GPU or torch (for the export) is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import run_cli
from pipeline.backends.tensorrt import find_tensorrt, gpu_device, tensorrt_status
from pipeline.stages.bundle import verify_bundle

TRT = find_tensorrt()
GPU = gpu_device() if TRT is not None else None

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        TRT is None or GPU is None or importlib.util.find_spec("torch") is None,
        reason=f"needs TensorRT, a CUDA GPU and torch: {tensorrt_status()}; GPU: {GPU.name if GPU else 'none found'}",
    ),
]

THIS_GPU_TARGET = """
[targets.this-gpu]
backend = "tensorrt"
compute_capability = "auto"
tensorrt_versions = ["8.x", "10.x", "11.x"]
profile = { min = 1, opt = 2, max = 8 }
precisions = ["fp32", "fp16", "int8-trt"]
"""


def test_tiny_vt_engines_are_built_validated_and_recorded(tiny_project: Path):
    config = tiny_project / "pipeline.toml"
    config.write_text(config.read_text() + THIS_GPU_TARGET)
    result = run_cli(tiny_project, "build", "--target", "this-gpu", "--no-progress", "--require-engine")
    assert result.returncode == 0, result.stderr
    bundle = tiny_project / "engines/tiny-this-gpu"
    manifest = verify_bundle(bundle)
    assert manifest["pending"] == []
    assert sorted(e["precision"] for e in manifest["engines"]) == ["fp16", "fp32", "int8-trt"]
    for engine in manifest["engines"]:
        assert engine["tensorrt_version"] == TRT.version and engine["compute_capability"] == GPU.compute_capability
        assert (bundle / engine["path"]).is_file()
    report = json.loads((bundle / "report/report.json").read_text())
    assert report["cpu_proxy"] is False and report["cpu_proxy_results"]
    fp32 = next(r for r in report["results"] if r["precision"] == "fp32")
    assert fp32["accuracy"]["agreement"] >= 0.99  # the GPU FP32 engine against the host's FP32 logits
    for result in report["results"]:  # the engines record per-image answers like the host's graphs
        assert len(result["predictions"]["top1"]) == len(report["per_image"]["labels"]) == report["evaluation_images"]
    page = (bundle / "report/report.html").read_text()
    assert 'id="verdict"' in page and "https://" not in page and "http://" not in page
    again = run_cli(tiny_project, "build", "--target", "this-gpu", "--no-progress")
    assert again.returncode == 0 and "is up to date" in again.stderr  # engines kept, nothing rebuilt
