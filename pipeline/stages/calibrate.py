"""calibrate: one pass of the FP32 graph over the calibration images; the ranges every INT8
graph is made from, cached as its own artifact.

ONNX Runtime's calibrators (entropy, minmax, percentile) produce `TensorsData`; it is saved
losslessly (every array of every tensor, histograms included) so the quantize step can be re-run
without calibrating again, plus a readable summary of the ranges.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from pipeline.artifacts import StageResult, sha256_file
from pipeline.config import Config
from pipeline.names import INPUT_NAME
from pipeline.progress import ProgressFn, Step, or_silent

STAGE_VERSION = "2"  # 2: streamed in chunks (merged histograms)
CALIBRATION_BATCH = 16
CALIBRATION_CHUNK = 64  # photos whose activations are held at once (see calibrate)
TENSORS_FILE = "tensors.npz"
SUMMARY_FILE = "calibration.json"


def _reader(images: np.ndarray):
    """Calibration batches of one chunk for ONNX Runtime."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # ONNX Runtime's histogram collector stacks the per-batch arrays of one collection, so
            # every batch of a chunk must have the same size: the largest divisor up to the limit.
            size = max(d for d in range(1, min(CALIBRATION_BATCH, len(images)) + 1) if len(images) % d == 0)
            self.batches = [images[i : i + size] for i in range(0, len(images), size)]
            self.position = 0

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            if self.position == len(self.batches):
                return None
            batch = self.batches[self.position]
            self.position += 1
            return {INPUT_NAME: batch}

        def __len__(self) -> int:
            return len(self.batches)

    return Reader()


def _calibrator_options(config: Config) -> tuple[Any, dict[str, Any]]:
    from onnxruntime.quantization import CalibrationMethod

    settings = config.precision
    method = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[settings.calibration]
    # ONNX Runtime's entropy calibrator defaults to 128 histogram bins, too coarse for the KL
    # search to move the threshold below the maximum: it then equals minmax.
    extra: dict[str, Any] = {"num_bins": settings.entropy_bins, "num_quantized_bins": 128}
    if settings.calibration == "percentile":
        extra = {"num_bins": settings.percentile_bins, "percentile": settings.percentile, "symmetric": False}
    return method, extra


def calibrate(
    fp32_path: Path,
    images: np.ndarray,
    config: Config,
    progress: Optional[ProgressFn] = None,
    work: Optional[Path] = None,
):
    """One pass over the calibration images; returns ONNX Runtime TensorsData (ranges per tensor).

    The calibrator's augmented graph is written under `work` (the stage's own folder, which
    the cache sweeps when a build is killed), else in the system's temporary folder.

    The images go through in chunks of CALIBRATION_CHUNK: ONNX Runtime's calibrators keep every
    activation of one collection until they fold it into their histograms (about 21 MB a photo
    at 224x224), and merge the histograms of successive collections, so memory stays that of
    one chunk whatever the number of photos.
    """
    from onnxruntime.quantization.calibrate import create_calibrator

    report = or_silent(progress)
    method, extra = _calibrator_options(config)
    with tempfile.TemporaryDirectory(prefix=".calibration.", dir=work) as tmp:
        calibrator = create_calibrator(
            fp32_path,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
        # ONNX Runtime's calibrators print their progress on stdout; the progress callback says it.
        with contextlib.redirect_stdout(io.StringIO()):
            for start in range(0, len(images), CALIBRATION_CHUNK):
                chunk = images[start : start + CALIBRATION_CHUNK]
                calibrator.collect_data(_reader(chunk))
                report(Step("calibrating", start + len(chunk), len(images), "photos"))
            tensors_data = calibrator.compute_data()
    _exact_input_range(tensors_data, images)
    return tensors_data


def _exact_input_range(tensors_data: Any, images: np.ndarray) -> None:
    """The graph input's range is known exactly (normalised 0..255 pixels): never clip it.

    Entropy and percentile clip the tails of every histogram, which is right for activations
    but costs the first conv accuracy when applied to the image itself.
    """
    from onnxruntime.quantization.calibrate import TensorData

    if INPUT_NAME in tensors_data.data:
        tensors_data.data[INPUT_NAME] = TensorData(lowest=np.float32(images.min()), highest=np.float32(images.max()))


def ranges_to_json(tensors_data: Any) -> dict[str, list[float]]:
    out = {}
    for name, data in tensors_data.data.items():
        low, high = data.range_value
        out[name] = [float(np.asarray(low).min()), float(np.asarray(high).max())]
    return out


def save_tensors_data(tensors_data: Any, path: Path) -> None:
    """Every attribute of every tensor's TensorData, as arrays in one .npz (lossless)."""
    arrays: dict[str, np.ndarray] = {}
    index = {"method": str(tensors_data.calibration_method), "tensors": {}}
    for i, (name, data) in enumerate(tensors_data.data.items()):
        attrs = [a for a in ("lowest", "highest", "hist", "hist_edges", "bins", "avg", "std") if hasattr(data, a)]
        index["tensors"][name] = {"key": str(i), "attrs": attrs}
        for attr in attrs:
            arrays[f"{i}.{attr}"] = np.asarray(getattr(data, attr))
    arrays["index"] = np.frombuffer(json.dumps(index).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_tensors_data(path: Path):
    """The TensorsData that `save_tensors_data` wrote."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    with np.load(path) as stored:
        index = json.loads(bytes(stored["index"]).decode("utf-8"))
        data = {}
        for name, entry in index["tensors"].items():
            values = {attr: stored[f"{entry['key']}.{attr}"] for attr in entry["attrs"]}
            data[name] = TensorData(**{k: (v if v.ndim or k not in ("bins",) else v.item()) for k, v in values.items()})
    method = CalibrationMethod[index["method"].split(".")[-1]]
    return TensorsData(method, data)


@dataclass(frozen=True)
class CalibrateInputs:
    """What the calibrate stage reads: the FP32 graph and the normalised calibration images (with their hash)."""

    simplified: StageResult
    calib_images: np.ndarray
    calib_hash: str


def run_calibrate(ctx: Any, inputs: CalibrateInputs) -> StageResult:
    """The calibration stage, cached by the FP32 graph, the calibration images and the method."""
    import onnxruntime

    config, cache, simplified, calib_images = ctx.config, ctx.cache, inputs.simplified, inputs.calib_images
    calib_hash, progress = inputs.calib_hash, ctx.log.progress

    # Only what shapes the ranges: the escalation settings (fine-tune, fallback) do not.
    settings = {
        k: v for k, v in config.precision.model_dump().items() if k not in ("max_fp32_layers", "finetune_steps")
    }
    inputs = {"onnx": sha256_file(simplified.output("onnx")), "calibration_images": calib_hash}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        tensors_data = calibrate(simplified.output("onnx"), calib_images, config, progress, workdir)
        save_tensors_data(tensors_data, workdir / TENSORS_FILE)
        (workdir / SUMMARY_FILE).write_text(json.dumps(ranges_to_json(tensors_data), indent=1))
        details = {
            "method": config.precision.calibration,
            "images": int(len(calib_images)),
            "tensors": len(tensors_data.data),
        }
        return {"tensors": TENSORS_FILE, "summary": SUMMARY_FILE}, details

    return cache.run("calibrate", inputs, settings, {"onnxruntime": onnxruntime.__version__}, body, STAGE_VERSION)


def summary(result: StageResult) -> str:
    """The stage's line in the build log."""
    details = result.record.details
    return f"{details['method']} on {details['images']} images, {details['tensors']} tensors"
