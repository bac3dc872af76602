"""report_model: the typed contract of a bundle's report/report.json.

A report.json is input too: `report A B` (the regression gate of CI) and `report DIR` read
reports that may come from another machine, an older vt-edge or a hand edit. Every reader goes
through `check_report`, so a number that cannot be a measurement (NaN, infinity, a negative
latency, an accuracy above 1) or a key of the wrong type ends as one line naming the file and the
key, never as a traceback or as a verdict computed from it. docs/report.schema.json is generated
from this model (`schema_text()`; a test keeps the committed file equal to it).

The model types every key the report's readers use and keeps the others (`extra="allow"`):
reports carry records of the stages (export, simplify, ...) that no reader interprets.
Accuracies are shares (0..1), budgets' drops percentage points (0..100), times milliseconds.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

try:
    from typing import Annotated
except ImportError:  # Python 3.8 (JetPack 5)
    from typing_extensions import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import BundleError, first_validation_error
from pipeline.report.text import visible

FORMAT_VERSION = 1

# A precision or budget name goes into tables, Markdown and terminals: plain lower-case words.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.+-]{0,63}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, description="a fraction, 0..1")]
Points = Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False, description="percentage points")]
ClassIndex = Annotated[int, Field(ge=0, lt=2**31)]
Count = Annotated[int, Field(ge=0, lt=2**63)]
BatchKey = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,5}$")]  # JSON object keys are strings


class _Open(BaseModel):
    # JSON has real types: "0.9" is not an accuracy. Keys no reader uses are kept, not refused.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class Accuracy(_Open):
    top1: Share
    top5: Share
    agreement: Share  # top-1 agreement with the FP32 reference
    # null when the outputs held NaN or Infinity (an FP16 overflow): the error has no finite measure
    cosine_mean: Optional[Finite]
    max_abs_error: Optional[NonNegative]
    images: Count


class Latency(_Open):
    batch: int = Field(ge=1, lt=2**31)
    p50_ms: NonNegative
    p90_ms: NonNegative
    p99_ms: NonNegative
    mean_ms: Optional[NonNegative] = None
    throughput_ips: NonNegative
    runs: int = Field(ge=1, lt=2**31)


class Runner(_Open):
    device: Optional[str] = None  # engines measured on a device name it


class Predictions(_Open):
    """Per image, in evaluation order (metrics.image_predictions)."""

    top1: List[ClassIndex]
    confidence: List[Share]
    reference_class_confidence: List[Share]


class Result(_Open):
    precision: Name
    accuracy: Accuracy
    latency: List[Latency]
    runner: Runner = Runner()
    samples_ms: Dict[BatchKey, List[NonNegative]] = {}
    predictions: Optional[Predictions] = None  # absent in reports made before per-image answers


class ReportBudget(BaseModel):
    """`[budgets.<precision>]` as the build used it (metrics.Budget, with finite bounds)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_top1_drop: NonNegative  # points; 100 allows anything (an `inf` budget is recorded as 100)
    min_agreement: Share


class ReferenceAnswers(_Open):
    top1: List[ClassIndex]
    confidence: List[Share]


class PerImage(_Open):
    labels: List[ClassIndex]
    reference: ReferenceAnswers


class Sensitivity(_Open):
    module: str
    gain: Finite


class OpCounts(_Open):
    int8: Dict[str, Count]
    float: Dict[str, Count]


class PrecisionDetails(_Open):
    """An INT8 flavour's record: modules kept in FP32, what the fallback measured."""

    fp32_layers: List[str] = []
    methods: List[str] = []
    sensitivity: List[Sensitivity] = []
    agreement: Optional[Share] = None
    top1_drop: Optional[Points] = None
    ops: Optional[OpCounts] = None


class PrecisionSettings(_Open):
    calibration: Optional[str] = None
    max_fp32_layers: Optional[Count] = None


class Host(_Open):
    cpu: str
    cpu_count: Optional[int] = Field(None, ge=1)
    platform: Optional[str] = None
    machine: Optional[str] = None
    python: Optional[str] = None


class ModelRecord(_Open):
    arch: Optional[str] = None
    num_classes: Optional[int] = Field(None, ge=1)
    checkpoint_sha256: str


