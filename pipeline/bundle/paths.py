"""Paths inside a bundle: the one rule every reader of a bundle-relative path applies (the
manifest, the build plans, the sample lists, external tensor data), and the same rule as the C++
loader's `resolve_bundle_path` (loader/src/integrity.cpp). Both are tested with the cases in
loader/tests/bundle_path_cases.txt.

A bundle path is relative, written with `/`, non-empty, and has no `..` part. A backslash is
refused (on Windows it separates folders, so `..\\x` would leave the folder there), as is a
drive (`C:x`).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Optional

from pipeline.artifacts import is_inside
from pipeline.errors import PathEscapeError

# What counts as blank and as a drive, in ASCII only, as the C++ loader reads them (Python's own
# str.strip() and PureWindowsPath take Unicode whitespace and, from 3.12, any character as a drive).
ASCII_BLANK = " \t\r\n\f\v"


def _drive(path: str) -> bool:
    return len(path) >= 2 and path[1] == ":" and path[0].isascii() and path[0].isalpha()


def path_problem(path: str) -> Optional[str]:
    """Why `path` cannot name a file inside a bundle folder, or None when it can."""
    if not path.strip(ASCII_BLANK):
        return "is empty"
    if "\\" in path:
        return "contains a backslash (bundle paths use '/')"
    if PurePosixPath(path).is_absolute() or _drive(path):
        return "is absolute (bundle paths are relative to the bundle folder)"
    if ".." in PurePosixPath(path).parts:
        return "contains '..'"
    return None


def safe_relative(root: Path, relative: str) -> Path:
    """`root / relative`, refusing a path that breaks the rule or resolves (through symlinks)
    outside `root`."""
    problem = path_problem(relative)
    if problem is None and not is_inside((root / relative).resolve(), root.resolve()):
        problem = "resolves outside it (through a link)"
    if problem is not None:
        raise PathEscapeError(f"path {relative!r} leaves the bundle folder: it {problem}")
    return root / PurePosixPath(relative)


def refuse_symlinks(root: Path) -> None:
    """Refuse any symbolic link inside `root`: a link could point a read or a write outside it."""
    for folder, dirs, files in os.walk(root):  # os.walk lists a linked folder but never enters it
        for name in sorted(dirs + files):
            path = Path(folder, name)
            if path.is_symlink():
                raise PathEscapeError(
                    f"{path}: a symbolic link inside {root}, refused (only plain files and folders belong there)"
                )
