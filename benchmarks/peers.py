"""The project's INT8 graphs beside other INT8 tools, in one process, on the same FP32 graph,
the same calibration photos and the same evaluation photos.

    python benchmarks/peers.py                                    # the shipped VT (pipeline.toml: accuracy + speed)
    python benchmarks/peers.py --config configs/vit_cifar10.toml  # the shipped ViT (a user's own model)
    python benchmarks/peers.py --paper-size                        # VT-ResNet-18 at 224 (speed)

Rows: torch eager FP32 (when the model is a torch checkpoint); FP32 (ONNX Runtime); the project's `int8` and `int8-trt`
(and `int8-trt-fp16`) as the pipeline makes them; ONNX Runtime `quantize_static` with its defaults
and per-channel; OpenVINO + NNCF `nncf.quantize` with its defaults and `model_type=TRANSFORMER`;
NVIDIA ModelOpt's ONNX INT8 PTQ (`modelopt.onnx.quantization`, the peer of `int8-trt`) with FP32
and with FP16 (its default) outside Q/DQ, run as exact Q/DQ like the project's TensorRT graphs.
The project's graphs run on both CPU runtimes of the cpu target (ONNX Runtime and OpenVINO, as
`[targets.cpu] runtime = "auto"` measures them). Each row: top-1, drop against FP32 (ONNX
Runtime), top-1 agreement with FP32, and batch-1 p50 from runs interleaved across the rows of one
runtime (row after row, round after round), so a busy CPU slows each of them alike; the runtimes
are timed one after the other, each with the others idle (a runtime's worker threads running
beside another's slowed ONNX Runtime's FP32 from 18.9 to 22-37 ms at paper size). OpenVINO comes
with the `host` extra, NNCF with `dev`; ModelOpt's graphs are made in an
environment of its own (`--modelopt-python PATH` or $VTEDGE_MODELOPT_PYTHON; how to make it:
benchmarks/modelopt_ptq.py). Rows whose tool is missing are skipped with a line saying so.

`--config`: the graphs, the calibration and the evaluation photos come from the pipeline's own
stages (cached), so the project's rows are exactly the bundle's graphs. `--paper-size`: a
paper-size VT-ResNet-18 with random weights (speed does not depend on the values; its top-1 and
agreement mean nothing), calibrated and quantized the way the pipeline does, on generated photos
at 224x224.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Infer = Callable[[np.ndarray], np.ndarray]
MODELOPT_ENV = "VTEDGE_MODELOPT_PYTHON"


class ToolUnavailable(Exception):
    """A peer whose tool cannot run here; its row is skipped with this line."""


def ort_infer(path: Path, threads: int, qdq_fusion: bool = True) -> Infer:
    from pipeline.backends.onnxruntime import cpu_session

    # No spinning: interleaved sessions whose idle threads spin take the cores from the one running
    # (as in the validate stage; with it, ONNX Runtime's rows here came out 2-9x slower)
    session = cpu_session(path, threads=threads, qdq_fusion=qdq_fusion, spinning=False)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def ort_quantize_static(fp32: Path, destination: Path, calib: np.ndarray, per_channel: bool) -> Path:
    """ONNX Runtime's quantize_static as a user calls it (defaults), on the same photos."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": calib[i : i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(fp32), str(destination), Reader(), per_channel=per_channel)
    return destination


