"""A generated, labelled image set: the built-in demo data and the test fixture.

Each class is a (shape, texture) pair, e.g. ``c00_circle_stripes``. Colours of the shape, of
its texture and of the background are random for every image, as are position, size,
rotation, texture angle and period, background gradient, noise and clutter. So neither the
mean colour nor the shape alone nor the texture alone identifies the class: a model has to see
both the silhouette and the pattern inside it.

Images depend only on ``(seed, class, index, size)``: the same arguments write the same bytes
(for one Pillow/libjpeg build), and adding images or classes does not change existing ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipeline.artifacts import exclusive_lock
from pipeline.errors import DataError

from .imagenet import LabelledSet, read_image_folder

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES",
    "TEXTURES",
    "demo_classes",
    "generate_demo_set",
    "render_image",
]

#: Bumped whenever the rendering changes, so a cached set from an older version is not reused.
GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle", "cross", "ring")
#: The first two textures give the default 10 classes; "checker" adds 5 more (up to 15).
TEXTURES = ("stripes", "dots", "checker")
JPEG_QUALITY = 90
_INFO_FILE = "dataset.json"


@dataclass(frozen=True)
class _ClassSpec:
    shape: str
    texture: str

    def folder(self, index: int) -> str:
        return f"c{index:02d}_{self.shape}_{self.texture}"


def demo_classes(num_classes: int = 10) -> list[tuple[str, str]]:
    """``(folder name, human-readable name)`` of the first ``num_classes`` classes."""
    specs = _class_specs(num_classes)
    return [(c.folder(i), f"{c.shape}, {c.texture}") for i, c in enumerate(specs)]


def _class_specs(num_classes: int) -> list[_ClassSpec]:
    limit = len(SHAPES) * len(TEXTURES)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise DataError(f"num_classes: must be an integer, got {num_classes!r}")
    if not 2 <= num_classes <= limit:
        raise DataError(f"num_classes: must be in 2..{limit}, got {num_classes}")
    # Texture-major order: the first 10 classes are every shape with stripes, then with dots.
    all_specs = [_ClassSpec(s, t) for t in TEXTURES for s in SHAPES]
    return all_specs[:num_classes]


# --------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _distinct_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background, texture colour 1 and 2: the two texture colours clearly differ, and the
    shape's average colour differs from the background so the silhouette stays visible."""
    while True:
        bg, c1, c2 = (_random_colour(rng) for _ in range(3))
        if np.linalg.norm(c1 - c2) >= 110 and np.linalg.norm((c1 + c2) / 2 - bg) >= 70:
            return bg, c1, c2


# Images are built one colour plane at a time (H x W float32): NumPy is much faster on
# contiguous planes than on interleaved HxWx3 arrays, and PIL merges the planes at the end.


def _background(rng: np.random.Generator, size: int, bg: np.ndarray) -> list[np.ndarray]:
    """Three planes: a linear gradient around ``bg`` in a random direction."""
    xs, ys = _grid(size)
    angle = float(rng.uniform(0, 2 * np.pi))
    # Python floats keep the arithmetic in float32 (a NumPy float64 scalar would upcast).
    ramp = xs * (math.cos(angle) / size) + ys * (math.sin(angle) / size)  # about -1.4..1.4
    tint = rng.uniform(-40, 40, size=3)
    return [ramp * float(tint[c]) + float(bg[c]) for c in range(3)]


def _clutter(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin random lines and small blobs, so the background is not a clean flat field.

    Returns an HxW map of item ids (0 = none) and the ``(items + 1, 3)`` colour table.
    """
    ids = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    n_lines, n_blobs = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    colours = rng.integers(0, 256, size=(1 + n_lines + n_blobs, 3)).astype(np.float32)
    for k in range(1, n_lines + 1):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=k, width=int(rng.integers(1, 3)))
    for k in range(n_lines + 1, n_lines + n_blobs + 1):
        cx, cy = (float(v) for v in rng.uniform(0, size, 2))
        r = float(rng.uniform(2, 6)) * size / 224
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=k)
    return np.asarray(ids), colours


def _polygon(cx: float, cy: float, radius: float, angles: np.ndarray) -> list[tuple[float, float]]:
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Boolean HxW mask of one randomly placed, sized and rotated shape."""
    radius = float(rng.uniform(0.22, 0.34)) * size
    # Keep the shape inside the centre crop (resize 256 / crop 224 trims ~6% per side).
    margin = radius + 0.04 * size
    cx, cy = (float(v) for v in rng.uniform(margin, size - margin, 2))
    rot = float(rng.uniform(0, 2 * np.pi))
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape in ("circle", "ring"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if shape == "ring":
            inner = radius * float(rng.uniform(0.45, 0.6))
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "square":
        angles = rot + np.pi / 4 + np.arange(4) * np.pi / 2
        draw.polygon(_polygon(cx, cy, radius, angles), fill=255)
    elif shape == "triangle":
        angles = rot + np.arange(3) * 2 * np.pi / 3
        draw.polygon(_polygon(cx, cy, radius * 1.15, angles), fill=255)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, radius * 1.1, radius * 0.36, rot), fill=255)
    else:  # pragma: no cover - SHAPES is fixed
        raise DataError(f"unknown shape {shape!r}")
    return np.asarray(mask) > 127


def _cross(cx: float, cy: float, arm: float, half: float, rot: float) -> list[tuple[float, float]]:
    """A plus sign: 12 corners, arms of length ``arm`` and half-width ``half``."""
    pts = [
        (half, arm),
        (half, half),
        (arm, half),
        (arm, -half),
        (half, -half),
        (half, -arm),
        (-half, -arm),
        (-half, -half),
        (-arm, -half),
        (-arm, half),
        (-half, half),
        (-half, arm),
    ]
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _frac(a: np.ndarray) -> np.ndarray:
    """``a - floor(a)`` in place (faster than ``np.mod``)."""
    a -= np.floor(a)
    return a


