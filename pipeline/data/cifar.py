"""CIFAR-10 photos from a zip in ImageFolder layout: index, seeded held-out split, decoding.

The zip holds ``train/<class>/<n>.jpg`` (any top folder, any class names, ``.jpg``/``.png``/...
members). Nothing is unpacked: members are read and decoded in memory, once, into a uint8 NCHW
array with the same `crop_uint8` the rest of the pipeline uses, so a photo gives the same
tensor here as when it is read from a folder by the evaluation stage (for 32x32 photos with
``resize = crop = 32`` that is the photo itself).

Split rule (`split_holdout`): per class, the member names sorted, shuffled with a generator
seeded by ``(seed, class index)`` (`split_per_class`), the first ``holdout_per_class`` held
out, the rest for training. The same zip and seed always give the same split; classes are
indexed in sorted name order.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pipeline.errors import DataError

from .imagenet import IMAGE_EXTENSIONS, LabelledSet, Sample, split_per_class
from .preprocess import PreprocessSpec, crop_uint8

__all__ = ["CIFAR10_CLASSES", "ZipSplit", "decode_members", "export_members", "read_zip_index", "split_holdout"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class ZipSplit:
    """The training and held-out members of a zip (each sorted by label, then name)."""

    train: list[Sample]
    holdout: list[Sample]
    classes: list[str]
    rule: str  # one line that says how the split was made

    def holdout_subset(self, per_class: int) -> list[Sample]:
        """The first `per_class` held-out members of every class (in sorted name order)."""
        taken: dict[int, int] = {}
        out = []
        for s in self.holdout:
            if taken.get(s.label, 0) < per_class:
                out.append(s)
                taken[s.label] = taken.get(s.label, 0) + 1
        return out


def read_zip_index(zip_path: str | Path) -> LabelledSet:
    """Index ``<top>/<class>/<image>`` members: classes sorted by name, sample paths are member names.

    Raises:
        ValueError: not a readable zip, no image members, or members not two folders deep.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: zip not found")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as exc:
        raise DataError(f"{zip_path}: not a zip file ({exc})") from None
    members: dict[str, list[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if any(p.startswith(".") for p in parts) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        if len(parts) != 3:
            raise DataError(f"{zip_path}: member {name!r} is not <top>/<class>/<image>")
        members.setdefault(parts[1], []).append(name)
    if not members:
        raise DataError(f"{zip_path}: no image members (extensions {sorted(IMAGE_EXTENSIONS)})")
    classes = sorted(members)
    samples = [Sample(Path(n), label) for label, c in enumerate(classes) for n in sorted(members[c])]
    return LabelledSet(samples=samples, classes=classes, class_names=list(classes), root=zip_path)


def split_holdout(index: LabelledSet, holdout_per_class: int, seed: int) -> ZipSplit:
    """Hold out `holdout_per_class` members of every class (seeded), the rest for training."""
    (holdout,) = split_per_class(index, [holdout_per_class], seed)
    # With an exact count split_per_class leaves the rest of each class unused: that is the training part.
    held = {s.path for s in holdout}
    train = sorted((s for s in index.samples if s.path not in held), key=lambda s: (s.label, s.path.as_posix()))
    rule = (
        f"per class: member names sorted, permuted by numpy default_rng([{seed}, class index]), "
        f"first {holdout_per_class} held out, the rest trained on"
    )
    return ZipSplit(train=train, holdout=holdout, classes=list(index.classes), rule=rule)


def _decode(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return crop_uint8(rgb, spec)


def decode_members(
    zip_path: str | Path, samples: Sequence[Sample], spec: PreprocessSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Decode members into uint8 ``(N, 3, crop, crop)`` crops and int64 labels, in order."""
    crops = np.empty((len(samples), 3, spec.crop, spec.crop), dtype=np.uint8)
    with zipfile.ZipFile(zip_path) as zf:
        for i, s in enumerate(samples):
            try:
                crops[i] = _decode(zf.read(s.path.as_posix()), spec)
            except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt input
                raise DataError(
                    f"{zip_path}: member {s.path.as_posix()}: cannot decode ({type(exc).__name__}: {exc})"
                ) from None
    return crops, np.array([s.label for s in samples], dtype=np.int64)


def export_members(zip_path: str | Path, samples: Sequence[Sample], classes: Sequence[str], out_dir: str | Path) -> int:
    """Copy members byte for byte to ``out_dir/<class>/<file name>`` (an ImageFolder tree).

    `out_dir` is replaced as a whole, so it holds exactly these files. Returns the count.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with zipfile.ZipFile(zip_path) as zf:
        for s in samples:
            target = out_dir / classes[s.label] / s.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(s.path.as_posix()))
    return len(samples)
