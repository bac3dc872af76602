"""bundle: engine bundles in engines/<name>/: the manifest (docs/bundle-format.md), assembly
and verification.

A bundle is assembled in a hidden sibling folder and swapped in with renames, so a reader never
sees a half-written bundle, and a build killed mid-copy leaves the previous bundle intact.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from pipeline.artifacts import path_for_user, read_json, safe_relative, sha256_file, write_json_atomic
from pipeline.errors import BundleError
from pipeline.host import tool_versions
from pipeline.names import INPUT_NAME, OUTPUT_NAME, onnx_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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




# ---------------------------------------------------------------------------------------------
# What a build puts into its bundle

HOST_TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "numpy", "pillow", "vt-edge")


@dataclass
class BundleSources:
    """The build's artifacts that the bundle carries."""

    models: Dict[str, Path]  # precision -> ONNX graph
    optimized: Optional[Dict[str, Path]]  # precision -> ONNX Runtime optimized graph (cpu target)
    engine_files: Dict[str, Path]  # bundle-relative path -> file (build_plan.json)
    reference: Dict[str, Path]  # bundle-relative path -> FP32 logits, evaluation list, crops, labels
    pending: list


def bundle_files(sources: BundleSources) -> tuple[Dict[str, Path], Dict[str, Dict[str, Any]]]:
    """(bundle-relative path -> source file, the manifest's `precisions` table)."""
    files: Dict[str, Path] = {onnx_file(p): path for p, path in sources.models.items()}
    precisions: Dict[str, Dict[str, Any]] = {p: {"onnx": onnx_file(p), "optimized": None} for p in sources.models}
    for p, path in (sources.optimized or {}).items():
        rel = f"models/model.{p}.ort-opt.onnx"
        files[rel] = path
        precisions[p]["optimized"] = rel
    files.update(sources.reference)
    files.update(sources.engine_files)
    return files, precisions


def reference_files(data: Any, validation: Any) -> Dict[str, Path]:
    """What validation on the device needs: the FP32 logits, the evaluation list, crops and labels."""
    return {
        "reference/fp32_logits.npy": validation.output("reference"),
        "reference/eval_set.json": data.eval_list,
        "reference/eval_labels.npy": data.arrays["eval_labels"],
        "reference/eval_crops.npy": data.arrays["eval_crops"],
    }


def rebuild_command(ctx: Any, pending: bool) -> str:
    """The exact command that re-makes (or, with engines pending, finishes) this bundle, with
    --config and --bundle as typed from the current folder (the bundle lies beside the config)."""
    config_arg = shlex.quote(path_for_user(ctx.options.config_path))
    command = f"python -m pipeline build --target {ctx.target_name} --config {config_arg}"
    if pending:
        command += f" --bundle {shlex.quote(path_for_user(ctx.bundle_dir))}"
    return command


def make_manifest(ctx: Any, model: Any, precisions: Dict[str, Any], report: Dict[str, Any], sources: BundleSources,
                  build_key: str) -> Dict[str, Any]:
    """The manifest fields of a new bundle (`files` is added when the bundle is written)."""
    from pipeline.stages.engine import session_settings

    target, spec = ctx.target, ctx.config.preprocessing.spec()
    return {
        "format_version": FORMAT_VERSION,
        "name": ctx.bundle_name,
        "created_utc": report["created_utc"],
        "target": {"name": ctx.target_name, "backend": target.backend, "compute_capability": target.compute_capability,
                   "tensorrt_majors": list(target.tensorrt_majors)},
        "model": {"name": ctx.config.model.name, "arch": model.spec.get("arch", "custom"), "num_classes": len(model.classes), "spec": model.spec},
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "shape": [-1, 3, spec.crop, spec.crop]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, len(model.classes)]},
        "preprocessing": spec.to_dict(),
        "labels": list(model.class_names),
        "precisions": precisions,
        "engines": [],
        "versions": tool_versions(HOST_TOOLS),
        "host": report["host"],
        "rebuild_command": rebuild_command(ctx, bool(sources.pending)),
        "pending": list(sources.pending),
        "build_key": build_key,
        "session": asdict(session_settings(ctx.config)) if target.backend == "onnxruntime" else None,
    }


def write_report_and_bundle(bundle: Path, contents: BundleContents, report: Dict[str, Any]) -> Path:
    """Render the report beside the other files and write the whole bundle in one swap."""
    import tempfile

    from pipeline.stages.report import render_report

    with tempfile.TemporaryDirectory(prefix="vt-edge-report.") as tmp:
        for path in render_report(report, Path(tmp)):
            contents.files[f"report/{path.name}"] = path
        return write_bundle(bundle, contents)


def bundle_up_to_date(bundle: Path, build_key: str) -> bool:
    """The bundle was made from exactly these stage outputs and no file of it changed since."""
    try:
        manifest = verify_bundle(bundle)
    except BundleError:
        return False
    return manifest.get("build_key") == build_key
