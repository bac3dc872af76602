"""The FP16 graph writer: FP16 weights and compute with FP32 graph inputs and outputs."""

from __future__ import annotations

import warnings
from pathlib import Path


def convert_fp16(fp32_path: Path, destination: Path) -> None:
    """FP16 weights and compute, FP32 graph inputs/outputs (casts at the edges)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():
        # One warning per tiny weight clipped to FP16's range: expected, and reported by accuracy.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(destination))
