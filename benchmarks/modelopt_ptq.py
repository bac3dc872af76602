"""NVIDIA ModelOpt's ONNX INT8 post-training quantization (the Q/DQ graph NVIDIA recommends for
TensorRT), on the CPU, for `benchmarks/peers.py`.

    python benchmarks/modelopt_ptq.py FP32.onnx CALIB.npy OUT.onnx [--calibration-method entropy]
                                      [--high-precision-dtype fp32|fp16]

CALIB.npy: the calibration photos, normalised float32 NCHW (one calibration step per photo).
Writes OUT.onnx (Q/DQ, opset 19 or more) and nothing else; peers.py times and scores it.

ModelOpt 0.47 needs torch, and its `onnx` extra pins onnx ~1.21, onnxruntime-gpu ~1.24 and
cupy-cuda12x, which the project's environment does not hold, so this script runs in a virtual
environment of its own (outside the repository; CPU torch first so that pip does not fetch the
CUDA build; onnxruntime-gpu still calibrates on the CPU provider of a machine without a GPU):

    python3.11 -m venv ~/venv-modelopt
    ~/venv-modelopt/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    ~/venv-modelopt/bin/pip install "nvidia-modelopt[onnx]==0.47.0"
    python benchmarks/peers.py --modelopt-python ~/venv-modelopt/bin/python

Exit status: 0 written; 2 an input file missing or unreadable (one line `error: ...`); 1 ModelOpt
failed (its own message, one line).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path, help="the FP32 ONNX graph")
    parser.add_argument("calib", type=Path, help="calibration photos: .npy, float32 NCHW, normalised")
    parser.add_argument("output", type=Path, help="where the Q/DQ ONNX graph goes")
    parser.add_argument(
        "--calibration-method", choices=("entropy", "max"), default="entropy", help="ModelOpt's default: entropy"
    )
    parser.add_argument(
        "--high-precision-dtype",
        choices=("fp32", "fp16"),
        default="fp32",
        help="the ops outside Q/DQ (ModelOpt's default is fp16; fp32 matches the project's int8-trt)",
    )
    return parser.parse_args()


class InputError(Exception):
    """An input file that is missing or unreadable (exit 2)."""


def load_calibration(path: Path) -> np.ndarray:
    try:
        calib = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot read the calibration photos ({exc}); give a .npy of float32 NCHW photos"
        ) from exc
    if calib.ndim != 4:
        raise InputError(f"{path}: the calibration photos have shape {calib.shape}; NCHW (4 dimensions) expected")
    return np.ascontiguousarray(calib, dtype=np.float32)


def quantize(fp32: Path, calib: np.ndarray, output: Path, method: str, high_precision: str) -> None:
    """ModelOpt's INT8 PTQ on the CPU execution provider; written to a temp file, then renamed."""
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    # ModelOpt writes intermediate files beside its input graph: work on a copy in a temp folder.
    with tempfile.TemporaryDirectory(prefix="modelopt-ptq.", dir=output.parent) as tmp:
        source, partial = Path(tmp) / "fp32.onnx", Path(tmp) / "quant.onnx"
        source.write_bytes(fp32.read_bytes())
        modelopt_quantize(
            onnx_path=str(source),
            quantize_mode="int8",
            calibration_data=calib,
            calibration_shapes=f"{input_name(source)}:1x{'x'.join(str(d) for d in calib.shape[1:])}",
            calibration_method=method,
            calibration_eps=["cpu"],
            high_precision_dtype=high_precision,
            output_path=str(partial),
            log_level="WARNING",
        )
        os.replace(partial, output)


def input_name(graph: Path) -> str:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def main() -> int:
    args = parse_args()
    try:
        if not args.fp32.is_file():
            raise InputError(f"{args.fp32}: no such ONNX graph; give the FP32 graph to quantize")
        if not args.output.parent.is_dir():
            raise InputError(f"{args.output.parent}: no such folder for the output graph")
        calib = load_calibration(args.calib)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        quantize(args.fp32, calib, args.output, args.calibration_method, args.high_precision_dtype)
    except Exception as exc:  # ModelOpt's own failure, reported as one line for peers.py
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: ModelOpt INT8 PTQ failed on {args.fp32}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
