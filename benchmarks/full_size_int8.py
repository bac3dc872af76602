"""Speed of the precision graphs on a full-size VT-ResNet-18 (224x224, 1000 classes) on this CPU.

    python benchmarks/full_size_int8.py [--runs 50] [--threads 0]

The demo VT is so small (0.5 M parameters) that the runtimes' per-op overhead dominates and
INT8 gains little over FP32 there. This benchmark shows the same graphs where compute dominates:
a paper-size VT-ResNet-18 with random weights (speed does not depend on the values) whose graphs
the pipeline makes (pipeline.api.graphs, every module quantized, calibrated on held-out photos
resized 256 / cropped 224), then timed at
batch 1 on both CPU runtimes of the cpu target, ONNX Runtime and OpenVINO (each runner alone, one
after the other), against torch eager. It prints a Markdown table headed by the CPU and its
instruction set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.backends.base import RunnerUnavailable  # noqa: E402
from pipeline.backends.eager import TorchRunner  # noqa: E402
from pipeline.backends.onnxruntime import OrtRunner, SessionSettings  # noqa: E402
from pipeline.backends.openvino import OpenVinoSettings, open_runner  # noqa: E402
from projects import FULL_INT8, paper_project  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args()

    from pipeline.data import normalize

    with tempfile.TemporaryDirectory(prefix="vt-edge-bench.") as tmp:
        per_class = max(1, args.calibration_images // 10)
        config = paper_project(Path(tmp) / "paper", per_class, FULL_INT8)
        made = api.graphs("cpu", config)
        model, graphs = made.model.module, dict(made.models)
        batch = np.ascontiguousarray(normalize(made.data.evaluation.crops[:1], api.load(config).preprocessing.spec()))
        makers = {("fp32-torch", "torch"): lambda: TorchRunner(model, args.threads)}
        for name, path in graphs.items():
            # TensorRT's graph is timed as ONNX Runtime fuses it (s8s8 kernels), not as exact Q/DQ: its speed here
            makers[(name, "onnxruntime")] = lambda n=name, f=path: OrtRunner(
                n, f, SessionSettings(intra_op_threads=args.threads)
            )
            makers[(name, "openvino")] = lambda n=name, f=path: open_runner(
                n, f, OpenVinoSettings(threads=args.threads)
            )
        p50 = time_each(makers, batch[:1], args)
    print_table(p50, args)
    return 0


def time_each(makers, one: np.ndarray, args) -> dict:
    """p50 per (graph, runtime), each runner opened, timed alone and closed before the next."""
    p50 = {}
    for key, make in makers.items():
        started = time.perf_counter()
        try:
            runner = make()
        except RunnerUnavailable as exc:
            print(f"{key[0]} on {key[1]}: skipped ({exc})", flush=True)
            continue
        with runner:
            p50[key] = float(np.median(runner.time_batch(one, args.warmup, args.runs)))
        print(f"{key[0]:<9} {key[1]:<12} p50 {p50[key]:8.2f} ms  ({time.perf_counter() - started:.0f} s)", flush=True)
    return p50


def print_table(p50: dict, args) -> None:
    from pipeline.host import host_info

    host = host_info()
    isa = host["cpu_isa"]
    base, ort_fp32 = p50[("fp32-torch", "torch")], p50.get(("fp32", "onnxruntime"))
    print(
        f"\nCPU: {host['cpu']} ({host['cpu_count']} cores; {', '.join(isa['features'])}; INT8 kernel: "
        f"{isa['int8_kernel']}); threads: {args.threads or 'each runtime default'}; batch 1, p50 of {args.runs}\n"
    )
    print("| graph | runtime | p50 (ms) | vs torch eager FP32 | vs ONNX Runtime FP32 |")
    print("|---|---|---|---|---|")
    for (name, runtime), ms in p50.items():
        print(f"| {name} | {runtime} | {ms:.2f} | {base / ms:.2f}x | {ort_fp32 / ms:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
