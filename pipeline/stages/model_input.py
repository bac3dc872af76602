"""The model the user brings, whatever form it arrives in, as one `LoadedModel`.

- a vt-edge checkpoint (`train`'s output: state_dict + spec + classes), built by `[model] factory`
  from its spec;
- weights only, as people save them: a plain state_dict, `{"state_dict": ...}` or
  `{"model": ...}` in a .pt/.pth file (read weights-only), or a .safetensors file, built by
  `[model] factory` called with `[model] factory_kwargs` (e.g. `timm:create_model` with
  `model_name`, or `pipeline.models.vit:vit`);
- an ONNX classifier: export is skipped; the graph is checked and normalised by
  `pipeline.stages.onnx_import`.

Class names come from `[model] labels` (one a line), else the checkpoint, else the image set's
class folders, and are checked against the model's output width. Problems with what the user
brought are `ModelInputError`s: one line naming the file or key, exit code 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from pipeline.artifacts import sha256_file
from pipeline.config import Config
from pipeline.errors import ModelError, ModelFileError, ModelInputError
from pipeline.names import control_character

VT_FACTORY = "pipeline.models.vt:build_model"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Wrappers people save a state_dict under, tried in this order.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module")


@dataclass
class LoadedModel:
    """The user's model with what the manifest needs to know about it.

    `module` is the torch module in eval mode (None for an ONNX file); `onnx` the ONNX file
    given instead of a checkpoint (export is skipped)."""

    module: Any
    spec: Dict[str, Any]
    classes: List[str]
    class_names: List[str]
    checkpoint_sha256: str  # of every file the model reads (an ONNX model's external data included)
    kind: str  # "vt-edge", "state_dict", "safetensors" or "onnx"
    onnx: Optional[Path] = None
    classes_from: str = "checkpoint"  # "checkpoint", "labels" (a labels file) or "dataset" (class folders)


def resolve_factory(reference: str) -> Callable[..., Any]:
    module_name, _, attr = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as exc:
        if exc.name == "timm":  # the optional extra, not a broken factory
            raise ModelInputError(
                f"model.factory {reference!r} cannot be imported: {first_line(exc)} (pip install -e '.[timm]')"
            ) from None
        raise ModelError(f"model.factory {reference!r} cannot be imported: {first_line(exc)}") from None
    except Exception as exc:  # importing runs the module's code: whatever it raises is the factory's problem
        raise ModelError(f"model.factory {reference!r} cannot be imported: {first_line(exc)}") from None
    if not callable(factory):
        raise ModelError(f"model.factory {reference!r} is a {type(factory).__name__}, not a function")
    return factory


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def build_module(reference: str, spec: Dict[str, Any], checkpoint: Path) -> Any:
    """The factory's module for a vt-edge checkpoint's spec; any failure is one line naming the factory."""
    factory = resolve_factory(reference)
    try:
        if reference == VT_FACTORY:
            from pipeline.models import ModelSpec

            module = factory(ModelSpec.from_dict(spec))
        else:
            module = factory(**spec)
    except Exception as exc:  # a factory is the user's code: its error is theirs to fix, in one line
        raise ModelError(f"model.factory {reference!r} failed on the spec of {checkpoint}: {first_line(exc)}") from None
    return _checked_module(module, reference)


def _checked_module(module: Any, reference: str) -> Any:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"model.factory {reference!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def build_from_kwargs(config: Config, checkpoint: Path) -> Any:
    """`[model] factory(**factory_kwargs)` for a weights-only file."""
    reference, kwargs = config.model.factory, dict(config.model.factory_kwargs)
    if reference == VT_FACTORY:
        raise ModelInputError(
            f"{checkpoint}: holds weights only (no vt-edge spec): set [model] factory (module:function that builds "
            'the network, e.g. "timm:create_model" or "pipeline.models.vit:vit") and [model] factory_kwargs'
        )
    if kwargs.get("pretrained"):
        raise ModelInputError(
            "model.factory_kwargs: pretrained = true would download weights; the weights come from model.checkpoint"
        )
    factory = resolve_factory(reference)
    try:
        module = factory(**kwargs)
    except TypeError as exc:  # missing or unknown keyword arguments
        raise ModelInputError(
            f"model.factory {reference!r} with model.factory_kwargs {kwargs}: {first_line(exc)}"
        ) from None
    except Exception as exc:
        raise ModelError(
            f"model.factory {reference!r} failed with model.factory_kwargs {kwargs}: {first_line(exc)}"
        ) from None
    return _checked_module(module, reference)


def load_weights(module: Any, state_dict: Dict[str, Any], checkpoint: Path, reference: str) -> None:
    """Load the checkpoint's weights; a mismatch names the first differing key and both shapes."""
    own = module.state_dict()
    for key, value in state_dict.items():
        shape = tuple(getattr(value, "shape", ()))
        if key in own and tuple(own[key].shape) != shape:
            raise ModelError(
                f"{checkpoint}: weight '{key}' has shape {list(shape)} in the checkpoint but "
                f"{list(own[key].shape)} in the model that {reference} builds"
            )
        if key in own and _integers_into_floats(value, own[key]):
            raise ModelError(
                f"{checkpoint}: weight '{key}' holds {str(value.dtype).replace('torch.', '')} values in the "
                f"checkpoint but the model that {reference} builds keeps it as "
                f"{str(own[key].dtype).replace('torch.', '')}: "
                "save the weights as floating point (load_state_dict would convert them unnoticed)"
            )
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except Exception as exc:  # e.g. a value that is not a tensor
        raise ModelError(f"{checkpoint}: weights cannot be loaded into {reference}: {first_line(exc)}") from None
    if missing or unexpected:
        raise ModelError(
            f"{checkpoint}: weights do not match {reference} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )


def _integers_into_floats(value: Any, own: Any) -> bool:
    """An integer or bool tensor bound for a floating-point parameter or buffer. Integer buffers
    (BatchNorm's `num_batches_tracked`) are integers in the model too and load as they are."""
    import torch

    floating = own.is_floating_point() or own.is_complex()
    return floating and isinstance(value, torch.Tensor) and not (value.is_floating_point() or value.is_complex())


def unwrap_state_dict(data: Any, checkpoint: Path) -> Dict[str, Any]:
    """The tensors of a weights-only file: bare, or under one of STATE_DICT_KEYS; a `module.`
    prefix on every key (saved from DistributedDataParallel) is dropped."""
    import torch

    found = data
    if isinstance(data, dict) and not _all_tensors(data):
        found = next(
            (data[k] for k in STATE_DICT_KEYS if isinstance(data.get(k), dict) and _all_tensors(data[k])), None
        )
    if not isinstance(found, dict) or not found or not _all_tensors(found):
        keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise ModelInputError(
            f"{checkpoint}: no state_dict found (top level: {keys}); expected tensors by name, bare or under "
            f"{' / '.join(repr(k) for k in STATE_DICT_KEYS)}"
        )
    if all(k.startswith("module.") for k in found):
        found = {k[len("module.") :]: v for k, v in found.items()}
    return {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}


def _all_tensors(values: Dict[Any, Any]) -> bool:
    import torch

    return bool(values) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in values.items())


