"""Content-hash cache, atomic writes, hashing, locks and bundle paths.

A stage's cache key is the hash of its inputs' content and of the configuration it uses. Its
outputs are written into a temporary folder that is renamed into place only once the stage
finished and its record is written, so a build killed at any point leaves either a complete
cache entry or none, and the next run resumes from the last complete stage. Two processes that
need the same entry (or the same bundle) take turns through a lock file (see `exclusive_lock`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from pipeline.errors import LockError

RECORD_NAME = "record.json"
SCRATCH_DIR = "scratch"
SCRATCH_LOCK = ".lock"
# A scratch folder whose lock is not written yet is being made this instant; one that stays
# so this long was made by a process killed in that instant.
SCRATCH_GRACE_S = 600.0


def process_umask() -> int:
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


def with_path(exc: OSError, path: Path) -> OSError:
    """`exc`, naming `path` when it names no file (a failed write() knows no file name).

    numpy reports a short write as "N requested and M written" without an errno; on a local
    file that only happens when the disk (or the quota) is full, so it becomes ENOSPC.
    """
    if exc.filename:
        return exc
    code = exc.errno
    if code is None and "requested and" in str(exc):
        code = errno.ENOSPC
    return OSError(code, exc.strerror or str(exc), str(path))


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    The rename replaces a symbolic link at `target` instead of writing through it, so a link
    planted in an output folder never redirects a write elsewhere.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp makes 0600 files; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise with_path(exc, target) from exc
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


def save_array(target: Path, array: Any) -> None:
    """np.save to `target`; a failed write names the file (and "disk full" when it is)."""
    import numpy as np

    try:
        with open(target, "wb") as handle:
            np.save(handle, array)
    except OSError as exc:
        raise with_path(exc, target) from exc


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_file(path: Path, missing: str) -> Any:
    """`path`'s JSON, or BundleError as one line: `missing` when there is no file, or why it is not JSON."""
    from pipeline.errors import BundleError

    if not path.is_file():
        raise BundleError(f"{path}: {missing}")
    try:
        return read_json(path)
    except ValueError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Locks: one writer per bundle and per cache entry


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: written into the lock file by the holder, read by whoever waits."""

    pid: int
    host: str
    since_utc: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.since_utc})"


# Lock files this process holds, with their depth. flock belongs to an open file, so taking the
# same lock twice in one process (a build that finishes its own bundle) would wait for itself.
_HELD: Dict[str, int] = {}
LOCK_POLL_S = 0.2
HOLDER_GRACE_S = 1.0  # how long a waiter waits for the holder's name before saying "another process"


@contextmanager
def exclusive_lock(
    lock_file: Path, what: str, on_wait: Optional[Callable[[str], Any]] = None, timeout_s: Optional[float] = None
) -> Iterator[None]:
    """Hold `lock_file` exclusively (fcntl.flock) while the block runs.

    The kernel drops a flock when its holder exits, killed or not, so a lock is never stale and
    lock files are never deleted (deleting one would let two processes lock different files).
    A second process waits, telling `on_wait` once whom it waits for, or, past `timeout_s`,
    raises LockError naming the holder.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock_file.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, what, on_wait, timeout_s)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, what: str, on_wait: Optional[Callable[[str], Any]], timeout_s: Optional[float]) -> None:
    import fcntl  # POSIX (Linux, Jetson): the only platforms the pipeline runs on

    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        holder = _read_holder(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise LockError(
                f"{what} is locked by {holder or 'another process'}: another build is writing it; run again "
                "when it has finished"
            )
        # A holder that locked a moment ago has not written its name yet: wait a poll or a few
        # for it before telling whom this process waits for.
        if not told and on_wait is not None and (holder is not None or time.monotonic() - started > HOLDER_GRACE_S):
            on_wait(f"waiting for {what}: locked by {holder or 'another process'}")
            told = True
        time.sleep(LOCK_POLL_S)
    info = LockHolder(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(info)).encode("utf-8"), 0)


