"""simplify: onnx-simplifier (onnxsim), then our own equivalence check.

For targets that list a TensorRT release without the parser's LayerNormalization (8.5), the
simplified graph has its LayerNorms decomposed into primitive ops (pipeline.graphs.layernorm),
inside the same equivalence check.

onnxsim's built-in check compares with a very tight tolerance and flags ordinary FP32 noise
(1.7e-5 on VT-ResNet) as a failure, so it is disabled and the simplified graph is compared
against the exported one on real evaluation images with `simplify.tolerance` instead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import StageResult, sha256_file
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.data import normalize
from pipeline.errors import StageError
from pipeline.graphs.query import op_histogram

STAGE_VERSION = "2"


class SimplifyError(StageError):
    """onnxsim failed, or its graph does not compute what the export computes."""


def simplify_onnx(source: Path, destination: Path, max_constant_mb: float = 4096.0) -> None:
    import onnx
    import onnxsim

    from pipeline.graphs.constant_size import check_constant_size

    model = onnx.load(str(source))
    check_constant_size(model.graph, source, max_constant_mb)  # before onnxsim folds them
    try:
        simplified, _ = onnxsim.simplify(model, check_n=0)
    except Exception as exc:
        raise SimplifyError(f"onnxsim failed on {source.name}: {str(exc).strip().splitlines()[0]}") from exc
    onnx.checker.check_model(simplified)
    onnx.save(simplified, str(destination))


def _decompose(path: Path) -> int:
    """LayerNorms of the graph at `path` decomposed in place (for TensorRT 8.5); how many."""
    import onnx

    from pipeline.graphs.layernorm import decompose_layernorm

    model = onnx.load(str(path))
    count = decompose_layernorm(model)
    if count:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return count


@dataclass(frozen=True)
class SimplifyInputs:
    """What the simplify stage reads: the exported graph and the crops it is checked on (with their hash)."""

    exported: StageResult
    check_crops: np.ndarray
    check_hash: str


def run_simplify(ctx: Any, inputs: SimplifyInputs) -> StageResult:
    """onnx-simplifier, checked against the export; LayerNorm written out for a TensorRT target
    with a release whose parser lacks it."""
    import onnx
    import onnxsim

    from pipeline.graphs.layernorm import needs_decomposed_layernorm

    config, cache, exported, check_crops = ctx.config, ctx.cache, inputs.exported, inputs.check_crops
    decompose_layernorm = ctx.target.backend == "tensorrt" and needs_decomposed_layernorm(ctx.target.tensorrt_versions)
    check_hash = inputs.check_hash

    settings = {
        "enabled": config.simplify.enabled,
        "tolerance": config.simplify.tolerance,
        "decompose_layernorm": decompose_layernorm,
    }
    inputs = {"onnx": sha256_file(exported.output("onnx")), "check_images": check_hash}
    versions = {"onnxsim": str(onnxsim.__version__), "onnx": onnx.__version__}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        source = exported.output("onnx")
        destination = workdir / "model.fp32.onnx"
        if config.simplify.enabled:
            simplify_onnx(source, destination, config.simplify.max_constant_mb)
        else:
            shutil.copyfile(source, destination)
        decomposed = _decompose(destination) if decompose_layernorm else 0
        images = normalize(check_crops, config.preprocessing.spec())
        before, after = onnx_logits(source, images), onnx_logits(destination, images)
        diff = float(np.max(np.abs(before - after)))
        if diff > config.simplify.tolerance:
            raise SimplifyError(
                f"simplified graph differs from the export by {diff:.2e} (> simplify.tolerance "
                f"{config.simplify.tolerance:g})"
            )
        ops_before, ops_after = op_histogram(source), op_histogram(destination)
        details = {
            "nodes_before": sum(ops_before.values()),
            "nodes_after": sum(ops_after.values()),
            "ops_before": ops_before,
            "ops_after": ops_after,
            "max_abs_diff_vs_export": diff,
            "layernorm_decomposed": decomposed,
        }
        return {"onnx": destination.name}, details

    return cache.run("simplify", inputs, settings, versions, body, STAGE_VERSION)


def summary(result: StageResult) -> str:
    """The stage's line in the build log."""
    details = result.record.details
    diff = details["max_abs_diff_vs_export"]
    line = f"nodes {details['nodes_before']} -> {details['nodes_after']}, max |diff| {diff:.2e}"
    if details.get("layernorm_decomposed"):
        line += f"; {details['layernorm_decomposed']} LayerNorm decomposed (TensorRT 8.5 has no LayerNormalization)"
    return line
