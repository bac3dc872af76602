"""engine: per target backend.

cpu target (ONNX Runtime): the optimized graph of every precision, saved for the bundle, plus
the session settings that validation uses. TensorRT targets build on the device through
`pipeline.backends.tensorrt` (see `pipeline.build`); this stage covers what runs here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.artifacts import StageCache, StageResult
from pipeline.backends.onnxruntime import SessionSettings, save_optimized
from pipeline.config import Config

STAGE_VERSION = "1"


def session_settings(config: Config) -> SessionSettings:
    return SessionSettings(intra_op_threads=config.validate_.threads)


def run_cpu_engines(config: Config, cache: StageCache, models: dict[str, Path], model_keys: dict[str, str]) -> StageResult:
    """`models`: precision -> ONNX path; `model_keys`: precision -> content key of that file."""
    import onnxruntime

    settings = session_settings(config)
    versions = {"onnxruntime": onnxruntime.__version__}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        outputs = {}
        for precision, path in models.items():
            name = f"model.{precision}.ort-opt.onnx"
            save_optimized(path, workdir / name, settings)
            outputs[precision] = name
        return outputs, {"session": asdict(settings)}

    return cache.run("engine-onnxruntime", dict(model_keys), asdict(settings), versions, body, STAGE_VERSION)