def _read_holder(fd: int) -> Optional[str]:
    """Who holds the lock, or None while that is not readable (locked a moment ago, or by an older tool)."""
    try:
        return LockHolder(**json.loads(os.pread(fd, 4096, 0).decode("utf-8"))).describe()
    except (ValueError, TypeError, OSError):
        return None


def is_inside(path: Path, root: Path) -> bool:
    """`path.is_relative_to(root)`, which Python 3.8 (JetPack 5) lacks."""
    return path == root or root in path.parents


def path_for_user(path: Path, cwd: Path | None = None) -> str:
    """`path` as typed from `cwd` (default: the current folder) in a printed command: relative
    when it lies inside that folder, absolute otherwise; POSIX separators."""
    target = Path(path).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    return (
        "." if target == here else target.relative_to(here).as_posix() if is_inside(target, here) else target.as_posix()
    )


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
    """Stage outputs under `<root>/<stage>/<key>/`, each with its `record.json`.

    One process at a time makes an entry (lock `<stage>/.<key>.lock`); another build that
    needs the same entry waits and then finds it made.
    """

    def __init__(self, root: Path, on_wait: Optional[Callable[[str], Any]] = None) -> None:
        self.root = root
        self.on_wait = on_wait

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
        hit = self.lookup(stage, key)  # entries appear by rename: one that exists is complete
        if hit is not None:
            return hit
        stage_dir = self.root / stage
        with exclusive_lock(stage_dir / f".{key}.lock", f"cache entry {stage_dir / key}", self.on_wait):
            hit = self.lookup(stage, key)  # made by the build this one waited for
            if hit is not None:
                return hit
            self._remove_leftovers(stage_dir)
            record = StageRecord(stage, key, inputs, config, versions, 0.0, {})
            return self._make(stage_dir, record, body)

    @staticmethod
    def _make(stage_dir: Path, record: StageRecord, body: StageBody) -> StageResult:
        """Run `body` in a fresh folder and rename it into place with its record."""
        workdir = Path(tempfile.mkdtemp(prefix=f".{record.key}.", suffix=".partial", dir=stage_dir))
        try:
            started = time.perf_counter()
            record.outputs, record.details = body(workdir)
            record.wall_s = round(time.perf_counter() - started, 3)
            record.created_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            write_json_atomic(workdir / RECORD_NAME, record.to_dict())
            final = stage_dir / record.key
            if final.exists():  # an older incomplete entry with the same key
                shutil.rmtree(final)
            os.replace(workdir, final)
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise with_path(exc, stage_dir) from exc
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return StageResult(final, record, cached=False)

    @contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A private folder for temporary work under `<root>/scratch/`, removed when the block
        ends. The folder holds a lock while in use, so the sweep at the start of every call
        removes exactly the folders of builds that were killed (the kernel released their lock)."""
        root = self.root / SCRATCH_DIR
        root.mkdir(parents=True, exist_ok=True)
        sweep_scratch(root)
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}.{os.getpid()}.", dir=root))
        try:
            with exclusive_lock(folder / SCRATCH_LOCK, str(folder)):
                yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _remove_leftovers(stage_dir: Path) -> None:
        """Folders of runs killed mid-stage; never reused. A folder whose key another process
        has locked is that process's work in progress and stays."""
        for leftover in stage_dir.glob(".*.partial"):
            key = leftover.name.split(".")[1]
            try:
                with exclusive_lock(stage_dir / f".{key}.lock", str(leftover), timeout_s=0):
                    shutil.rmtree(leftover, ignore_errors=True)
            except LockError:
                continue


def sweep_scratch(root: Path) -> None:
    """Remove the scratch folders under `root` that no running process holds."""
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not folder.is_dir():
            continue
        lock = folder / SCRATCH_LOCK
        if str(lock.resolve()) in _HELD:  # this process's own folder, in use
            continue
        if not lock.is_file() or lock.stat().st_size == 0:  # the holder's record is written once it holds the lock
            if time.time() - folder.stat().st_mtime > SCRATCH_GRACE_S:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            with exclusive_lock(lock, str(folder), timeout_s=0):
                shutil.rmtree(folder, ignore_errors=True)
        except LockError:  # a running build's folder
            continue
