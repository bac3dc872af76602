"""Labelled image sets on disk (ImageFolder, ILSVRC2012 val) and deterministic subsets.

Calibration and evaluation images are drawn per class with a seeded generator, so the same
seed on the same folder always yields the same files, and the two subsets never overlap.
The chosen lists are written with SHA-256 hashes so a device can check it sees the same data.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import sha256_file, write_json_atomic
from pipeline.bundle.paths import path_problem
from pipeline.errors import DataError
from pipeline.names import control_character

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelledSet",
    "Sample",
    "SubsetList",
    "read_ilsvrc_val",
    "read_image_folder",
    "read_subset_list",
    "read_synset_mapping",
    "sha256_file",
    "split_per_class",
    "stratified_subsets",
    "write_subset_list",
]

#: File name endings (compared lower-case) treated as images in an ImageFolder tree.
IMAGE_EXTENSIONS = frozenset(
    {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

_SUBSET_FORMAT = "vt-edge-subset"
_SUBSET_VERSION = 1
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int


@dataclass
class LabelledSet:
    """Images with integer labels; ``classes[label]`` is the folder name or wnid."""

    samples: list[Sample]
    classes: list[str]
    class_names: list[str]
    root: Path

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.classes):
            raise DataError(f"class_names has {len(self.class_names)} entries, classes {len(self.classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def by_class(self) -> list[list[Sample]]:
        """Samples grouped by label, each group sorted by path."""
        groups: list[list[Sample]] = [[] for _ in self.classes]
        for s in self.samples:
            groups[s.label].append(s)
        for g in groups:
            g.sort(key=lambda s: s.path.as_posix())
        return groups


# --------------------------------------------------------------------------------------------
# Readers


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, skipping hidden files and folders.

    ``os.walk`` (scandir) avoids one ``stat`` per file, which matters for the 1.28 M
    files of an ImageNet train folder.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return found


def read_image_folder(root: str | Path, synset_mapping: str | Path | None = None) -> LabelledSet:
    """Read ``<root>/<class>/**/<image>``: classes and files sorted by name.

    Hidden entries (starting with ``.``) are ignored. When ``synset_mapping`` (a
    ``LOC_synset_mapping.txt``) is given, ``class_names`` are its descriptions for the
    folders it lists; other folders keep their own name.

    Raises:
        ValueError: ``root`` is missing, has no class folders, or a class folder has no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root}: not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root}: no class sub-folders")
    for cls in classes:
        bad = control_character(cls)
        if bad:
            raise DataError(
                f"image folder {root}: class folder {cls!r} holds the control character {bad} in its name; "
                "rename it (class names must be plain text)"
            )
    samples: list[Sample] = []
    empty: list[str] = []
    for label, cls in enumerate(classes):
        files = sorted(_image_files(root / cls), key=lambda p: p.relative_to(root).as_posix())
        if not files:
            empty.append(cls)
        samples.extend(Sample(p, label) for p in files)
    if empty:
        raise DataError(
            f"image folder {root}: class folder(s) without images "
            f"(extensions {sorted(IMAGE_EXTENSIONS)}): {_first(empty)}"
        )
    names = list(classes)
    if synset_mapping is not None:
        described = dict(read_synset_mapping(synset_mapping))
        names = [described.get(c, c) for c in classes]
    return LabelledSet(samples=samples, classes=classes, class_names=names, root=root)


def read_synset_mapping(path: str | Path) -> list[tuple[str, str]]:
    """Parse ``LOC_synset_mapping.txt`` lines ``n01440764 tench, Tinca tinca``.

    Returns ``(wnid, description)`` in file order; the order is the class index.
    """
    path = Path(path)
    entries: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, desc = line.strip().partition(" ")
        if not _WNID.match(wnid):
            raise DataError(f"{path}:{lineno}: expected '<wnid> <description>', got {line!r}")
        if wnid in seen:
            raise DataError(f"{path}:{lineno}: {wnid} already listed on line {seen[wnid]}")
        seen[wnid] = lineno
        bad = control_character(desc)
        if bad:
            raise DataError(
                f"{path}:{lineno}: the description of {wnid} holds the control character {bad}; class names "
                "must be plain text"
            )
        entries.append((wnid, desc.strip() or wnid))
    if not entries:
        raise DataError(f"{path}: no synsets")
    return entries


