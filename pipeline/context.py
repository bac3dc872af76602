"""What travels together through a build: the configuration, the chosen target, the user's
options, the stage cache and the stage log. Stages receive the parts they need from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pipeline.artifacts import StageCache, StageResult
from pipeline.config import Config, TargetConfig
from pipeline.errors import StageError
from pipeline.progress import ProgressFn, or_silent


@dataclass
class BuildOptions:
    target: str = "cpu"
    config_path: Path = Path("pipeline.toml")
    gate: bool = True
    progress: bool = True
    require_engine: bool = False
    dla_core: Optional[int] = None
    # How long to wait for another build of the same bundle: None waits until it is done, 0 fails at once.
    lock_timeout_s: Optional[float] = None
    # The model given on the command line (`--model PATH --labels FILE`), repeated by the
    # bundle's rebuild command.
    model_args: Tuple[str, ...] = ()


@dataclass
class StageEntry:
    stage: str
    wall_s: float
    cached: bool
    result: Any = None  # the stage's artifact, for whoever describes it
    cpu_s: float = 0.0  # CPU time of every thread of this process during the stage

    def to_dict(self) -> Dict[str, Any]:
        return {"stage": self.stage, "wall_s": self.wall_s, "cpu_s": self.cpu_s, "cached": self.cached}


class StageLog:
    """Runs stages, times them and records whether they came from the cache.

    `on_stage` is told about each finished stage (the CLI prints a line); the log itself prints
    nothing, so library callers and tests stay quiet.
    """

    def __init__(
        self,
        on_stage: Optional[Callable[[StageEntry], None]] = None,
        on_message: Optional[Callable[[str], None]] = None,
        on_progress: Optional[ProgressFn] = None,
    ) -> None:
        self.entries: List[StageEntry] = []
        self.on_stage = on_stage or (lambda entry: None)
        self.message = on_message or (lambda text: None)
        self.progress: ProgressFn = or_silent(on_progress)  # long work inside a stage (calibration, search, fine-tune)

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = work()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        self.record(StageEntry(name, round(wall, 3), bool(getattr(result, "cached", False)), result, round(cpu, 3)))
        return result

    def record(self, entry: StageEntry) -> None:
        self.entries.append(entry)
        self.on_stage(entry)

    def as_json(self) -> List[Dict[str, Any]]:
        return [e.to_dict() for e in self.entries]

    @property
    def all_cached(self) -> bool:
        return all(e.cached for e in self.entries)


@dataclass
class BuildContext:
    """One build of one target."""

    config: Config
    target_name: str
    target: TargetConfig
    options: BuildOptions
    cache: StageCache
    log: StageLog

    @classmethod
    def open(cls, config: Config, options: BuildOptions, log: Optional[StageLog] = None) -> "BuildContext":
        target_name, target = config.target(options.target)
        log = log or StageLog()
        cache = StageCache(config.path(config.cache_dir), on_wait=log.message)  # says whom it waits for
        return cls(config, target_name, target, options, cache, log)

    def outcome(self, report: Dict[str, Any], pending: List[str], command: str, left_reason: str) -> "BuildOutcome":
        """What the build (or finish) of this context made: the bundle, its report and gate."""
        failures = list(report["gate"]["failures"])
        return BuildOutcome(self.bundle_dir, report, failures, pending, self.log.as_json(), command, left_reason)

    @property
    def bundle_name(self) -> str:
        return f"{self.config.model.name}-{self.target_name}"

    @property
    def bundle_dir(self) -> Path:
        return self.config.path(self.config.engines_dir) / self.bundle_name

    @property
    def cpu_proxy(self) -> bool:
        """The precision graphs are measured on this CPU, not on the target's engine."""
        return self.target.backend != "onnxruntime"


@dataclass
class BuildOutcome:
    bundle: Path
    report: Dict[str, Any]
    gate_failures: List[str]
    pending: List[str] = field(default_factory=list)
    stages: List[Dict[str, Any]] = field(default_factory=list)
    finish_command: str = ""
    left_reason: str = ""  # why the engines were left for the device

    @property
    def passed(self) -> bool:
        """Whether the regression gate passed (every budget met)."""
        return not self.gate_failures


@dataclass
class Graphs:
    """What the host-side stages made: the data subsets, the model and every precision graph."""

    data: Any
    model: Any
    stages: Dict[str, StageResult]  # export, simplify, precision
    models: Dict[str, Path]  # precision -> ONNX graph
    keys: Dict[str, str]  # precision -> content hash of its graph


@dataclass
class EngineStep:
    """The engine stage's outcome: ONNX Runtime graphs here, or plans left for the device."""

    stage: Optional[StageResult] = None
    pending: List[str] = field(default_factory=list)
    files: Dict[str, Path] = field(default_factory=dict)
    left_reason: str = ""
    cached: bool = False  # whether the stage's work came from the cache


def check_host_side() -> None:
    """Making a bundle is the host's side: Python 3.10+ and the `host` extra. One line, not a traceback."""
    import importlib.util
    import sys

    device = "on a device, finish a bundle the host made with --bundle DIR"
    if sys.version_info < (3, 10):
        raise StageError(
            f"making a bundle needs Python 3.10+ (this is {sys.version_info[0]}.{sys.version_info[1]}); {device}"
        )
    missing = [name for name in ("torch", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise StageError(
            f"making a bundle needs the host packages ({', '.join(missing)} not installed: pip install -e "
            f"'.[host]'); {device}"
        )
