"""Shared fixtures: a tiny project (config, generated images, untrained tiny VT checkpoint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_CONFIG = """
[model]
name = "tiny"
checkpoint = "tiny.pt"

[data]
root = "data/val"
calib_per_class = 2
eval_per_class = 3
generated_per_class = 5

[preprocessing]
resize = 72
crop = 64

[train]
width = 8
tokens = 4
token_channels = 16
heads = 2
train_root = "data/train"
train_per_class = 6
epochs = 1
batch_size = 16

[precision]
calibration = "minmax"
max_fp32_layers = 0

[validate]
batch_sizes = [1, 2]
warmup = 1
runs = 3
{validate_extra}

[budgets.int8]
max_top1_drop = 100.0
min_agreement = 0.0

[targets.cpu]
backend = "onnxruntime"
precisions = ["fp32", "fp16", "int8", "int8-trt"]

[targets.jetson-agx-orin]
backend = "tensorrt"
compute_capability = "8.7"
tensorrt_versions = ["8.6", "10.3", "11.4"]
dla_cores = 2
profile = {{ min = 1, opt = 2, max = 4 }}
precisions = ["fp32", "fp16", "int8-trt"]

[aliases]
jetson = "jetson-agx-orin"
"""


def write_tiny_config(folder: Path, validate_extra: str = "") -> Path:
    path = folder / "pipeline.toml"
    path.write_text(TINY_CONFIG.format(validate_extra=validate_extra))
    return path


def make_tiny_checkpoint(folder: Path) -> Path:
    """An untrained tiny VT saved like `train` saves it (structure tests need no accuracy)."""
    import torch

    from pipeline.config import load_config
    from pipeline.data import demo_classes
    from pipeline.models import build_model
    from pipeline.train import model_spec_from, save_checkpoint

    config = load_config(folder / "pipeline.toml")
    torch.manual_seed(0)
    classes = [folder_name for folder_name, _ in demo_classes(10)]
    names = [readable for _, readable in demo_classes(10)]
    spec = model_spec_from(config.train, num_classes=len(classes))
    model = build_model(spec)
    pp = config.preprocessing
    preprocessing = {"resize": pp.resize, "crop": pp.crop, "mean": list(pp.mean), "std": list(pp.std)}
    save_checkpoint(folder / "tiny.pt", model, spec.to_dict(), classes, names, preprocessing, {})
    return folder / "tiny.pt"


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """A tiny project whose generated images and checkpoint are made once per session."""
    from pipeline.data import generate_demo_set
    from pipeline.train import GENERATED_VAL_SEED

    folder = tmp_path_factory.mktemp("tiny-template")
    write_tiny_config(folder)
    generate_demo_set(folder / "data" / "val", per_class=5, seed=GENERATED_VAL_SEED)
    make_tiny_checkpoint(folder)
    return folder


@pytest.fixture
def tiny_project(tiny_template, tmp_path) -> Path:
    """A fresh copy of the tiny project (its own cache and engines folders)."""
    folder = tmp_path / "project"
    shutil.copytree(tiny_template, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cpu_bundle(tmp_path_factory, tiny_template) -> Path:
    """The tiny project built once for the cpu target; tests must not modify it."""
    folder = tmp_path_factory.mktemp("tiny-built") / "project"
    shutil.copytree(tiny_template, folder)
    result = run_cli(folder, "build", "--target", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    return folder


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=folder, capture_output=True, text=True, env=env)
