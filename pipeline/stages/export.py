"""export: torch checkpoint -> ONNX (dynamic batch, input `images`, output `logits`), checked.

The TorchScript exporter is used because it writes opset 17, which TensorRT 8.5/8.6
(JetPack 5) parse; torch's dynamo exporter cannot down-convert VT-ResNet to 17.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import StageCache, StageResult, sha256_file
from pipeline.backends.onnxruntime import onnx_logits
from pipeline.config import Config
from pipeline.data import normalize
from pipeline.errors import ModelError, StageError
from pipeline.graph import onnx_node_table
from pipeline.names import INPUT_NAME, OUTPUT_NAME

STAGE_VERSION = "1"


class ExportError(StageError):
    """Export failed; the message names the module and op where known."""


@dataclass
class LoadedModel:
    """The checkpoint's module in eval mode, with what the manifest needs to know about it."""

    module: Any
    spec: dict[str, Any]
    classes: list[str]
    class_names: list[str]
    checkpoint_sha256: str


def resolve_factory(reference: str) -> Callable[..., Any]:
    module_name, _, attr = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # importing runs the module's code: whatever it raises is the factory's problem
        raise ModelError(f"model.factory {reference!r} cannot be imported: {_first_line(exc)}") from None
    if not callable(factory):
        raise ModelError(f"model.factory {reference!r} is a {type(factory).__name__}, not a function")
    return factory


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def build_module(reference: str, spec: dict[str, Any], checkpoint: Path) -> Any:
    """The factory's module for the checkpoint's spec; any failure is one line naming the factory."""
    import torch

    factory = resolve_factory(reference)
    try:
        if reference == "pipeline.models.vt:build_model":
            from pipeline.models import ModelSpec

            module = factory(ModelSpec.from_dict(spec))
        else:
            module = factory(**spec)
    except Exception as exc:  # a factory is the user's code: its error is theirs to fix, in one line
        raise ModelError(f"model.factory {reference!r} failed on the spec of {checkpoint}: {_first_line(exc)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model.factory {reference!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def load_weights(module: Any, state_dict: dict[str, Any], checkpoint: Path, reference: str) -> None:
    """Load the checkpoint's weights; a mismatch names the first differing key and both shapes."""
    own = module.state_dict()
    for key, value in state_dict.items():
        shape = tuple(getattr(value, "shape", ()))
        if key in own and tuple(own[key].shape) != shape:
            raise ModelError(
                f"{checkpoint}: weight '{key}' has shape {list(shape)} in the checkpoint but "
                f"{list(own[key].shape)} in the model that {reference} builds from its spec"
            )
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except Exception as exc:  # e.g. a value that is not a tensor
        raise ModelError(f"{checkpoint}: weights cannot be loaded into {reference}: {_first_line(exc)}") from None
    if missing or unexpected:
        raise ModelError(
            f"{checkpoint}: weights do not match {reference} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )


def load_model(config: Config) -> LoadedModel:
    """Build the configured factory's module and load the checkpoint's weights into it."""
    from pipeline.models.checkpoint import load_checkpoint

    path = config.path(config.model.checkpoint)
    data = load_checkpoint(path, trusted=config.model.trusted_checkpoint)
    module = build_module(config.model.factory, data["spec"], path)
    load_weights(module, data["state_dict"], path, config.model.factory)
    classes = list(data["classes"])
    return LoadedModel(
        module=module.eval(),
        spec=dict(data["spec"]),
        classes=classes,
        class_names=list(data.get("class_names", classes)),
        checkpoint_sha256=sha256_file(path),
    )


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


def export_onnx(module: Any, example: np.ndarray, opset: int, destination: Path) -> None:
    """torch.onnx.export with the pipeline's I/O contract; failures name module and op."""
    import torch

    trail = _ModuleTrail(module)
    try:
        # The TorchScript exporter is deprecated in favour of dynamo, which cannot write opset 17
        # for this model; the warning is expected.
        with torch.no_grad(), warnings.catch_warnings():
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


def run_export(config: Config, cache: StageCache, model: LoadedModel, check_crops: np.ndarray, check_hash: str, opset: int) -> StageResult:
    """Export (cached by checkpoint, factory, opset and the check images)."""
    import onnx
    import torch

    settings = {"opset": opset, "tolerance": config.export.tolerance, "factory": config.model.factory}
    inputs = {"checkpoint": model.checkpoint_sha256, "check_images": check_hash}
    versions = {"torch": torch.__version__, "onnx": onnx.__version__}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        images = normalize(check_crops, config.preprocessing.spec())
        onnx_path = workdir / "model.fp32.export.onnx"
        export_onnx(model.module, images[:1], opset, onnx_path)
        onnx.checker.check_model(str(onnx_path), full_check=True)
        reference = torch_logits(model.module, images)
        diff = float(np.max(np.abs(onnx_logits(onnx_path, images) - reference)))
        if diff > config.export.tolerance:
            raise ExportError(
                f"exported ONNX differs from torch by {diff:.2e} (> export.tolerance {config.export.tolerance:g})"
            )
        # Module paths live in the exported node names; simplification may drop them, so the
        # table is kept for choosing layers to keep in higher precision later.
        nodes = onnx_node_table(onnx_path)
        (workdir / "nodes.json").write_text(json.dumps(nodes, indent=1))
        details = {"max_abs_diff_vs_torch": diff, "nodes": len(nodes), "check_images": len(images), "opset": opset}
        return {"onnx": onnx_path.name, "nodes": "nodes.json"}, details

    return cache.run("export", inputs, settings, versions, body, STAGE_VERSION)
