"""Latency benchmark of a cpu bundle: every precision on ONNX Runtime vs torch eager FP32.

    python benchmarks/bench_bundle.py engines/vt_demo-cpu [--config pipeline.toml] [--runs 200]

Prints p50/p90/p99 per precision and batch size, and checks the speed targets of the cpu
target (INT8 at least 3x faster than torch eager FP32 at batch 1). Run it by hand on a quiet
machine; the build's report carries the same measurements for the build's own run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.backends.eager import TorchRunner  # noqa: E402
from pipeline.backends.onnxruntime import OrtRunner, SessionSettings  # noqa: E402
from pipeline.data import PreprocessSpec, normalize  # noqa: E402
from pipeline.metrics import latency_metrics  # noqa: E402

INT8_SPEEDUP_TARGET = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "pipeline.toml")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    manifest = api.verify(args.bundle).model_dump()
    pp = manifest["preprocessing"]
    crops = np.load(args.bundle / "reference/eval_crops.npy")
    images = np.ascontiguousarray(normalize(crops, PreprocessSpec.from_dict(pp)))
    runners = {"fp32-torch": TorchRunner(api.model(args.config).module, args.threads)}
    for precision, entry in manifest["precisions"].items():
        runners[precision] = OrtRunner(
            precision, args.bundle / entry["onnx"], SessionSettings(intra_op_threads=args.threads)
        )

    p50_b1: dict[str, float] = {}
    print(f"{'precision':<11} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'img/s':>8}")
    for name, runner in runners.items():
        for batch in args.batches:
            sample = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
            lat = latency_metrics(runner.time_batch(sample, args.warmup, args.runs), batch)
            if batch == 1:
                p50_b1[name] = lat.p50_ms
            print(
                f"{name:<11} {batch:>5} {lat.p50_ms:>8.3f} {lat.p90_ms:>8.3f} {lat.p99_ms:>8.3f} "
                f"{lat.throughput_ips:>8.0f}"
            )
    if "int8" in p50_b1 and "fp32-torch" in p50_b1:
        speedup = p50_b1["fp32-torch"] / p50_b1["int8"]
        verdict = "meets" if speedup >= INT8_SPEEDUP_TARGET else "MISSES"
        print(f"int8 vs torch eager FP32 at batch 1: {speedup:.2f}x ({verdict} the {INT8_SPEEDUP_TARGET:.0f}x target)")
        return 0 if speedup >= INT8_SPEEDUP_TARGET else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
