"""Engine bundles in engines/<name>/: assembly, manifest (docs/bundle-format.md) and verification.

A bundle is assembled in a hidden sibling folder and swapped in with renames, so a reader never
sees a half-written bundle, and a build killed mid-copy leaves the previous bundle intact.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import read_json, safe_relative, sha256_file, write_json_atomic

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(Exception):
    """A bundle that cannot be used as it is; the message says which file and why."""


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def tool_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the installed tools among `names` (absent ones are left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> sha256 and size, for every file of the bundle but the manifest."""
    table = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(folder).as_posix()
            table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


@dataclass
class BundleContents:
    """What goes into a bundle: files to copy (bundle-relative destination -> source) + manifest fields."""

    files: dict[str, Path]
    manifest: dict[str, Any]


def write_bundle(destination: Path, contents: BundleContents) -> Path:
    """Assemble the bundle beside `destination`, write its manifest, and swap it in."""
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{destination.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for rel, source in contents.files.items():
            target = safe_relative(staging, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        manifest = dict(contents.manifest)
        manifest["files"] = file_table(staging)
        write_json_atomic(staging / MANIFEST, manifest)
        _swap_in(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _swap_in(staging: Path, destination: Path) -> None:
    old = destination.parent / f".{destination.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if destination.exists():
        os.replace(destination, old)
    os.replace(staging, destination)
    shutil.rmtree(old, ignore_errors=True)


def refresh_manifest(bundle: Path, updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-hash the bundle's files after a change on the device (engines, report) and save."""
    manifest = read_manifest(bundle)
    manifest.update(updates or {})
    manifest["files"] = file_table(bundle)
    write_json_atomic(bundle / MANIFEST, manifest)
    return manifest


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path}: not found (is {bundle} a bundle folder?)")
    try:
        manifest = read_json(path)
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: unsupported format_version {version!r} (this tool reads {FORMAT_VERSION})")
    for key in ("name", "target", "model", "input", "preprocessing", "labels", "files", "precisions"):
        if key not in manifest:
            raise BundleError(f"{path}: missing key '{key}'")
    return manifest


def verify_bundle(bundle: Path) -> dict[str, Any]:
    """Check every listed file's SHA-256 and size, and that no path leaves the bundle."""
    manifest = read_manifest(bundle)
    for rel, entry in manifest["files"].items():
        try:
            path = safe_relative(bundle, rel)
        except ValueError as exc:
            raise BundleError(f"{bundle / MANIFEST}: {exc}") from None
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: SHA-256 does not match the manifest (file changed or corrupt)")
    return manifest


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
