"""Checkpoint files: a plain dict of tensors and JSON-able values, so that
`torch.load(weights_only=True)` reads it: `state_dict`, `spec` (architecture), `classes`,
`class_names`, `preprocessing`, `metrics`.

Checkpoints are untrusted input: they are read weights-only unless the user opts in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from pipeline.errors import ModelFileError
from pipeline.names import control_character


class CheckpointError(ModelFileError):
    """A checkpoint that cannot be used; the message names the file (exit code 1)."""


@dataclass
class CheckpointInfo:
    """Everything a checkpoint holds besides the weights (plain JSON-able values)."""

    spec: Dict[str, Any]  # architecture (ModelSpec.to_dict() for the built-in VT)
    classes: List[str]
    class_names: List[str]
    preprocessing: Dict[str, Any]  # PreprocessSpec.to_dict()
    metrics: Dict[str, Any] = field(default_factory=dict)


def save_checkpoint(output: Path, model: Any, info: CheckpointInfo) -> None:
    """Write a checkpoint that `torch.load(weights_only=True)` reads: tensors and plain values only."""
    import torch

    from pipeline.artifacts import atomic_path

    checkpoint = {
        "format": "vt-edge-checkpoint/1",
        "state_dict": model.state_dict(),
        "spec": dict(info.spec),
        "classes": list(info.classes),
        "class_names": list(info.class_names),
        "preprocessing": dict(info.preprocessing),
        "metrics": dict(info.metrics),
    }
    with atomic_path(output) as tmp:
        torch.save(checkpoint, tmp)


def labels_path(weights: Path) -> Path:
    """Where a weights-only file's class names go: `<stem>.labels.txt` beside it."""
    return weights.with_suffix(".labels.txt")


def save_weights_only(output: Path, model: Any, class_names: List[str], metrics: Dict[str, Any]) -> None:
    """Weights as models arrive from elsewhere: a plain state_dict (`torch.save`), or safetensors
    when `output` ends in .safetensors; class names one a line and the training metrics beside it."""
    import json

    import torch

    from pipeline.artifacts import atomic_path, write_text_atomic

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(output) as tmp:
        if output.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    write_text_atomic(labels_path(output), "".join(f"{name}\n" for name in class_names))
    write_text_atomic(output.with_suffix(".train.json"), json.dumps(metrics, indent=1) + "\n")


def read_torch_file(path: Path, trusted: bool = False) -> Any:
    """Whatever `torch.save` wrote; untrusted by default (weights_only), with one-line errors."""
    import pickle
    import warnings

    import torch

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train one with `python -m pipeline train`)")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a torch checkpoint (corrupt, truncated or another kind of file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the outcome is reported below
            return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as exc:
        refused = None if trusted else _refused_global(exc)
        if refused:
            raise CheckpointError(
                f"{path}: refused as unsafe: the pickle names {refused}, which loading would import and run "
                "(a checkpoint holds tensors and plain values only); set trusted_checkpoint = true in [model] of "
                "pipeline.toml only for a file you made"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (corrupt, truncated or not written by torch.save)"
        ) from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (corrupt or truncated: {type(exc).__name__}: "
            f"{_first_sentence(exc)})"
        ) from None


# How torch.load(weights_only=True) names a global it refuses: "Unsupported global: GLOBAL
# __main__.Evil was not an allowed global" or "Trying to load unsupported GLOBAL posix.system
# whose module posix is blocked" (torch 2.6 and later), "... allowlisted via `add_safe_globals`
# but got <class 'x.Y'>".
_REFUSED_GLOBAL = re.compile(
    r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)|add_safe_globals`? but got <class '([\w.]+)'>", re.IGNORECASE
)


def _refused_global(exc: BaseException) -> Optional[str]:
    """The global a weights-only load refused, or None when the bytes failed to unpickle for
    another reason (not a pickle at all)."""
    found = _REFUSED_GLOBAL.search(str(exc))
    return next(name for name in found.groups() if name) if found else None


def is_vt_edge_checkpoint(data: Any) -> bool:
    """A vt-edge checkpoint carries an architecture spec beside its weights (a plain
    state_dict, however wrapped, does not)."""
    return isinstance(data, dict) and ("spec" in data or str(data.get("format", "")).startswith("vt-edge-checkpoint"))


def load_checkpoint(path: Path, trusted: bool = False, data: Any = None) -> dict[str, Any]:
    """Read (or take the already read `data` of) a vt-edge checkpoint and check its contents."""
    if data is None:
        data = read_torch_file(path, trusted)
    _check_contents(path, data)
    return data


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle: first byte 0x80)."""
    import zipfile

    with open(path, "rb") as handle:
        first = handle.read(1)
    return first == b"\x80" or zipfile.is_zipfile(path)


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else ""


def _check_contents(path: Path, data: Any) -> None:
    """A vt-edge checkpoint: weights, an architecture spec and at least one class name."""
    missing = [key for key in ("state_dict", "spec", "classes") if not isinstance(data, dict) or key not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} (expected a vt-edge checkpoint)")
    for key in ("state_dict", "spec"):
        if not isinstance(data[key], dict):
            raise CheckpointError(f"{path}: '{key}' must be a dict, got {type(data[key]).__name__}")
    classes = data["classes"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path}: 'classes' must be a list of class names, got {type(classes).__name__}")
    if not classes:
        raise CheckpointError(f"{path}: the checkpoint lists no classes (a classifier needs at least one)")
    names = data.get("class_names", classes)
    if not isinstance(names, (list, tuple)) or len(names) != len(classes) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: 'class_names' must be {len(classes)} strings, one per class")
    _check_plain_names(path, "classes", classes)
    _check_plain_names(path, "class_names", names)
    declared = data["spec"].get("num_classes")
    if declared is not None and declared != len(classes):
        raise CheckpointError(
            f"{path}: spec says num_classes {declared!r} but the checkpoint lists {len(classes)} classes"
        )


def _check_plain_names(path: Path, key: str, names: Any) -> None:
    """Class names end up in terminals, tables and files read line by line: no control characters."""
    for index, name in enumerate(names):
        bad = control_character(name)
        if bad:
            raise CheckpointError(
                f"{path}: '{key}' entry {index} {name!r} holds the control character {bad}; "
                "class names must be plain text"
            )
