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
    return {rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size} for rel in sorted(file_table_names(folder))}


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


def update_manifest(bundle: Path, changed: Iterable[str], updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record files this tool just wrote (device engines, re-rendered report) in the manifest.

    Only the `changed` bundle-relative paths are (re-)hashed: every other entry keeps the hash
    it was verified against, so updating a bundle never blesses a file changed behind its back.
    """
    manifest = read_manifest(bundle)
    manifest.update(updates or {})
    for rel in changed:
        path = safe_relative(bundle, rel)
        manifest["files"][rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
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
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: must be a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: unsupported format_version {version!r} (this tool reads {FORMAT_VERSION})")
    for key in ("name", "target", "model", "input", "preprocessing", "labels", "files", "precisions"):
        if key not in manifest:
            raise BundleError(f"{path}: missing key '{key}'")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(_is_file_entry(entry) for entry in files.values()):
        raise BundleError(f"{path}: key 'files' must map paths to {{sha256: 64 hex chars, bytes: int}}")
    return manifest


def _is_file_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and len(entry["sha256"]) == 64
        and isinstance(entry.get("bytes"), int)
    )


def verify_bundle(bundle: Path, allow_unlisted: bool = False, regenerable: Iterable[str] = ()) -> dict[str, Any]:
    """Check every listed file's SHA-256 and size, that no path leaves the bundle, and (unless
    `allow_unlisted`) that the bundle holds no file the manifest does not list. `regenerable`
    files (renderings about to be re-made from verified data) may be missing or changed."""
    manifest = read_manifest(bundle)
    skip = set(regenerable)
    for rel, entry in manifest["files"].items():
        if rel in skip:
            continue
        try:
            path = safe_relative(bundle, rel)
        except ValueError as exc:
            raise BundleError(f"{bundle / MANIFEST}: {exc}") from None
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: SHA-256 does not match the manifest (file changed or corrupt)")
    if not allow_unlisted:
        unlisted = sorted(set(file_table_names(bundle)) - set(manifest["files"]))
        if unlisted:
            raise BundleError(f"{bundle / unlisted[0]}: not listed in the manifest ({len(unlisted)} unlisted file(s))")
    return manifest


def file_table_names(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
