"""Checkpoint files: a plain dict of tensors and JSON-able values, so that
`torch.load(weights_only=True)` reads it: `state_dict`, `spec` (architecture), `classes`,
`class_names`, `preprocessing`, `metrics`.

Checkpoints are untrusted input: they are read weights-only unless the user opts in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from pipeline.errors import VtEdgeError


class CheckpointError(VtEdgeError, ValueError):
    """A checkpoint that cannot be used; the message names the file."""


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



def load_checkpoint(path: Path, trusted: bool = False) -> dict[str, Any]:
    """Read a checkpoint; untrusted by default (weights_only), with one-line errors."""
    import pickle

    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (train one with `python -m pipeline train`)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds objects other than tensors and plain values, refused (weights_only); "
            "set model.trusted_checkpoint = true only for a checkpoint you trust"
        ) from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [key for key in ("state_dict", "spec", "classes") if not isinstance(data, dict) or key not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} (expected a vt-edge checkpoint)")
    return data
