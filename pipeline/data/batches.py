"""Load many images as uint8 crops, skipping (and counting) the ones that cannot be decoded."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .imagenet import Sample
from .preprocess import DEFAULT_MAX_IMAGE_PIXELS, BadImageError, PreprocessSpec, crop_uint8, load_rgb, normalize

__all__ = ["LoadedCrops", "load_crops"]


@dataclass
class LoadedCrops:
    """Crops of the images that decoded, in input order, plus the skipped ones."""

    crops: np.ndarray  # uint8 (N, 3, crop, crop)
    labels: np.ndarray  # int64 (N,)
    kept: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.kept)

    def normalized(self, spec: PreprocessSpec) -> np.ndarray:
        """The crops as the float32 NCHW model input."""
        return normalize(self.crops, spec)


def _crop_one(sample: Sample, spec: PreprocessSpec, max_pixels: int) -> np.ndarray | str:
    """The crop, or the reason the image was skipped."""
    try:
        return crop_uint8(load_rgb(sample.path, max_pixels), spec)
    except BadImageError as exc:
        return exc.reason
    except (OSError, ValueError, MemoryError) as exc:
        # e.g. an image too large to resize in memory: skip it rather than stop the run.
        return f"{type(exc).__name__}: {exc}"


@contextmanager
def _decoder_limit() -> Iterator[None]:
    """Pillow's own size check is off while the pool decodes: load_rgb checks every header
    against ``max_pixels`` before decoding and gives a reason that is counted like any bad
    image, whereas Pillow would print a raw DecompressionBombWarning over two lines, or refuse
    at twice its own limit with its own wording, whatever limit was configured. The setting is
    process-wide, so it is changed here, in the calling thread, around the pool.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield a function that advances a rich progress bar by one (or does nothing)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("Loading images", total=total)
        yield lambda: bar.advance(task)


def load_crops(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    progress: bool = False,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> LoadedCrops:
    """Decode, resize and centre-crop every sample into one uint8 NCHW array.

    Images that fail (truncated, not an image, over ``max_pixels``, ...) are listed in
    ``skipped`` with the reason and left out of ``crops``/``labels``/``kept``; the order of
    the rest is kept.
    Decoding runs in a small thread pool (PIL releases the GIL while decoding and resizing).
    """
    n = len(samples)
    # Filled in place: stacking a list of crops would need twice the memory at the end.
    crops = np.empty((n, 3, spec.crop, spec.crop), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[Path, str]] = []
    workers = workers or min(4, os.cpu_count() or 1)
    with _decoder_limit(), _progress(n, progress) as advance, ThreadPoolExecutor(max_workers=workers) as pool:
        # map() yields results in input order, so skipped files are reported in that order.
        for i, result in enumerate(pool.map(lambda s: _crop_one(s, spec, max_pixels), samples)):
            if isinstance(result, str):
                skipped.append((Path(samples[i].path), result))
            else:
                crops[i] = result
                ok[i] = True
            advance()
    kept = [s for s, good in zip(samples, ok) if good]
    crops = crops[ok] if not ok.all() else crops
    labels = np.array([s.label for s in kept], dtype=np.int64)
    return LoadedCrops(crops=crops, labels=labels, kept=kept, skipped=skipped)
