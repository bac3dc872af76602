"""bundle: engine bundles in engines/<name>/: assembly, locking and verification.

The manifest's contract is `pipeline.bundle.manifest.Manifest` (docs/bundle-format.md). A
bundle is assembled in a hidden sibling folder of its own and swapped in with renames, so a
reader never sees a half-written bundle, and a build killed mid-copy leaves the previous bundle
intact. One process at a time writes a bundle (`bundle_lock`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from pydantic import ValidationError

from pipeline.artifacts import (
    exclusive_lock,
    path_for_user,
    process_umask,
    read_json,
    read_json_file,
    sha256_file,
    sha256_json,
    write_json_atomic,
)
from pipeline.bundle.manifest import FORMAT_VERSION, READABLE_VERSIONS, Manifest
from pipeline.bundle.paths import refuse_symlinks, safe_relative
from pipeline.errors import BundleError, PathEscapeError, first_validation_error
from pipeline.host import tool_versions
from pipeline.names import INPUT_NAME, OUTPUT_NAME, onnx_file

MANIFEST = "manifest.json"


@contextmanager
def bundle_lock(
    bundle: Path, on_wait: Optional[Callable[[str], Any]] = None, timeout_s: Optional[float] = None
) -> Iterator[None]:
    """Only the holder writes `bundle` (build, device finish, report). The lock file sits beside
    the bundle, not in it, because a bundle holds only what its manifest lists."""
    with exclusive_lock(bundle.parent / f".{bundle.name}.lock", str(bundle), on_wait, timeout_s):
        yield


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> sha256 and size, for every file of the bundle but the manifest."""
    return {
        rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
        for rel in sorted(file_table_names(folder))
    }


@dataclass
class BundleContents:
    """What goes into a bundle: files to copy (bundle-relative destination -> source) + manifest fields."""

    files: dict[str, Path]
    manifest: dict[str, Any]


