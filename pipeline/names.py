"""Names shared by every room: the graph's I/O tensors and the precisions.

Plain string constants (not Enum members) because they are written into JSON, file names and
ONNX graphs as they are.
"""

from __future__ import annotations

import unicodedata
from typing import Optional

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

# Graphs that are not precisions of their own but a variant of one, made with it and carried
# beside it. Strongly typed TensorRT (10.x, 11.x) runs every tensor outside the Q/DQ pairs in the
# graph's own type, so its `int8-trt` graph carries FP16 there; weakly typed TensorRT (8.x)
# builds the FP32-outside `int8-trt` graph with the INT8 and FP16 builder flags.
INT8_TRT_FP16 = "int8-trt-fp16"
STRONGLY_TYPED_GRAPHS = {INT8_TRT: INT8_TRT_FP16}
# Graphs for TensorRT: their CPU proxy runs Q/DQ as exact float ops (what TensorRT computes).
TENSORRT_GRAPHS = (INT8_TRT, INT8_TRT_FP16)

# The torch eager FP32 baseline: measured for speed-ups, never an engine.
FP32_TORCH = "fp32-torch"
# The precision every other one is compared against.
REFERENCE = FP32


def precision_of(graph: str) -> str:
    """The precision a graph is configured as: a variant's (`int8-trt-fp16` -> `int8-trt`), else its own."""
    parents = {variant: precision for precision, variant in STRONGLY_TYPED_GRAPHS.items()}
    return parents.get(graph, graph)


def onnx_file(precision: str) -> str:
    """Bundle-relative path of a precision's (or graph variant's) ONNX graph."""
    return f"models/model.{precision}.onnx"


def graph_variants(precisions) -> list:
    """The graph variants the precisions bring with them (`int8-trt` -> `int8-trt-fp16`)."""
    return [STRONGLY_TYPED_GRAPHS[p] for p in precisions if p in STRONGLY_TYPED_GRAPHS]


def with_variants(budget_by_precision: dict) -> dict:
    """Budgets per graph: a graph variant is judged by its precision's budget."""
    variants = {STRONGLY_TYPED_GRAPHS[p]: b for p, b in budget_by_precision.items() if p in STRONGLY_TYPED_GRAPHS}
    return {**budget_by_precision, **variants}


def tensorrt_graph(precision: str, strongly_typed: bool) -> str:
    """The graph a TensorRT build of `precision` reads: the FP16-outside variant when strongly typed."""
    return STRONGLY_TYPED_GRAPHS.get(precision, precision) if strongly_typed else precision


# Bidirectional embeddings, overrides and isolates: they reorder whatever text follows them on
# display, so a name could show as another (right-to-left letters need none of them).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_character(text: str) -> Optional[str]:
    """The first character of a class name that a terminal, a Markdown table or a line-based file
    would act on (NUL, ESC, CR, LF, tab and the other control characters, line and paragraph
    separators, bidirectional overrides), as `'\\x1b' (U+001B)`; None when the name is plain text."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            return f"{char!r} (U+{ord(char):04X})"
    return None