class StageRecord(_Open):
    stage: str
    wall_s: NonNegative
    cached: bool


class Gate(_Open):
    enabled: bool = True
    failures: List[str] = []


class RuntimeMeasured(_Open):
    runtime: Name
    version: str
    p50_ms: Optional[NonNegative]
    spread_ms: NonNegative
    agreement: Share
    top1_drop: Points
    meets_budget: bool


class RuntimeChoice(_Open):
    """Which CPU runtime ships a precision's graph, and why (pipeline.stages.runtime_choice)."""

    precision: Name
    runtime: Name
    reason: str
    measured: List[RuntimeMeasured] = []
    skipped: Dict[Name, str] = {}


class Report(_Open):
    """report.json, format_version 1. A report without `format_version` (made before it was
    recorded) is read when it fits this model."""

    format_version: Optional[Literal[1]] = None
    bundle: str = Field(min_length=1)
    target: str
    backend: str
    cpu_proxy: bool = False
    created_utc: str
    model: ModelRecord
    evaluation_images: Count
    calibration_images: Count
    skipped_images: List[List[str]] = []
    calibration_method: Optional[str] = None
    precision_settings: PrecisionSettings = PrecisionSettings()
    budgets: Dict[Name, ReportBudget] = {}
    results: List[Result] = Field(min_length=1)
    cpu_proxy_results: Optional[List[Result]] = None  # the host's rows, kept by the device finish
    precision_details: Dict[str, PrecisionDetails] = {}
    stages: List[StageRecord] = []
    host: Host
    notes: List[str] = []
    latency_budget_ms: Optional[Positive] = None
    class_names: Optional[List[str]] = None
    evaluation_set_sha256: Optional[str] = None
    per_image: Optional[PerImage] = None
    runtimes: Optional[Dict[Name, RuntimeChoice]] = None  # cpu target: the runtime per precision
    gate: Gate = Gate()

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        frozen=True,
        title="vt-edge validation report",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    @model_validator(mode="after")
    def _one_row_per_precision(self) -> "Report":
        seen = set()
        for i, result in enumerate(self.results):
            if result.precision in seen:
                raise ValueError(f"results[{i}] measures precision {result.precision!r} again (one row per precision)")
            seen.add(result.precision)
        return self


def check_report(data: Any, source: Path) -> Dict[str, Any]:
    """`data` (report.json's parsed JSON) if it is a report this version reads, else BundleError
    as one line naming `source`, the key and why (or the report's format version)."""
    if not isinstance(data, dict):
        raise BundleError(f"{visible(str(source))}: not a vt-edge report (its JSON is not an object)")
    version = data.get("format_version")
    if "format_version" in data and (version != FORMAT_VERSION or isinstance(version, bool)):
        raise BundleError(
            f"{visible(str(source))}: report format_version {visible(reprlib.repr(version))}; this vt-edge reads "
            f"format_version {FORMAT_VERSION} (compare with the vt-edge that made it, or rebuild the bundle)"
        )
    try:
        Report.model_validate(data)
    except ValidationError as exc:
        what = (
            "invalid report"
            if "format_version" in data
            else "a report without format_version (older vt-edge) that this version cannot read"
        )
        why = re.sub(r" or instance of \w+", "", first_validation_error(exc))  # the class name says nothing to a user
        raise BundleError(f"{visible(str(source))}: {what}: {visible(why)}") from None
    where = _first_non_finite(data)
    if where is not None:  # in a key no reader interprets: a report.json holds measurements, never NaN or Infinity
        raise BundleError(
            f"{visible(str(source))}: invalid report: key '{visible(where)}': NaN or Infinity is not a measurement"
        )
    return data


def _first_non_finite(data: Any) -> Optional[str]:
    """The key path of the first NaN or infinity in `data`, walked without recursion (a report
    may nest as deep as the JSON parser allows)."""
    stack: List[Tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in reversed(list(items)))
    return None


def schema() -> Dict[str, Any]:
    """The JSON Schema of report.json."""
    return Report.model_json_schema()


def schema_text() -> str:
    """docs/report.schema.json as committed: `python -c "from pipeline.report.model import
    schema_text; print(schema_text(), end='')" > docs/report.schema.json` re-makes it."""
    return json.dumps(schema(), indent=2) + "\n"
