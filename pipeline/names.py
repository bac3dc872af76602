"""Names shared by every room: the graph's I/O tensors and the precisions.

Plain string constants (not Enum members) because they are written into JSON, file names and
ONNX graphs as they are.
"""

from __future__ import annotations

# The I/O contract of every exported graph, engine and bundle manifest.
INPUT_NAME = "images"
OUTPUT_NAME = "logits"

# Precisions a target can build.
FP32 = "fp32"
FP16 = "fp16"
INT8 = "int8"  # ONNX Runtime CPU flavour: u8 activations, s8 per-channel weights
INT8_TRT = "int8-trt"  # TensorRT flavour: symmetric s8 Q/DQ where TensorRT fuses
PRECISIONS = (FP32, FP16, INT8, INT8_TRT)
INT8_FLAVOURS = (INT8, INT8_TRT)

# The torch eager FP32 baseline: measured for speed-ups, never an engine.
FP32_TORCH = "fp32-torch"
# The precision every other one is compared against.
REFERENCE = FP32


def onnx_file(precision: str) -> str:
    """Bundle-relative path of a precision's ONNX graph."""
    return f"models/model.{precision}.onnx"
