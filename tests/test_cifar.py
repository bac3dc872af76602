"""Photos in a zip (CIFAR-10 layout): index, seeded held-out split, decoding, export, training."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, load_config
from pipeline.data import PreprocessSpec, load_crops, read_image_folder
from pipeline.data.cifar import decode_members, export_members, read_zip_index, split_holdout
from pipeline.models import build_model
from pipeline.models.vt import ModelSpec
from pipeline.train import train_model

CLASSES = ("bird", "cat", "ship")
SPEC = PreprocessSpec(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def make_zip(path: Path, per_class: int = 12) -> Path:
    """train/<class>/<n>.jpg (and one .png a class), 32x32, each class its own colour."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/", b"")
        for c, name in enumerate(CLASSES):
            for n in range(per_class):
                pixels = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
                pixels[..., c] += 180
                buf = io.BytesIO()
                fmt = "PNG" if n == 0 else "JPEG"
                Image.fromarray(pixels).save(buf, fmt)
                zf.writestr(f"train/{name}/{n:04d}.{'png' if n == 0 else 'jpg'}", buf.getvalue())
        zf.writestr("train/cat/.hidden.jpg", b"not an image")
        zf.writestr("README.txt", b"ignored")
    return path


def test_index_sorts_classes_and_members(tmp_path: Path):
    index = read_zip_index(make_zip(tmp_path / "p.zip"))
    assert index.classes == list(CLASSES) and len(index.samples) == 36
    assert index.samples[0].path.as_posix() == "train/bird/0000.png" and index.samples[-1].label == 2


def test_split_is_seeded_disjoint_and_stratified(tmp_path: Path):
    index = read_zip_index(make_zip(tmp_path / "p.zip"))
    a, b, other = split_holdout(index, 4, 0), split_holdout(index, 4, 0), split_holdout(index, 4, 1)
    assert a.holdout == b.holdout and a.train == b.train and a.holdout != other.holdout
    assert {s.path for s in a.holdout}.isdisjoint(s.path for s in a.train)
    assert len(a.holdout) == 12 and len(a.train) == 24
    assert [sum(s.label == k for s in a.holdout) for k in range(3)] == [4, 4, 4]
    assert [s.label for s in a.holdout_subset(2)] == [0, 0, 1, 1, 2, 2]
    assert "default_rng([0, class index])" in a.rule
    with pytest.raises(ValueError, match="not enough images per class"):
        split_holdout(index, 13, 0)


def test_exported_photos_read_back_as_the_same_tensors(tmp_path: Path):
    zip_path = make_zip(tmp_path / "p.zip")
    split = split_holdout(read_zip_index(zip_path), 4, 0)
    crops, labels = decode_members(zip_path, split.holdout, SPEC)
    assert export_members(zip_path, split.holdout, split.classes, tmp_path / "held") == 12
    folder = read_image_folder(tmp_path / "held")
    assert folder.classes == list(CLASSES)
    loaded = load_crops(folder.samples, SPEC)
    assert np.array_equal(loaded.crops, crops) and np.array_equal(loaded.labels, labels)
    with zipfile.ZipFile(zip_path) as zf:  # byte for byte
        first = split.holdout[0]
        assert (tmp_path / "held" / "bird" / first.path.name).read_bytes() == zf.read(first.path.as_posix())


def test_bad_zips_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="zip not found"):
        read_zip_index(tmp_path / "missing.zip")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a zip"):
        read_zip_index(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as zf:
        zf.writestr("a.jpg", b"x")
    with pytest.raises(ValueError, match="not <top>/<class>/<image>"):
        read_zip_index(tmp_path / "flat.zip")


CONFIG = """
[model]
checkpoint = "m.pt"
[preprocessing]
resize = 32
crop = 32
[train]
source = "cifar10-zip"
zip = "p.zip"
holdout_per_class = 4
export_holdout = "held"
export_per_class = 3
stem = "cifar"
width = 8
tokens = 4
token_channels = 16
heads = 2
epochs = 2
batch_size = 8
optimizer = "sgd"
lr = 0.05
pad = 4
"""


def test_training_from_a_zip(tmp_path: Path):
    make_zip(tmp_path / "p.zip")
    (tmp_path / "pipeline.toml").write_text(CONFIG)
    result = train_model(load_config(tmp_path / "pipeline.toml"), tmp_path / "m.pt", progress=False)
    data = torch.load(result.checkpoint, weights_only=True)
    assert data["spec"]["stem"] == "cifar" and data["classes"] == list(CLASSES)
    assert data["preprocessing"]["crop"] == 32
    metrics = data["metrics"]
    assert metrics["source"] == "cifar10-zip" and metrics["train_images"] == 24 and metrics["holdout_images"] == 12
    assert metrics["recipe"]["optimizer"] == "sgd" and "split_rule" in metrics
    assert len(read_image_folder(tmp_path / "held").samples) == 9
    model = build_model(ModelSpec.from_dict(data["spec"]))
    model.load_state_dict(data["state_dict"])
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('source = "cifar10-zip"\n', "needs zip"),
        ('source = "cifar10-zip"\nzip = "p.zip"\nholdout_per_class = 2\nexport_per_class = 3\n', "export_per_class"),
        ('stem = "tiny"\n', "train.stem"),
    ],
)
def test_zip_config_errors(tmp_path: Path, extra: str, message: str):
    (tmp_path / "pipeline.toml").write_text("[train]\n" + extra)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "pipeline.toml")
