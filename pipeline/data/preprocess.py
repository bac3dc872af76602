"""Image preprocessing: the exact contract that the bundle manifest records.

The steps below are reimplemented by the C++ loader, so every one of them is spelled out
(integer arithmetic, filter, order of float operations) rather than delegated to a library
whose defaults might change:

1. decode and convert to 8-bit RGB (:func:`load_rgb`);
2. resize the shorter side to ``resize`` with PIL ``BILINEAR``; the longer side becomes
   ``floor(long * resize / short)`` computed with integers;
3. centre crop ``crop`` x ``crop`` at ``left = (w - crop) // 2``, ``top = (h - crop) // 2``
   (steps 2 and 3: :func:`crop_uint8`);
4. ``(value / scale - mean) / std`` in float32, channels first (:func:`normalize`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from pipeline.errors import DataError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "BadImageError",
    "PreprocessSpec",
    "crop_uint8",
    "load_rgb",
    "normalize",
    "preprocess_image",
    "resized_size",
]

#: Modes whose samples are wider than 8 bits. ``Image.convert`` clips these to 255 instead of
#: rescaling them, which turns almost every pixel of a 16-bit image white.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F"})

#: Largest image (width x height) decoded by default: 64 megapixels, e.g. 9238 x 6928. Every
#: ImageNet photo is far below it (tens of megapixels at most) and so are today's camera and
#: phone photos (up to ~50 MP), while one decoded RGB image stays under 200 MB, so the 4 decoders
#: that run at once need < 0.8 GB: a Jetson's shared memory survives a hostile or mistaken
#: 144-megapixel file. ``[data] max_image_pixels`` changes it.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


class BadImageError(DataError):
    """An image file that cannot be decoded or converted to RGB."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class PreprocessSpec:
    """Preprocessing of one model, written as-is into the bundle manifest."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    color: str = "RGB"
    interpolation: str = "bilinear"
    scale: float = 255.0

    def __post_init__(self) -> None:
        # Lists coming from JSON are accepted and frozen into tuples so the spec stays hashable.
        object.__setattr__(self, "mean", _three_floats("mean", self.mean))
        object.__setattr__(self, "std", _three_floats("std", self.std))
        _check_int("crop", self.crop)
        _check_int("resize", self.resize)
        if self.crop <= 0:
            raise DataError(f"crop: must be > 0, got {self.crop}")
        if self.resize < self.crop:
            raise DataError(f"resize: must be >= crop ({self.crop}), got {self.resize}")
        if any(s <= 0 for s in self.std):
            raise DataError(f"std: every value must be > 0, got {self.std}")
        if self.color != "RGB":
            raise DataError(f"color: only 'RGB' is supported, got {self.color!r}")
        if self.interpolation != "bilinear":
            raise DataError(f"interpolation: only 'bilinear' is supported, got {self.interpolation!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise DataError(f"scale: must be a number, got {self.scale!r}")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise DataError(f"scale: must be a finite number > 0, got {self.scale}")
        object.__setattr__(self, "scale", float(self.scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the manifest's ``preprocessing`` object)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessSpec":
        """Inverse of :meth:`to_dict`; missing keys take the defaults."""
        if not isinstance(data, Mapping):
            raise DataError(f"preprocessing: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"preprocessing: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:  # pragma: no cover - only reachable with odd Mapping types
            raise DataError(f"preprocessing: {exc}") from exc


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{name}: must be an integer, got {value!r}")


def _three_floats(name: str, value: Any) -> tuple[float, float, float]:
    try:
        items = tuple(value)
    except TypeError:
        raise DataError(f"{name}: expected 3 numbers, got {value!r}") from None
    if len(items) != 3 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in items
    ):
        raise DataError(f"{name}: expected 3 finite numbers, got {value!r}")
    return (float(items[0]), float(items[1]), float(items[2]))


# --------------------------------------------------------------------------------------------
# Decoding


def load_rgb(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` completely and return an 8-bit ``RGB`` image.

    With ``max_pixels``, an image whose header says it has more pixels is refused before its
    pixels are decoded (opening reads the header only).

    Conversion rules (the C++ loader follows the same ones):

    * ``RGB``: unchanged. PIL already keeps the high byte of 16-bit-per-channel PNGs,
      i.e. ``value >> 8``.
    * ``L``, ``1``, ``CMYK``, ``YCbCr``, ``RGBX``, ...: PIL's own ``convert("RGB")``
      (CMYK uses PIL's plain ``255 - (c + k)`` formula, no ICC profile).
    * Alpha (``RGBA``, ``LA``, ``PA``, palette images with a transparency entry): the alpha
      channel is **dropped**, not composited; transparent pixels keep their stored colour.
      Palette images with transparency go through ``RGBA`` first (PIL's supported path).
    * 16-bit and wider grey (``I;16*``, ``I``, ``F``): every value is clipped to
      ``0..65535``, truncated to an integer and shifted right by 8 (``value >> 8``),
      then replicated to three channels. (``convert`` would clip at 255 instead.)
    * EXIF orientation is **not** applied: pixels are used in stored order.
    * Multi-frame files (GIF, TIFF): the first frame.

    Truncated files fail here because the image is fully decoded and
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left at its default (``False``).

    Raises:
        BadImageError: missing, unreadable, not an image, truncated or unconvertible.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            _check_size(path, img.width, img.height, max_pixels)
            img.load()
            return _to_rgb(img)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit, when it is the lower one
        raise BadImageError(path, f"too large to decode ({exc})") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, "not a recognised image file") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt input
        raise BadImageError(path, f"cannot decode ({type(exc).__name__}: {exc})") from None


def _check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadImageError(
            path,
            f"{width}x{height} = {width * height:,} pixels, over data.max_image_pixels = {max_pixels:,}; not decoded",
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to 8-bit RGB (rules in :func:`load_rgb`)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()  # detach from the file handle closed by the caller
    if mode in _WIDE_MODES:
        return _wide_gray_to_rgb(img)
    if mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError:
        # Rare modes without a direct path to RGB (e.g. premultiplied "La").
        return img.convert("RGBA").convert("RGB")


def _wide_gray_to_rgb(img: Image.Image) -> Image.Image:
    values = np.asarray(img)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=0.0, posinf=65535.0, neginf=0.0)
    wide = np.clip(values, 0, 65535).astype(np.int64)
    gray = (wide >> 8).astype(np.uint8)
    return Image.fromarray(np.stack([gray, gray, gray], axis=-1))


# --------------------------------------------------------------------------------------------
# Geometry and normalisation


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``resize`` (long side: integer floor)."""
    if width <= 0 or height <= 0:
        raise DataError(f"image size must be positive, got {width}x{height}")
    if width <= height:
        return resize, height * resize // width
    return width * resize // height, resize