def read_labels(path: Path) -> List[str]:
    """One class name a line (blank lines and surrounding spaces ignored, a UTF-8 byte order mark
    dropped); a name holding a control character is refused with its line number."""
    if not path.is_file():
        raise ModelInputError(f"{path}: labels file not found (model.labels / --labels: one class name a line)")
    try:
        # Bytes decoded by hand: text mode would turn a lone CR into a line break unnoticed.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ModelInputError(
            f"{path}: not a text file (model.labels / --labels: one class name a line, UTF-8)"
        ) from None
    names = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line  # Windows line ends
        bad = control_character(line.strip(" \t"))
        if bad:
            raise ModelInputError(
                f"{path}: line {number}: class name {line.strip()!r} holds the control character {bad}; "
                "class names must be plain text"
            )
        if line.strip():
            names.append(line.strip())
    if not names:
        raise ModelInputError(f"{path}: no class names (one a line)")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ModelInputError(f"{path}: class name {twice!r} appears twice; every output needs its own name")
    return names


def load_model(config: Config) -> LoadedModel:
    """The configured model, from whichever form its file has, with its classes resolved."""
    path = config.path(config.model.checkpoint)
    if not path.is_file():
        raise ModelError(
            f"{path}: checkpoint not found (train one with `python -m pipeline train`, or give the model with "
            "--model PATH)"
        )
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: the model file is empty (0 bytes); give the model file itself")
    if path.suffix.lower() == ".onnx":
        model = _onnx_file(config, path)
    elif path.suffix.lower() == ".safetensors":
        model = _weights_only(config, path, _read_safetensors(path), "safetensors")
    else:
        model = _torch_file(config, path)
    return _with_classes(config, model, path)


