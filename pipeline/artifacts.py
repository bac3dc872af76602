"""Content-hash cache, atomic writes, hashing and bundle paths.

A stage's cache key is the hash of its inputs' content and of the configuration it uses. Its
outputs are written into a temporary folder that is renamed into place only once the stage
finished and its record is written, so a build killed at any point leaves either a complete
cache entry or none, and the next run resumes from the last complete stage.
"""

from __future__ import annotations

from pipeline.errors import PathEscapeError

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Tuple

RECORD_NAME = "record.json"


def _process_umask() -> int:
    """The process umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Stable hash of a JSON-able value (keys sorted, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_process_umask())  # mkstemp makes 0600 files; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: Path, value: Any, indent: int = 2) -> None:
    write_text_atomic(target, json.dumps(value, indent=indent, sort_keys=False, default=str) + "\n")


def write_bytes_atomic(target: Path, data: Any) -> None:
    """Bytes, or any buffer (e.g. TensorRT's IHostMemory), written via temp file + rename."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def safe_relative(root: Path, relative: str) -> Path:
    """`root / relative`, refusing any path that would leave `root` (absolute, `..`, symlinks)."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or relative.strip() == "":
        raise PathEscapeError(f"path {relative!r} leaves the bundle folder")
    candidate = (root / pure).resolve()
    if not _inside(candidate, root.resolve()):
        raise PathEscapeError(f"path {relative!r} leaves the bundle folder")
    return root / pure


def _inside(path: Path, root: Path) -> bool:
    """`path.is_relative_to(root)`, which Python 3.8 (JetPack 5) lacks."""
    return path == root or root in path.parents


def path_for_user(path: Path, cwd: Path | None = None) -> str:
    """`path` as typed from `cwd` (default: the current folder) in a printed command: relative
    when it lies inside that folder, absolute otherwise; POSIX separators."""
    target = Path(path).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    return "." if target == here else target.relative_to(here).as_posix() if _inside(target, here) else target.as_posix()


@dataclass
class StageRecord:
    """What a stage did: recorded beside its outputs and in the bundle's build log."""

    stage: str
    key: str
    inputs: dict[str, str]
    config: dict[str, Any]
    versions: dict[str, str]
    wall_s: float
    outputs: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageResult:
    """A finished stage: its folder (outputs) and record; `cached` when no work was done."""

    folder: Path
    record: StageRecord
    cached: bool

    def output(self, name: str) -> Path:
        return self.folder / self.record.outputs[name]


StageBody = Callable[[Path], Tuple[Dict[str, str], Dict[str, Any]]]  # evaluated at import: typing forms (3.8)


class StageCache:
    """Stage outputs under `<root>/<stage>/<key>/`, each with its `record.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key(self, stage: str, inputs: dict[str, str], config: dict[str, Any], version: str) -> str:
        return sha256_json({"stage": stage, "version": version, "inputs": inputs, "config": config})[:24]

    def lookup(self, stage: str, key: str) -> StageResult | None:
        folder = self.root / stage / key
        record_path = folder / RECORD_NAME
        if not record_path.is_file():
            return None
        record = StageRecord(**read_json(record_path))
        if not all((folder / rel).is_file() for rel in record.outputs.values()):
            return None
        return StageResult(folder, record, cached=True)

    def run(
        self,
        stage: str,
        inputs: dict[str, str],
        config: dict[str, Any],
        versions: dict[str, str],
        body: StageBody,
        version: str = "1",
    ) -> StageResult:
        """Return the cached result for this key, or run `body` in a temp folder and publish it.

        `body(workdir)` writes its files into `workdir` and returns (outputs, details): output
        name -> file name inside workdir, and JSON-able facts worth recording.
        """
        key = self.key(stage, inputs, config, version)
        hit = self.lookup(stage, key)
        if hit is not None:
            return hit
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers(stage_dir)
        workdir = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=stage_dir))
        try:
            started = time.perf_counter()
            outputs, details = body(workdir)
            record = StageRecord(
                stage=stage,
                key=key,
                inputs=inputs,
                config=config,
                versions=versions,
                wall_s=round(time.perf_counter() - started, 3),
                outputs=outputs,
                details=details,
                created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            write_json_atomic(workdir / RECORD_NAME, record.to_dict())
            final = stage_dir / key
            if final.exists():  # an older incomplete entry with the same key
                shutil.rmtree(final)
            os.replace(workdir, final)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return StageResult(final, record, cached=False)

    @staticmethod
    def _remove_leftovers(stage_dir: Path) -> None:
        """Folders of a run that was killed mid-stage; never reused."""
        for leftover in stage_dir.glob(".*.partial"):
            shutil.rmtree(leftover, ignore_errors=True)