def crop_uint8(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and centre-crop an RGB image; returns uint8 ``(3, crop, crop)``."""
    if img.mode != "RGB":
        raise DataError(f"crop_uint8 expects an RGB image, got mode {img.mode!r}")
    w, h = resized_size(img.width, img.height, spec.resize)
    resized = img.resize((w, h), Image.Resampling.BILINEAR)
    left = (w - spec.crop) // 2
    top = (h - spec.crop) // 2
    hwc = np.asarray(resized, dtype=np.uint8)[top : top + spec.crop, left : left + spec.crop]
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def normalize(chw_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``(value / scale - mean) / std`` in float32 for ``(3,H,W)`` or ``(N,3,H,W)`` uint8.

    Each step is a float32 operation in this order, so a C++ ``float`` implementation
    gives bit-identical results.
    """
    arr = np.asarray(chw_uint8)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-3] != 3:
        raise DataError(f"normalize expects uint8 (3,H,W) or (N,3,H,W), got {arr.dtype} {arr.shape}")
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    out = arr.astype(np.float32)
    out /= np.float32(spec.scale)
    out -= mean
    out /= std
    return out


def preprocess_image(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """Full preprocessing of one file: float32 ``(3, crop, crop)``."""
    return normalize(crop_uint8(load_rgb(path), spec), spec)