def _texture(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
    """Boolean HxW pattern: True where the second texture colour goes."""
    xs, ys = _grid(size)
    # Periods of 12..20 px (at 224) stay resolvable when a model is trained on a 2x
    # downscaled copy, which is what a quick CPU training run tends to use.
    period = float(rng.uniform(12, 20)) * size / 224
    angle = float(rng.uniform(0, np.pi))
    # Coordinates along and across the pattern, in units of one period.
    c, s = math.cos(angle) / period, math.sin(angle) / period
    u = xs * c + ys * s + float(rng.uniform(0, 1))
    v = ys * c - xs * s + float(rng.uniform(0, 1))
    if texture == "stripes":
        return _frac(u) < float(rng.uniform(0.4, 0.6))
    if texture == "dots":
        du, dv = _frac(u) - 0.5, _frac(v) - 0.5
        return du * du + dv * dv < float(rng.uniform(0.25, 0.33)) ** 2
    if texture == "checker":
        return (_frac(u * 0.5) < 0.5) ^ (_frac(v * 0.5) < 0.5)
    raise DataError(f"unknown texture {texture!r}")  # pragma: no cover


def render_image(seed: int, label: int, index: int, size: int = 224, num_classes: int = 10) -> Image.Image:
    """Render image ``index`` of class ``label`` (deterministic in all arguments but
    ``num_classes``, which only bounds ``label``)."""
    spec = _class_specs(num_classes)[label]
    rng = np.random.default_rng([seed, label, index, size, GENERATOR_VERSION])
    bg, c1, c2 = _distinct_colours(rng)
    planes = _background(rng, size, bg)
    clutter_ids, clutter_colours = _clutter(rng, size)
    has_clutter = clutter_ids > 0
    mask = _shape_mask(rng, spec.shape, size)
    pattern = _texture(rng, spec.texture, size)
    # Grey (luminance) noise: one plane shared by the three channels.
    noise = rng.standard_normal(size=(size, size), dtype=np.float32)
    noise *= float(rng.uniform(3, 10))
    out = []
    for c in range(3):
        plane = np.where(has_clutter, clutter_colours[:, c][clutter_ids], planes[c])
        plane = np.where(mask, np.where(pattern, c2[c], c1[c]), plane)
        out.append(Image.fromarray(_to_uint8(plane + noise)))
    return Image.merge("RGB", out)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    # Clip first so that adding 0.5 and truncating rounds to nearest.
    return (np.clip(a, 0, 255) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Writing the set


def _info(per_class: int, seed: int, size: int, num_classes: int) -> dict[str, Any]:
    return {
        "generator": "vt-edge demo set",
        "generator_version": GENERATOR_VERSION,
        "per_class": per_class,
        "seed": seed,
        "size": size,
        "num_classes": num_classes,
        "jpeg_quality": JPEG_QUALITY,
        "classes": [name for name, _ in demo_classes(num_classes)],
    }


def _read_info(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / _INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _labelled(root: Path, num_classes: int) -> LabelledSet:
    data = read_image_folder(root)
    data.class_names = [human for _, human in demo_classes(num_classes)]
    return data


def generate_demo_set(
    root: str | Path,
    per_class: int = 60,
    seed: int = 0,
    size: int = 224,
    num_classes: int = 10,
    overwrite: bool = False,
) -> LabelledSet:
    """Write ``root/<class>/<class>_<i>.jpg`` (JPEG, quality 90, ``size`` x ``size``).

    The set is built in a temporary sibling folder and renamed into place at the end, so an
    interrupted run never leaves a partial set under ``root``. A ``dataset.json`` beside the
    class folders records the arguments; when ``root`` already holds a set made with the
    same arguments it is reused as-is.

    Raises:
        FileExistsError: ``root`` exists but is not this set, and ``overwrite`` is False.
    """
    root = Path(root)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"per_class: must be an integer >= 1, got {per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed: must be an integer >= 0, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise DataError(f"size: must be an integer >= 32, got {size!r}")
    info = _info(per_class, seed, size, num_classes)
    if root.exists():
        if _read_info(root) == info:
            return _labelled(root, num_classes)
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not a demo set made with {info}; pass overwrite=True")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the set is ordinary data
        _write_images(tmp, info)
        (tmp / _INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        _move_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _labelled(root, num_classes)


def _write_images(folder: Path, info: dict[str, Any]) -> None:
    for label, name in enumerate(info["classes"]):
        (folder / name).mkdir()
        for i in range(info["per_class"]):
            img = render_image(info["seed"], label, i, info["size"], info["num_classes"])
            img.save(folder / name / f"{name}_{i:04d}.jpg", format="JPEG", quality=JPEG_QUALITY)


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``; an existing ``root`` is moved aside first, then deleted."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Seeds of the generated demo pools: training images and the calibration/evaluation pool are
# generated from different seeds, so no evaluation image was ever seen in training.
GENERATED_TRAIN_SEED = 1
GENERATED_VAL_SEED = 2


def ensure_generated(root: Path, per_class: int, seed: int) -> LabelledSet:
    """The generated set at `root`, made first if it is not there yet.

    One process makes it: two builds that start together would otherwise both write it and
    swap it under each other's reads.
    """
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(root.parent / f".{root.name}.lock", f"generated image set {root}"):
            if not root.is_dir():
                generate_demo_set(root, per_class=per_class, seed=seed)
    return read_image_folder(root)