def nncf_infer(fp32: Path, calib: np.ndarray, threads: int, transformer: bool) -> Infer:
    """OpenVINO + NNCF INT8 (nncf.quantize), compiled for this CPU."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    quantized = nncf.quantize(model, dataset, subset_size=len(calib), **kwargs)
    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = ov.Core().compile_model(quantized, "CPU", config)
    request = compiled.create_infer_request()
    return lambda batch: request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[compiled.output(0)].copy()


def modelopt_graph(
    python: Optional[str], fp32: Path, calib: np.ndarray, destination: Path, high_precision: str
) -> Path:
    """NVIDIA ModelOpt's ONNX INT8 PTQ (defaults: entropy calibration), made by
    benchmarks/modelopt_ptq.py in ModelOpt's own environment (its pins clash with this one's)."""
    if not python:
        raise ToolUnavailable(
            f"no ModelOpt environment (--modelopt-python PATH or {MODELOPT_ENV}; benchmarks/modelopt_ptq.py "
            "says how to make one)"
        )
    photos = destination.parent / "modelopt-calib.npy"
    if not photos.exists():
        np.save(photos, calib)
    command = [
        python,
        str(ROOT / "benchmarks" / "modelopt_ptq.py"),
        str(fp32),
        str(photos),
        str(destination),
        "--high-precision-dtype",
        high_precision,
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"{python} did not run benchmarks/modelopt_ptq.py ({exc})") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        raise ToolUnavailable(f"{python}: {lines[-1]}")
    print(
        f"ModelOpt INT8 PTQ ({high_precision} outside Q/DQ): {len(calib)} photos, graph made in "
        f"{time.perf_counter() - started:.1f} s (its environment: {python})"
    )
    return destination


def torch_infer(module, threads: int) -> Infer:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return run


def openvino_infer(path: Path, threads: int) -> Infer:
    """A graph compiled by OpenVINO for this CPU, as the cpu target runs it (pipeline.backends.openvino)."""
    from pipeline.backends.base import RunnerUnavailable
    from pipeline.backends.openvino import OpenVinoSettings, open_runner

    try:
        runner = open_runner(path.stem, path, OpenVinoSettings(threads=threads))
    except RunnerUnavailable as exc:
        raise ToolUnavailable(f"OpenVINO cannot compile {path.name}: {exc}") from None
    return runner.infer


# The runtime each row runs on (rows of one runtime are timed together, runtimes apart).
def runtime_of(row: str) -> str:
    if row.startswith("fp32-torch"):
        return "torch"
    return "openvino" if "openvino" in row.lower() else "onnxruntime"


def peer_rows(fp32: Path, calib: np.ndarray, threads: int, folder: Path, modelopt: Optional[str]) -> Dict[str, Infer]:
    """The other tools' INT8 models, each made from `fp32` and the calibration photos. ModelOpt's
    graphs are for TensorRT: they run as exact Q/DQ, like the project's int8-trt rows."""
    rows: Dict[str, Infer] = {}
    makers = {
        "ort quantize_static (defaults)": lambda: ort_infer(
            ort_quantize_static(fp32, folder / "ort.onnx", calib, False), threads
        ),
        "ort quantize_static (per-channel)": lambda: ort_infer(
            ort_quantize_static(fp32, folder / "ort-pc.onnx", calib, True), threads
        ),
        "openvino+nncf (defaults)": lambda: nncf_infer(fp32, calib, threads, False),
        "openvino+nncf (TRANSFORMER)": lambda: nncf_infer(fp32, calib, threads, True),
        "ModelOpt ONNX PTQ (int8)": lambda: ort_infer(
            modelopt_graph(modelopt, fp32, calib, folder / "modelopt.onnx", "fp32"), threads, qdq_fusion=False
        ),
        "ModelOpt ONNX PTQ (int8, FP16 outside)": lambda: ort_infer(
            modelopt_graph(modelopt, fp32, calib, folder / "modelopt-fp16.onnx", "fp16"), threads, qdq_fusion=False
        ),
    }
    for name, make in makers.items():
        try:
            rows[name] = make()
        except ImportError as exc:
            print(f"skipped {name}: {exc.name} is not installed (pip install -e '.[dev]')")
        except ToolUnavailable as exc:
            print(f"skipped {name}: {exc}")
    return rows


def interleaved_p50(rows: Dict[str, Infer], one: np.ndarray, warmup: int, runs: int) -> Dict[str, float]:
    """Batch-1 p50 per row; every round runs every row once, so load changes hit all alike."""
    times: Dict[str, List[float]] = {name: [] for name in rows}
    for _ in range(warmup):
        for infer in rows.values():
            infer(one)
    for _ in range(runs):
        for name, infer in rows.items():
            started = time.perf_counter()
            infer(one)
            times[name].append((time.perf_counter() - started) * 1000.0)
    return {name: float(np.median(t)) for name, t in times.items()}


def accuracy(
    rows: Dict[str, Infer], images: np.ndarray, labels: np.ndarray, reference: np.ndarray
) -> Dict[str, Tuple[float, float, float]]:
    """(top-1 %, drop in points against FP32, agreement %) per row."""
    base = float(np.mean(reference.argmax(1) == labels))
    out = {}
    for name, infer in rows.items():
        logits = np.concatenate([infer(images[i : i + 1]) for i in range(len(images))])
        top1 = float(np.mean(logits.argmax(1) == labels))
        out[name] = (100 * top1, 100 * (base - top1), 100 * float(np.mean(logits.argmax(1) == reference.argmax(1))))
    return out


