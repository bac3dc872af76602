"""A tiny project: config, generated images and an untrained tiny VT checkpoint.

Used by the tests, and by the C++ loader's tests to get a real pipeline-made bundle:
    python tests/tiny_project.py OUT_DIR          # builds OUT_DIR/engines/tiny-cpu
    python tests/tiny_project.py OUT_DIR jetson   # OUT_DIR/engines/tiny-jetson-agx-orin, for the
                                                  # device-side tests (VTEDGE_HOST_PROJECT=OUT_DIR)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
finetune_steps = 0
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
tensorrt_versions = ["8.5", "8.6", "10.3", "11.4"]
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
    from pipeline.models.checkpoint import CheckpointInfo, save_checkpoint
    from pipeline.train import model_spec_from

    config = load_config(folder / "pipeline.toml")
    torch.manual_seed(0)
    classes = [folder_name for folder_name, _ in demo_classes(10)]
    names = [readable for _, readable in demo_classes(10)]
    spec = model_spec_from(config.train, num_classes=len(classes))
    model = build_model(spec)
    pp = config.preprocessing
    preprocessing = {"resize": pp.resize, "crop": pp.crop, "mean": list(pp.mean), "std": list(pp.std)}
    save_checkpoint(folder / "tiny.pt", model, CheckpointInfo(spec.to_dict(), classes, names, preprocessing))
    return folder / "tiny.pt"


def make_tiny_project(folder: Path) -> Path:
    """Config, generated evaluation pool and checkpoint of the tiny project in `folder`."""
    from pipeline.data import GENERATED_VAL_SEED, generate_demo_set

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_config(folder)
    generate_demo_set(folder / "data" / "val", per_class=5, seed=GENERATED_VAL_SEED)
    make_tiny_checkpoint(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tests/tiny_project.py OUT_DIR [TARGET (default cpu)]")
    sys.path.insert(0, str(ROOT))
    out = make_tiny_project(Path(sys.argv[1]).resolve())
    target = sys.argv[2] if len(sys.argv) == 3 else "cpu"
    build = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--target", target, "--no-progress"],
        cwd=out,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    sys.exit(build.returncode)