def read_ilsvrc_val(images_dir: str | Path, solution_csv: str | Path, synset_mapping: str | Path) -> LabelledSet:
    """Read the ILSVRC2012 validation layout.

    * ``images_dir/<ImageId>.JPEG``: the flat image folder;
    * ``solution_csv``: ``LOC_val_solution.csv`` with columns ``ImageId,PredictionString``;
      the first token of ``PredictionString`` is the image's wnid;
    * ``synset_mapping``: ``LOC_synset_mapping.txt``; line order gives the class index.

    Samples are sorted by ``ImageId``. Errors name the file and line.
    """
    images_dir = Path(images_dir)
    solution_csv = Path(solution_csv)
    if not images_dir.is_dir():
        raise DataError(f"ILSVRC images folder {images_dir}: not a directory")
    synsets = read_synset_mapping(synset_mapping)
    index = {wnid: i for i, (wnid, _) in enumerate(synsets)}
    # One directory listing instead of 50 000 stat calls.
    present = {p.name for p in images_dir.iterdir()}
    labels: dict[str, int] = {}
    rows = csv.reader(_read_text(solution_csv).splitlines())
    header = next(rows, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise DataError(f"{solution_csv}:1: expected header 'ImageId,PredictionString'")
    for lineno, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        image_id, wnid = _parse_solution_row(row, solution_csv, lineno)
        if wnid not in index:
            raise DataError(f"{solution_csv}:{lineno}: wnid {wnid} not in {synset_mapping}")
        if image_id in labels:
            raise DataError(f"{solution_csv}:{lineno}: ImageId {image_id} listed twice")
        if f"{image_id}.JPEG" not in present:
            raise DataError(f"{solution_csv}:{lineno}: image {images_dir / (image_id + '.JPEG')} not found")
        labels[image_id] = index[wnid]
    if not labels:
        raise DataError(f"{solution_csv}: no images listed")
    samples = [Sample(images_dir / f"{i}.JPEG", labels[i]) for i in sorted(labels)]
    return LabelledSet(
        samples=samples,
        classes=[w for w, _ in synsets],
        class_names=[d for _, d in synsets],
        root=images_dir,
    )


def _parse_solution_row(row: list[str], path: Path, lineno: int) -> tuple[str, str]:
    if len(row) < 2 or not row[0].strip() or not row[1].split():
        raise DataError(f"{path}:{lineno}: expected 'ImageId,PredictionString', got {row!r}")
    return row[0].strip(), row[1].split()[0]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


# --------------------------------------------------------------------------------------------
# Deterministic per-class splits


def _class_permutation(n: int, seed: int, label: int) -> np.ndarray:
    # One generator per class, keyed by (seed, label): a class's selection does not depend
    # on how many images the other classes have, nor on the order classes are visited.
    return np.random.default_rng([seed, label]).permutation(n)


def split_per_class(dataset: LabelledSet, parts: Sequence[int] | Sequence[float], seed: int) -> list[list[Sample]]:
    """Split every class into disjoint parts, in the given order.

    ``parts`` is either all ints (exact image counts per class; leftovers are unused and a
    class with fewer images than ``sum(parts)`` is an error) or all floats summing to 1
    (per class, part ``i < last`` gets ``floor(f_i * n)`` images, the last part the rest).
    Each class's files (sorted by path) are shuffled with a generator seeded by
    ``(seed, label)`` and cut in order. Every returned part is sorted by (label, path).
    """
    _check_seed(seed)
    counts_mode = _parts_mode(parts)
    groups = dataset.by_class()
    out: list[list[Sample]] = [[] for _ in parts]
    short: list[str] = []
    for label, files in enumerate(groups):
        sizes = _part_sizes(parts, len(files), counts_mode)
        if sizes is None:
            short.append(f"{dataset.classes[label]} has {len(files)}")
            continue
        perm = _class_permutation(len(files), seed, label)
        start = 0
        for i, size in enumerate(sizes):
            out[i].extend(files[j] for j in perm[start : start + size])
            start += size
    if short:
        need = sum(int(p) for p in parts)
        raise DataError(
            f"not enough images per class: need {need} ({' + '.join(map(str, parts))}), "
            f"but {len(short)} class(es) have fewer: {_first(short)}"
        )
    for part in out:
        part.sort(key=lambda s: (s.label, s.path.as_posix()))
    _assert_disjoint(out)
    return out


def _check_seed(seed: int) -> None:
    # SeedSequence accepts only non-negative integers.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed: must be an integer >= 0, got {seed!r}")


def _parts_mode(parts: Sequence[int] | Sequence[float]) -> bool:
    """True for counts, False for fractions; validates ``parts``."""
    if not parts:
        raise DataError("parts: at least one part is needed")
    if any(isinstance(p, bool) for p in parts):
        raise DataError(f"parts: booleans are not counts: {list(parts)}")
    if all(isinstance(p, (int, np.integer)) for p in parts):
        if any(p < 0 for p in parts):
            raise DataError(f"parts: counts must be >= 0, got {list(parts)}")
        return True
    if all(isinstance(p, (float, np.floating)) for p in parts):
        if any(not 0.0 <= p <= 1.0 for p in parts) or abs(sum(parts) - 1.0) > 1e-9:
            raise DataError(f"parts: fractions must be in [0, 1] and sum to 1, got {list(parts)}")
        return False
    raise DataError(f"parts: use all ints (counts) or all floats (fractions), got {list(parts)}")


def _part_sizes(parts: Sequence[int] | Sequence[float], n: int, counts_mode: bool) -> list[int] | None:
    if counts_mode:
        sizes = [int(p) for p in parts]
        return sizes if sum(sizes) <= n else None
    sizes = [int(np.floor(float(f) * n)) for f in parts[:-1]]
    sizes.append(n - sum(sizes))
    return sizes


def _assert_disjoint(parts: list[list[Sample]]) -> None:
    seen: set[Path] = set()
    for part in parts:
        paths = {s.path for s in part}
        assert len(paths) == len(part), "a sample was selected twice within one part"
        assert not (paths & seen), "parts overlap"
        seen |= paths


def stratified_subsets(
    dataset: LabelledSet, calib_per_class: int, eval_per_class: int, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Disjoint calibration and evaluation subsets, ``*_per_class`` images from each class.

    The evaluation images are cut first from each class's shuffled list and the
    calibration images after them, so changing ``calib_per_class`` never changes the
    evaluation set (accuracy numbers stay comparable).

    Returns:
        ``(calibration, evaluation)``, each sorted by (label, path).

    Raises:
        ValueError: a class has fewer than ``calib_per_class + eval_per_class`` images
        (the message names the classes and their counts).
    """
    for name, value in (("calib_per_class", calib_per_class), ("eval_per_class", eval_per_class)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name}: must be an integer >= 0, got {value!r}")
    _check_seed(seed)
    need = calib_per_class + eval_per_class
    short = [
        f"{dataset.classes[label]} has {len(files)}"
        for label, files in enumerate(dataset.by_class())
        if len(files) < need
    ]
    if short:
        raise DataError(
            f"not enough images per class: calibration {calib_per_class} + evaluation "
            f"{eval_per_class} = {need} needed, but {len(short)} of {dataset.num_classes} "
            f"class(es) have fewer: {_first(short)}"
        )
    evaluation, calibration = split_per_class(dataset, [eval_per_class, calib_per_class], seed)
    return calibration, evaluation


def _first(items: list[str], n: int = 10) -> str:
    """``items`` joined, cut after ``n`` with a count of the rest (error messages)."""
    more = f"; and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


# --------------------------------------------------------------------------------------------
# Subset list files


@dataclass
class SubsetList:
    """Contents of a subset list file; ``samples[i]`` has hash ``sha256[i]``."""

    samples: list[Sample]
    sha256: list[str]
    classes: list[str]
    seed: int | None
    method: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def write_subset_list(
    samples: Sequence[Sample],
    root: str | Path,
    path: str | Path,
    classes: Sequence[str],
    *,
    seed: int | None = None,
    method: str | None = None,
) -> None:
    """Write the samples as JSON: relative path (to ``root``), label and SHA-256 of each.

    The header records ``seed``, ``method`` and ``classes``.
    No absolute path is written, so the file can ship inside a bundle. The file is written
    to a temporary name and renamed, so readers never see a partial list.
    """
    root = Path(root)
    entries = []
    for s in samples:
        if not 0 <= s.label < len(classes):
            raise DataError(f"{s.path}: label {s.label} outside 0..{len(classes) - 1}")
        entries.append(
            {
                "path": _relative_posix(s.path, root),
                "label": int(s.label),
                "sha256": sha256_file(s.path),
            }
        )
    doc = {
        "format": _SUBSET_FORMAT,
        "version": _SUBSET_VERSION,
        "seed": seed,
        "method": method,
        "classes": list(classes),
        "count": len(entries),
        "extra": {},
        "samples": entries,
    }
    write_json_atomic(Path(path), doc, indent=1)


def _relative_posix(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise DataError(f"{path}: not inside root {root}") from None
    return rel.as_posix()


def read_subset_list(path: str | Path, root: str | Path | None = None, verify: bool = False) -> SubsetList:
    """Load a file written by :func:`write_subset_list`.

    Sample paths are joined to ``root`` when given, else left relative. With ``verify``
    (requires ``root``) every file's SHA-256 is recomputed; a mismatch or missing file is a
    ``ValueError`` listing the offending paths.
    """
    path = Path(path)
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != _SUBSET_FORMAT:
        raise DataError(f"{path}: not a subset list (format != {_SUBSET_FORMAT!r})")
    if doc.get("version") != _SUBSET_VERSION:
        raise DataError(f"{path}: unsupported version {doc.get('version')!r}")
    base = Path(root) if root is not None else None
    samples, hashes = _parse_entries(doc.get("samples"), path, base)
    if verify:
        if base is None:
            raise DataError("read_subset_list: verify=True needs root")
        _verify_hashes(samples, hashes, path)
    return SubsetList(
        samples=samples,
        sha256=hashes,
        classes=list(doc.get("classes", [])),
        seed=doc.get("seed"),
        method=doc.get("method"),
        extra=dict(doc.get("extra") or {}),
    )


def _parse_entries(entries: Any, path: Path, base: Path | None) -> tuple[list[Sample], list[str]]:
    if not isinstance(entries, list):
        raise DataError(f"{path}: 'samples' must be a list")
    samples, hashes = [], []
    for i, e in enumerate(entries):
        try:
            rel, label, digest = e["path"], int(e["label"]), str(e["sha256"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: samples[{i}] needs path, label and sha256") from None
        problem = path_problem(rel) if isinstance(rel, str) else "is not a string"
        if problem is not None:
            raise DataError(
                f"{path}: samples[{i}] path {rel!r} {problem}: sample paths are relative to the list's image root"
            )
        samples.append(Sample(base / rel if base is not None else Path(rel), label))
        hashes.append(digest)
    return samples, hashes


def _verify_hashes(samples: list[Sample], hashes: list[str], path: Path) -> None:
    bad = []
    for s, expected in zip(samples, hashes):
        try:
            actual = sha256_file(s.path)
        except OSError as exc:
            bad.append(f"{s.path} ({exc.strerror or exc})")
            continue
        if actual != expected:
            bad.append(f"{s.path} (sha256 {actual[:12]}..., expected {expected[:12]}...)")
    if bad:
        raise DataError(f"{path}: {len(bad)} file(s) differ from the list: " + "; ".join(bad[:10]))
