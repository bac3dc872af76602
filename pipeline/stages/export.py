"""export: torch checkpoint -> ONNX (dynamic batch, input `images`, output `logits`), checked.

An ONNX file given as the model is not exported: it is imported (checked and normalised to the
same contract by `pipeline.stages.onnx_import`) and compared with itself as given.

The TorchScript exporter is used because it writes opset 17, which TensorRT 8.5/8.6
(JetPack 5) parse; torch's dynamo exporter cannot down-convert VT-ResNet to 17.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.artifacts import StageResult
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.data import normalize
from pipeline.errors import StageError
from pipeline.graphs.query import onnx_node_table
from pipeline.names import INPUT_NAME, OUTPUT_NAME
from pipeline.stages.model_input import LoadedModel
from pipeline.stages.onnx_import import default_opset, normalise_onnx

STAGE_VERSION = "2"


class ExportError(StageError):
    """Export failed; the message names the module and op where known."""


class _ModuleTrail:
    """Remembers which module was running, so an export failure can name it."""

    def __init__(self, root: Any) -> None:
        self.stack: list[str] = []
        self.last_failed: str | None = None
        self.handles = []
        for name, module in root.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(name or "<root>")))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(_module, _inputs):
            self.stack.append(name)
            self.last_failed = name

        return hook

    def _leave(self, _module, _inputs, _output):
        if self.stack:
            self.stack.pop()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _no_fused_attention() -> Iterator[None]:
    """nn.MultiheadAttention (torchvision's ViT layout) takes a fused fast path in eval mode under
    no_grad, which the ONNX exporter cannot write (aten::_native_multi_head_attention): export
    the plain ops instead, and restore the setting after."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def export_onnx(module: Any, example: np.ndarray, opset: int, destination: Path) -> None:
    """torch.onnx.export with the pipeline's I/O contract; failures name module and op."""
    import torch

    trail = _ModuleTrail(module)
    try:
        # The TorchScript exporter is deprecated in favour of dynamo, which cannot write opset 17
        # for this model; the warning is expected.
        with torch.no_grad(), warnings.catch_warnings(), _no_fused_attention():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (torch.from_numpy(example),),
                str(destination),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        where = trail.stack[-1] if trail.stack else trail.last_failed or "<unknown module>"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"export failed in module '{where}': {first_line}") from exc
    finally:
        trail.close()


def torch_logits(module: Any, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


@dataclass(frozen=True)
class ExportInputs:
    """What the export stage reads: the model, and the crops it checks the graph on (with their hash)."""

    model: LoadedModel
    check_crops: np.ndarray
    check_hash: str


def run_export(ctx: Any, inputs: ExportInputs) -> StageResult:
    """Export (cached by checkpoint, factory, opset and the check images); the target's opset
    when it names one."""
    import onnx
    import torch

    config, cache, model, check_crops = ctx.config, ctx.cache, inputs.model, inputs.check_crops
    opset, check_hash = ctx.target.opset or config.export.opset, inputs.check_hash

    settings = {
        "opset": opset,
        "tolerance": config.export.tolerance,
        "factory": config.model.factory,
        "factory_kwargs": dict(config.model.factory_kwargs),
        "crop": config.preprocessing.crop,
    }
    inputs = {"checkpoint": model.checkpoint_sha256, "check_images": check_hash}
    versions = {"torch": torch.__version__, "onnx": onnx.__version__}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        images = normalize(check_crops, config.preprocessing.spec())
        onnx_path = workdir / "model.fp32.export.onnx"
        if model.onnx is not None:
            notes, diff = normalise_onnx(model.onnx, onnx_path, images)
        else:
            notes = []
            export_onnx(model.module, images[:1], opset, onnx_path)
            onnx.checker.check_model(str(onnx_path), full_check=True)
            diff = float(np.max(np.abs(onnx_logits(onnx_path, images) - torch_logits(model.module, images))))
        if diff > config.export.tolerance:
            raise ExportError(
                f"exported ONNX differs from torch by {diff:.2e} (> export.tolerance {config.export.tolerance:g})"
            )
        # Module paths live in the exported node names; simplification may drop them, so the
        # table is kept for choosing layers to keep in higher precision later.
        nodes = onnx_node_table(onnx_path)
        (workdir / "nodes.json").write_text(json.dumps(nodes, indent=1))
        details = {
            "max_abs_diff_vs_torch": diff,
            "nodes": len(nodes),
            "check_images": len(images),
            "opset": default_opset(onnx_path),
            "imported": model.onnx is not None,
            "notes": notes,
        }
        return {"onnx": onnx_path.name, "nodes": "nodes.json"}, details

    return cache.run("export", inputs, settings, versions, body, STAGE_VERSION)


def summary(result: StageResult) -> str:
    """The stage's line in the build log."""
    details = result.record.details
    if details.get("imported"):
        return f"imported ONNX, opset {details['opset']}{''.join('; ' + n for n in details.get('notes', []))}"
    return f"opset {details['opset']}, max |torch - onnx| {details['max_abs_diff_vs_torch']:.2e}"