def _onnx_file(config: Config, path: Path) -> LoadedModel:
    from pipeline.stages.onnx_import import inspect_onnx, model_sha256

    io = inspect_onnx(path, config.preprocessing.crop, config.simplify.max_constant_mb)
    spec = {
        "arch": "onnx",
        "source": path.name,
        "num_classes": io.classes,
        "input_name": io.input_name,
        "layout": io.layout,
        "batch": io.batch if isinstance(io.batch, int) else "dynamic",
    }
    # Weights in external data files are part of the model: its hash covers them too.
    return LoadedModel(None, spec, [], [], model_sha256(path), "onnx", onnx=path, classes_from="")


def _read_safetensors(path: Path) -> Dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelInputError(
            f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        return load_file(str(path))
    except Exception as exc:  # header or data that is not safetensors
        raise ModelFileError(
            f"{path}: not a readable safetensors file (corrupt or truncated: {first_line(exc)})"
        ) from None


def _torch_file(config: Config, path: Path) -> LoadedModel:
    from pipeline.models.checkpoint import is_vt_edge_checkpoint, load_checkpoint, read_torch_file

    data = read_torch_file(path, trusted=config.model.trusted_checkpoint)
    if not is_vt_edge_checkpoint(data):
        return _weights_only(config, path, unwrap_state_dict(data, path), "state_dict")
    data = load_checkpoint(path, trusted=config.model.trusted_checkpoint, data=data)
    module = build_module(config.model.factory, data["spec"], path)
    load_weights(module, data["state_dict"], path, config.model.factory)
    classes = list(data["classes"])
    return LoadedModel(
        module.eval(), dict(data["spec"]), classes, list(data.get("class_names", classes)), sha256_file(path), "vt-edge"
    )


def _weights_only(config: Config, path: Path, state_dict: Dict[str, Any], kind: str) -> LoadedModel:
    module = build_from_kwargs(config, path)
    load_weights(module, state_dict, path, config.model.factory)
    spec = {
        "arch": config.model.factory.rpartition(":")[2],
        "factory": config.model.factory,
        **dict(config.model.factory_kwargs),
    }
    return LoadedModel(module.eval(), spec, [], [], sha256_file(path), kind, classes_from="")


def output_width(model: LoadedModel, config: Config) -> int:
    """Classes the model scores: from one forward pass at the configured crop (torch), or the graph."""
    if model.onnx is not None:
        return int(model.spec["num_classes"])
    import torch

    crop = config.preprocessing.crop
    try:
        with torch.no_grad():
            logits = model.module(torch.zeros(1, 3, crop, crop))
    except Exception as exc:
        raise ModelInputError(
            f"{config.path(config.model.checkpoint)}: the model fails on a 1x3x{crop}x{crop} input "
            f"([preprocessing] crop = {crop}): {first_line(exc)}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelInputError(
            f"{config.path(config.model.checkpoint)}: not a classifier: its output is {shape}, not [batch, classes]"
        )
    return int(logits.shape[1])


def _with_classes(config: Config, model: LoadedModel, path: Path) -> LoadedModel:
    """Class names from the labels file, the checkpoint or the image set, as many as outputs."""
    if config.model.labels is not None:
        labels_file = config.path(config.model.labels)
        names, source, where = read_labels(labels_file), "labels", f"{labels_file} has"
    elif model.classes:
        names, source, where = model.classes, "checkpoint", f"{path} lists"
    else:
        from pipeline.stages.dataset import open_dataset

        dataset = open_dataset(config)
        names, source, where = dataset.classes, "dataset", f"{dataset.root} has"
    width = output_width(model, config)
    if len(names) != width:
        fix = (
            "one class name a line, one per output" if source == "labels" else "give the class names with --labels FILE"
        )
        raise ModelInputError(f"{where} {len(names)} class names but the model {path.name} has {width} outputs: {fix}")
    keep_names = model.class_names if source == "checkpoint" else list(names)
    spec = {**model.spec, "num_classes": width}
    return replace(model, classes=list(names), class_names=keep_names, classes_from=source, spec=spec)
