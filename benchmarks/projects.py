"""Projects the benchmarks build or measure: a shipped config with its outputs in a folder of its
own, and the paper-size VT-ResNet-18 (random weights) on the shipped held-out photos resized
256 / cropped 224. Everything is made through the project's public entry (pipeline.api) or the
command line; nothing here reaches into a stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "datasets" / "cifar10-heldout"

PATH_KEYS = {
    "model": ("checkpoint", "labels"),
    "data": ("root", "ilsvrc_solution", "ilsvrc_synsets"),
    "train": ("zip", "train_root"),
}


def toml_text(table: Dict[str, Any], prefix: str = "") -> str:
    """A TOML document of plain values (strings, numbers, booleans, lists) and nested tables."""
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and plain else []
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in plain.items()]
    text = "\n".join(lines) + "\n"
    for key, value in nested.items():
        text += "\n" + toml_text(value, f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key))
    return text


def case_config(base: Path, folder: Path, overrides: Dict[str, Dict[str, Any]]) -> Path:
    """`base` with its paths made absolute, its outputs in `folder`, and `overrides` applied."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib

    data = tomllib.loads(base.read_text())
    for section, keys in PATH_KEYS.items():
        for key in keys:
            if key in data.get(section, {}):
                data[section][key] = str((base.parent / data[section][key]).resolve())
    data.update(
        {"cache_dir": str(folder / "cache"), "engines_dir": str(folder / "engines"), "lists_dir": str(folder / "lists")}
    )
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    path = folder / "pipeline.toml"
    path.write_text(toml_text(data))
    return path


def paper_checkpoint(folder: Path, classes: List[str]) -> Path:
    """A paper-size VT-ResNet-18 (random weights, seed 0) as a vt-edge checkpoint."""
    import torch

    from pipeline.data import PreprocessSpec
    from pipeline.models import ModelSpec, build_model
    from pipeline.models.checkpoint import CheckpointInfo, save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec(arch="vt_resnet18", num_classes=len(classes))
    path = folder / "vt_resnet18_paper.pt"
    info = CheckpointInfo(spec.to_dict(), classes, classes, PreprocessSpec(resize=256, crop=224).to_dict())
    save_checkpoint(path, build_model(spec).eval(), info)
    return path


def heldout_classes() -> List[str]:
    return sorted(p.name for p in HELDOUT.iterdir() if p.is_dir())


def paper_project(folder: Path, per_class: int, overrides: Dict[str, Dict[str, Any]]) -> Path:
    """A project of the paper-size VT-ResNet-18 on `per_class` calibration and evaluation photos
    of each held-out class, 256 / 224; `overrides` on top (config sections -> keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = paper_checkpoint(folder, heldout_classes())
    base = {
        "model": {"name": "vt_resnet18_paper", "checkpoint": str(checkpoint)},
        "data": {"calib_per_class": per_class, "eval_per_class": per_class},
        "preprocessing": {"resize": 256, "crop": 224},
    }
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    return case_config(ROOT / "pipeline.toml", folder, base)


# Every module quantized: no FP32 fallback, no fine-tune (the graphs the speed of INT8 is read from).
FULL_INT8 = {"precision": {"max_fp32_layers": 0, "finetune_steps": 0}}
