"""Speed of the precision graphs on a full-size VT-ResNet-18 (224x224, 1000 classes) on this CPU.

    python benchmarks/full_size_int8.py [--runs 50] [--threads 0]

The demo VT is so small (0.2 M parameters) that ONNX Runtime's per-op overhead dominates and
INT8 cannot beat FP32 there. This benchmark shows the same graphs where compute dominates: a
paper-size VT-ResNet-18 with random weights (speed does not depend on the values), exported,
simplified and quantized exactly as the pipeline does, then timed at batch 1 against torch eager.
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

from pipeline.backends.onnxruntime import OrtRunner, SessionSettings, TorchRunner  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data import PreprocessSpec, generate_demo_set, load_crops, normalize  # noqa: E402
from pipeline.stages.export import export_onnx  # noqa: E402
from pipeline.stages.calibrate import calibrate  # noqa: E402
from pipeline.stages.fp16 import convert_fp16  # noqa: E402
from pipeline.stages.quantize import quantize_graph  # noqa: E402
from pipeline.stages.simplify import simplify_onnx  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--calibration-images", type=int, default=32)
    args = parser.parse_args()

    import torch

    from pipeline.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="vt_resnet18")).eval()
    config = load_config(ROOT / "pipeline.toml")
    config = config.model_copy(update={"precision": config.precision.model_copy(update={"calibration": "minmax"})})
    spec = PreprocessSpec(resize=224, crop=224)
    with tempfile.TemporaryDirectory(prefix="vt-edge-bench.") as tmp:
        folder = Path(tmp)
        per_class = max(1, args.calibration_images // 10)
        images = load_crops(generate_demo_set(folder / "images", per_class=per_class, seed=7).samples, spec).crops
        batch = np.ascontiguousarray(normalize(images, spec))
        export_onnx(model, batch[:1], 17, folder / "export.onnx")
        simplify_onnx(folder / "export.onnx", folder / "fp32.onnx")
        ranges = calibrate(folder / "fp32.onnx", batch, config, progress=False)
        graphs = {"fp32": folder / "fp32.onnx"}
        for flavour in ("int8", "int8-trt"):
            graphs[flavour] = folder / f"{flavour}.onnx"
            quantize_graph(folder / "fp32.onnx", graphs[flavour], ranges, flavour)
        graphs["fp16"] = folder / "fp16.onnx"
        convert_fp16(folder / "fp32.onnx", graphs["fp16"])
        runners = {"fp32-torch": TorchRunner(model, args.threads)}
        runners.update({name: OrtRunner(name, path, SessionSettings(intra_op_threads=args.threads)) for name, path in graphs.items()})
        one = batch[:1]
        p50 = {}
        for name, runner in runners.items():
            started = time.perf_counter()
            p50[name] = float(np.median(runner.time_batch(one, args.warmup, args.runs)))
            print(f"{name:<11} p50 {p50[name]:8.2f} ms  ({time.perf_counter() - started:.0f} s)", flush=True)
    base = p50["fp32-torch"]
    print("speed-up vs torch eager FP32 at batch 1: " + ", ".join(f"{k} {base / v:.2f}x" for k, v in p50.items() if k != "fp32-torch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