def from_pipeline(config_path: Path) -> Tuple[object, Path, Dict[str, Path], np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's own graphs and photos (pipeline.api.graphs: the host stages, cached): model,
    FP32 graph, project graphs, calibration images, evaluation images and labels."""
    from pipeline import api
    from pipeline.data import normalize

    graphs = api.graphs("cpu", config_path)
    spec = api.load(config_path).preprocessing.spec()
    calib = np.ascontiguousarray(normalize(graphs.data.calib.crops, spec))
    evaluation = np.ascontiguousarray(normalize(graphs.data.evaluation.crops, spec))
    ours = {p: path for p, path in graphs.models.items() if p != "fp32"}
    return graphs.model.module, graphs.models["fp32"], ours, calib, evaluation, graphs.data.evaluation.labels


def paper_size(
    folder: Path, calibration_images: int
) -> Tuple[object, Path, Dict[str, Path], np.ndarray, np.ndarray, np.ndarray]:
    """A paper-size VT-ResNet-18 (random weights) on the held-out photos resized 256 / cropped
    224, its graphs made by the pipeline (pipeline.api.graphs) with every module quantized."""
    from projects import FULL_INT8, paper_project

    per_class = max(1, calibration_images // 10)
    return from_pipeline(paper_project(folder / "paper", per_class, FULL_INT8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "pipeline.toml")
    parser.add_argument("--paper-size", action="store_true")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=32, help="--paper-size only")
    parser.add_argument(
        "--modelopt-python",
        default=os.environ.get(MODELOPT_ENV),
        help=f"the Python of ModelOpt's own environment (default: ${MODELOPT_ENV}); see benchmarks/modelopt_ptq.py",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vt-edge-peers.") as tmp:
        folder = Path(tmp)
        made = paper_size(folder, args.calibration_images) if args.paper_size else from_pipeline(args.config.resolve())
        module, fp32, ours, calib, evaluation, labels = made
        rows: Dict[str, Infer] = {"fp32-torch (eager)": torch_infer(module, args.threads)} if module is not None else {}
        rows["fp32 (ORT)"] = ort_infer(fp32, args.threads)
        for name, path in ours.items():
            # TensorRT graphs run as exact Q/DQ (what TensorRT computes); `int8` through ORT's kernels.
            rows[f"{name} (project, ORT)"] = ort_infer(path, args.threads, qdq_fusion=not name.startswith("int8-trt"))
        for name, path in {"fp32": fp32, **ours}.items():
            try:
                rows[f"{name} (project, OpenVINO)"] = openvino_infer(path, args.threads)
            except ImportError:
                print(f"skipped {name} on OpenVINO: openvino is not installed (pip install -e '.[host]')")
            except ToolUnavailable as exc:
                print(f"skipped {name} on OpenVINO: {exc}")
        rows.update(peer_rows(fp32, calib, args.threads, folder, args.modelopt_python))
        reference = np.concatenate([rows["fp32 (ORT)"](evaluation[i : i + 1]) for i in range(len(evaluation))])
        scores = accuracy(rows, evaluation, labels, reference)
        p50: Dict[str, float] = {}
        for runtime in ("torch", "onnxruntime", "openvino"):  # each runtime timed with the others idle
            group = {name: infer for name, infer in rows.items() if runtime_of(name) == runtime}
            p50.update(interleaved_p50(group, evaluation[:1], args.warmup, args.runs) if group else {})
    print_table(scores, p50, args, len(calib), len(evaluation))
    return 0


def print_table(scores, p50, args, n_calib: int, n_eval: int) -> None:
    from pipeline.host import host_info

    host = host_info()
    isa = host["cpu_isa"]
    print(
        f"\nCPU: {host['cpu']} ({host['cpu_count']} cores; {', '.join(isa['features'])}; INT8 dot product: "
        f"{isa['int8_dot'] or 'none'}); threads per runner, every runtime: {args.threads or 'its default'}; "
        f"calibration photos {n_calib}, evaluation photos {n_eval}; "
        f"p50 of {args.runs} batch-1 runs interleaved within each runtime, runtimes timed apart\n"
    )
    print("| model | runtime | top-1 % | drop (pts) | agreement % | p50 b1 (ms) |")
    print("|---|---|---|---|---|---|")
    for name, (top1, drop, agree) in scores.items():
        print(f"| {name} | {runtime_of(name)} | {top1:.2f} | {drop:+.2f} | {agree:.2f} | {p50[name]:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