def write_bundle(destination: Path, contents: BundleContents) -> Path:
    """Assemble the bundle beside `destination`, write its manifest, and swap it in.

    The caller holds `bundle_lock(destination)`: leftovers of killed runs are removed here, and
    the staging folder's name is unique anyway, so no two writers ever share one.
    """
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.staging-", dir=parent))
    try:
        staging.chmod(0o777 & ~process_umask())  # mkdtemp makes it private; a bundle is ordinary data
        for rel, source in contents.files.items():
            target = safe_relative(staging, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        manifest = dict(contents.manifest)
        manifest["files"] = file_table(staging)
        checked_manifest(manifest, staging / MANIFEST)  # a build never writes a bundle verify would refuse
        write_json_atomic(staging / MANIFEST, manifest)
        _swap_in(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _remove_leftovers(destination: Path) -> None:
    for pattern in (
        f".{destination.name}.staging-*",
        f".{destination.name}.old-*",
        f".{destination.name}.staging",
        f".{destination.name}.old",
    ):
        for leftover in destination.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(staging: Path, destination: Path) -> None:
    old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
    if destination.exists() or destination.is_symlink():
        os.replace(destination, old / destination.name)
    os.replace(staging, destination)
    shutil.rmtree(old, ignore_errors=True)  # rmtree removes links, never what they point to


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
    checked_manifest(manifest, bundle / MANIFEST)
    write_json_atomic(bundle / MANIFEST, manifest)
    return manifest


def checked_manifest(manifest: Any, path: Path) -> Manifest:
    """`manifest` as the typed Manifest, or BundleError naming the file and the first bad key."""
    if isinstance(manifest, dict) and manifest.get("format_version") not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS[:-1]) + f" and {READABLE_VERSIONS[-1]}"
        raise BundleError(
            f"{path}: unsupported format_version {manifest.get('format_version')!r} (this tool reads {readable})"
        )
    try:
        return Manifest.model_validate(manifest)
    except ValidationError as exc:
        raise BundleError(f"{path}: {first_validation_error(exc)}") from None


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest.json, checked against the Manifest contract (as a plain dict)."""
    path = bundle / MANIFEST
    manifest = read_json_file(path, f"not found (is {bundle} a bundle folder?)")
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: must be a JSON object")
    checked_manifest(manifest, path)
    return manifest


def verify_bundle(bundle: Path, allow_unlisted: bool = False, regenerable: Iterable[str] = ()) -> dict[str, Any]:
    """The one bundle check (verify, report, the device finish, build's up-to-date test).

    The manifest must satisfy its contract; no symbolic link may sit in the bundle; every
    listed file must be there with its SHA-256 and size; and (unless `allow_unlisted`) the bundle
    holds no file the manifest does not list. `regenerable` files (renderings about to be
    re-made from verified data) may be missing or changed.
    """
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a folder (is it a bundle?)")
    try:
        refuse_symlinks(bundle)
    except PathEscapeError as exc:
        raise BundleError(str(exc)) from None
    refuse_special_files(bundle)
    manifest = read_manifest(bundle)
    skip = set(regenerable)
    for rel, entry in manifest["files"].items():
        if rel in skip:
            continue
        path = safe_relative(bundle, rel)  # the contract has refused '..' and absolute paths already
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: SHA-256 does not match the manifest (file changed or corrupt)")
    if not allow_unlisted:
        unlisted = sorted(set(file_table_names(bundle)) - set(manifest["files"]))
        if unlisted:
            raise BundleError(f"{bundle / unlisted[0]}: not listed in the manifest ({len(unlisted)} unlisted file(s))")
    return manifest


SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "device file"),
    (stat.S_ISBLK, "device file"),
)


def refuse_special_files(bundle: Path) -> None:
    """Only folders and regular files belong in a bundle: a FIFO would hang whoever reads it,
    and no special file is anything the manifest can list."""
    for folder, _dirs, files in os.walk(bundle):
        for name in sorted(files):
            path = Path(folder, name)
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                kind = next((name for test, name in SPECIAL_FILES if test(mode)), "special file")
                raise BundleError(
                    f"{path}: a {kind} inside the bundle, refused (a bundle holds only the regular files its "
                    "manifest lists)"
                )


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
    elif ctx.options.model_args:
        command += " " + " ".join(shlex.quote(a) for a in ctx.options.model_args)
    return command


def make_manifest(
    ctx: Any, model: Any, precisions: Dict[str, Any], report: Dict[str, Any], sources: BundleSources, build_key: str
) -> Dict[str, Any]:
    """The manifest fields of a new bundle (`files` is added when the bundle is written)."""
    target, spec = ctx.target, ctx.config.preprocessing.spec()
    return {
        "format_version": FORMAT_VERSION,
        "name": ctx.bundle_name,
        "created_utc": report["created_utc"],
        "target": {
            "name": ctx.target_name,
            "backend": target.backend,
            "compute_capability": target.compute_capability,
            "tensorrt_majors": list(target.tensorrt_majors),
        },
        "model": {
            "name": ctx.config.model.name,
            "arch": model.spec.get("arch", "custom"),
            "num_classes": len(model.classes),
            "spec": model.spec,
        },
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
        # Each graph's session, as it was validated (engine.session_settings, engine.openvino_settings).
        "session": cpu_sessions(ctx.config, precisions, report.get("runtimes") or {})
        if target.backend == "onnxruntime"
        else None,
    }


def cpu_sessions(config: Any, precisions: Dict[str, Any], runtimes: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per graph of the cpu target, the session of the runtime that ships it (runtime_choice)."""
    from pipeline.backends.openvino import RUNTIME, openvino_version
    from pipeline.stages.engine import openvino_settings, session_settings

    sessions = {}
    for p in precisions:
        if runtimes.get(p, {}).get("runtime") == RUNTIME:
            sessions[p] = {
                "runtime": RUNTIME,
                "openvino": openvino_version() or "",
                **asdict(openvino_settings(config)),
            }
        else:
            sessions[p] = {"runtime": "onnxruntime", **asdict(session_settings(config, p))}
    return sessions


def write_report_and_bundle(
    bundle: Path, contents: BundleContents, report: Dict[str, Any], work: Path, verdict: Any = None
) -> Path:
    """Render the report into `work` (a scratch folder of the build) and write the whole
    bundle, report included, in one swap."""
    from pipeline.stages.report import render_report

    for path in render_report(report, work, contents.files.get("reference/eval_crops.npy"), verdict):
        contents.files[f"report/{path.name}"] = path
    return write_bundle(bundle, contents)


def build_key(ctx: Any, graphs: Any, engine: Any, validation: Any) -> str:
    """The hash of everything the bundle holds is made from: a bundle whose manifest records
    this key is this build's bundle, and the build leaves it as it is.

    Stage keys cover the graphs, data and measurements; the model's own entry covers what the
    manifest and report say about it (class names, where they came from, the spec with the
    file's name), and the report's settings cover the budgets it is judged against. A change
    of any of these re-writes the bundle from the cached stages; only the rebuild command,
    which depends on nothing but the paths typed, is refreshed in place (see pipeline.build).
    """
    model = graphs.model
    return sha256_json(
        {
            "target": ctx.target_name,
            "settings": ctx.target.model_dump(),
            "gate": ctx.options.gate,
            "validation": validation.record.key,
            "stages": [r.record.key for r in graphs.stages.values()] + [graphs.data.content_hash],
            "engine": engine.stage.record.key if engine.stage else {k: sha256_file(v) for k, v in engine.files.items()},
            "model": {
                "sha256": model.checkpoint_sha256,
                "kind": model.kind,
                "spec": model.spec,
                "classes": model.classes,
                "class_names": model.class_names,
                "classes_from": model.classes_from,
            },
            "report": {
                "budgets": {p: b.model_dump() for p, b in ctx.config.budgets.items()},
                "precision": ctx.config.precision.model_dump(),
            },
        }
    )


def bundle_up_to_date(bundle: Path, key: str) -> bool:
    """The bundle was made from exactly these inputs (`build_key`) and no file of it changed since."""
    try:
        manifest = verify_bundle(bundle)
    except BundleError:
        return False
    return manifest.get("build_key") == key


def unchanged_bundle(ctx: Any, engine: Any) -> Any:
    """The bundle as it is; its rebuild command becomes the one of this build (the same model
    and labels may have been given by other paths), written in place under the bundle lock."""
    from pipeline.context import StageEntry

    ctx.log.record(StageEntry("report", 0.0, True, ctx.bundle_dir))
    report = read_json(ctx.bundle_dir / "report" / "report.json")
    manifest = read_json(ctx.bundle_dir / "manifest.json")
    command = rebuild_command(ctx, bool(manifest["pending"]))
    if manifest["rebuild_command"] != command:
        update_manifest(ctx.bundle_dir, [], {"rebuild_command": command})
    return ctx.outcome(report, list(manifest["pending"]), command, engine.left_reason)


def assemble_bundle(ctx: Any, graphs: Any, engine: Any, validation: Any, build_key: str) -> Any:
    """The host build's bundle: its report (gate included), manifest and files, written in one
    swap; the build's outcome."""
    from pipeline.stages.report import report_of_build
    from pipeline.stages.runtime_choice import optimized_graphs

    report, verdict = report_of_build(ctx, graphs, validation)
    optimized = optimized_graphs(engine.stage, graphs.models, report["runtimes"] or {}) if engine.stage else None
    sources = BundleSources(
        graphs.models, optimized, engine.files, reference_files(graphs.data, validation), engine.pending
    )
    files, precisions = bundle_files(sources)
    contents = BundleContents(files, make_manifest(ctx, graphs.model, precisions, report, sources, build_key))
    with ctx.cache.scratch("report") as work:
        ctx.log.run("report", lambda: write_report_and_bundle(ctx.bundle_dir, contents, report, work, verdict))
    return ctx.outcome(report, engine.pending, contents.manifest["rebuild_command"], engine.left_reason)


@dataclass(frozen=True)
class BundleInputs:
    """What the bundle is made from: the host stages' graphs, the engine step and the validation."""

    graphs: Any  # pipeline.context.Graphs
    engine: Any  # pipeline.context.EngineStep
    validation: Any  # the validate stage's StageResult


def run_bundle(ctx: Any, inputs: BundleInputs) -> Any:
    """The report and the bundle (a pipeline.context.BuildOutcome): written when anything it
    holds changed, else kept as it is (its rebuild command refreshed)."""
    key = build_key(ctx, inputs.graphs, inputs.engine, inputs.validation)
    if bundle_up_to_date(ctx.bundle_dir, key):
        return unchanged_bundle(ctx, inputs.engine)
    return assemble_bundle(ctx, inputs.graphs, inputs.engine, inputs.validation, key)


def summary(bundle_dir: Path) -> str:
    """The report stage's line in the build log: the bundle written."""
    return str(bundle_dir)
