"""pipeline.toml -> typed, validated configuration, including the targets table.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an error rather
than a silently ignored setting, and ``strict=True``, so ``"20"`` is not a number and ``"yes"``
not a boolean (TOML has real types; a quoted value is a mistake). An integer is still accepted
where a float is expected (``lr = 1`` means 1.0). Errors are turned into one line that names the
file and the key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from pipeline.data.preprocess import DEFAULT_MAX_IMAGE_PIXELS, PreprocessSpec
from pipeline.errors import ConfigError, first_validation_error
from pipeline.metrics import Budget

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.8 (JetPack 5) and 3.10 (JetPack 6): the same parser from PyPI
    import tomli as tomllib

try:
    from typing import Annotated
except ImportError:  # Python 3.8
    from typing_extensions import Annotated

DEFAULT_CONFIG_PATH = Path("pipeline.toml")

Precision = Literal["fp32", "fp16", "int8", "int8-trt"]
CalibrationMethod = Literal["entropy", "minmax", "percentile"]
# TOML has no path or tuple type: a path is a string and a tuple an array, so these two types
# accept those (and only those) even though the sections are strict.
TomlPath = Annotated[Path, Strict(False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelConfig(_Section):
    name: str = Field("vt_demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # `module:factory` that returns an nn.Module from the checkpoint's spec. The built-in VT is
    # the default; any torch classifier can go through the pipeline the same way.
    factory: str = Field("pipeline.models.vt:build_model", pattern=r"^[\w.]+:\w+$")
    # The model file: a vt-edge checkpoint (state_dict + spec + classes, made by `train`), a
    # plain torch state_dict (.pt/.pth: bare, or under "state_dict" or "model"), a .safetensors
    # file, or an ONNX classifier (.onnx: export is skipped). `build --model PATH` overrides it.
    checkpoint: TomlPath = Path("models/vt_demo.pt")
    # Keyword arguments for `factory` when the file holds weights only (plain state_dict or
    # safetensors), e.g. {img_size = 32, patch_size = 4, num_classes = 10}.
    factory_kwargs: Dict[str, Any] = {}
    # Class names, one a line, in the order of the model's outputs (`build --labels FILE`).
    # Default: the checkpoint's own (vt-edge checkpoints), else the image set's class folders.
    labels: Optional[TomlPath] = None
    # Checkpoints are untrusted input: full unpickling only when the user opts in.
    trusted_checkpoint: bool = False


class DataConfig(_Section):
    source: Literal["generated", "imagefolder", "ilsvrc-val"] = "generated"
    # generated: folder of the generated set (made on demand); imagefolder: <root>/<class>/*;
    # ilsvrc-val: the flat folder of validation JPEGs.
    root: TomlPath = Path("data/demo/val")
    ilsvrc_solution: Optional[TomlPath] = None
    ilsvrc_synsets: Optional[TomlPath] = None
    calib_per_class: int = Field(10, ge=1)
    eval_per_class: int = Field(20, ge=1)
    seed: int = 0
    # Generated set only: images per class made for the calibration/evaluation pool.
    generated_per_class: int = Field(30, ge=2)
    # Images with more pixels are skipped (and counted) before they are decoded: see
    # DEFAULT_MAX_IMAGE_PIXELS for why this default.
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1)

    @model_validator(mode="after")
    def _ilsvrc_files(self) -> "DataConfig":
        if self.source == "ilsvrc-val" and (self.ilsvrc_solution is None or self.ilsvrc_synsets is None):
            raise ValueError("ilsvrc-val needs ilsvrc_solution and ilsvrc_synsets")
        return self


class PreprocessingConfig(_Section):
    resize: int = Field(128, ge=1)
    crop: int = Field(112, ge=1)
    mean: Annotated[Tuple[Finite, Finite, Finite], Strict(False)] = (0.485, 0.456, 0.406)
    std: Annotated[Tuple[PositiveFinite, PositiveFinite, PositiveFinite], Strict(False)] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _crop_fits(self) -> "PreprocessingConfig":
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self

    def spec(self) -> PreprocessSpec:
        """The preprocessing contract that every stage, the manifest and the C++ loader share."""
        return PreprocessSpec(resize=self.resize, crop=self.crop, mean=self.mean, std=self.std)


class TrainConfig(_Section):
    arch: Literal["vt_resnet18", "vt_resnet34", "resnet18", "resnet34"] = "vt_resnet18"
    width: int = Field(16, ge=4)
    tokens: int = Field(8, ge=1)
    token_channels: int = Field(64, ge=4)
    heads: int = Field(4, ge=1)
    # Stage 1 of the model: "imagenet" (7x7/2 conv + max pool) or "cifar" (3x3/1 conv, no pool,
    # for 32x32 photos).
    stem: Literal["imagenet", "cifar"] = "imagenet"
    # Training photos:
    #   "generated"   the generated set at `train_root` (`train_per_class` a class, made on
    #                 demand); held out: the [data] calibration/evaluation pool.
    #   "cifar10-zip" the photos in `zip` (<top>/<class>/<image> members, e.g. CIFAR-10's
    #                 train/<class>/<n>.jpg), decoded in memory; per class `holdout_per_class`
    #                 photos are held out by a rule seeded with `split_seed`, never trained on.
    source: Literal["generated", "cifar10-zip"] = "generated"
    # Train another architecture instead of `arch`: `module:function` called with
    # `factory_kwargs` and num_classes. The result is saved as weights only (a plain state_dict,
    # or safetensors when the output ends in .safetensors) with a labels file beside it, the
    # way a model trained elsewhere arrives; e.g. "pipeline.models.vit:vit".
    factory: Optional[str] = Field(None, pattern=r"^[\w.]+:\w+$")
    factory_kwargs: Dict[str, Any] = {}
    train_root: TomlPath = Path("data/demo/train")
    train_per_class: int = Field(120, ge=1)
    zip: Optional[TomlPath] = None
    holdout_per_class: int = Field(500, ge=1)
    split_seed: int = Field(0, ge=0)
    # cifar10-zip only: write this many held-out photos a class (original files, byte for
    # byte) to `export_holdout` as an ImageFolder tree, e.g. the repository's shipped set.
    export_holdout: Optional[TomlPath] = None
    export_per_class: int = Field(300, ge=1)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    # "adamw" (AdamW) or "sgd" (SGD with Nesterov momentum `momentum`); both under a one-cycle
    # schedule that peaks at `lr` after `warmup` of the steps and anneals to ~0.
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup: float = Field(0.15, gt=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    # Augmentation: pad each training image by `pad` pixels (reflection) before the random
    # crop, and flip half of them horizontally.
    pad: int = Field(0, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _zip_given(self) -> "TrainConfig":
        if self.source == "cifar10-zip" and self.zip is None:
            raise ValueError("source cifar10-zip needs zip (the path of the photos' zip)")
        if self.export_per_class > self.holdout_per_class:
            raise ValueError(
                f"export_per_class ({self.export_per_class}) must not exceed holdout_per_class "
                f"({self.holdout_per_class})"
            )
        return self


class ExportConfig(_Section):
    opset: int = Field(17, ge=13, le=23)
    # FP32 export noise between torch and ONNX Runtime is ~1e-5; beyond this something is wrong.
    tolerance: float = Field(1e-3, gt=0)
    check_images: int = Field(8, ge=1)


class SimplifyConfig(_Section):
    enabled: bool = True
    tolerance: float = Field(1e-3, gt=0)
    # Constant folding materialises every tensor made from constants: a small graph can ask for
    # gigabytes. Models whose constants (weights included) would exceed this many MB once folded
    # are refused before anything folds them. A ViT-L holds ~1,200 MB of FP32 weights.
    max_constant_mb: float = Field(4096.0, gt=0)


class PrecisionConfig(_Section):
    calibration: CalibrationMethod = "percentile"
    percentile: float = Field(99.99, gt=90, le=100)
    # ONNX Runtime's entropy search costs O(bins^2) per tensor: 512 bins resolve thresholds well
    # below the maximum (128, its default, cannot, which makes entropy equal minmax).
    entropy_bins: int = Field(512, ge=256)
    percentile_bins: int = Field(2048, ge=128)
    # When INT8 misses its budget on the calibration images: first the fallback search keeps as
    # few of the costliest modules in FP32 as meet it (at most max_fp32_layers), ranking them on
    # rank_images calibration photos (0: all) and confirming on all; when even the most allowed
    # miss it, a quantization-aware fine-tune of at most finetune_steps steps (0: none) that
    # stops when its logit error stops falling.
    finetune_steps: int = Field(300, ge=0)
    # Photos a fine-tune step trains on (0: 32 up to 64x64 crops, fewer for larger ones, at
    # least 8: a step at 224x224 costs ~49x one at 32x32 per photo).
    finetune_batch: int = Field(0, ge=0)
    # Checks (every 20 steps, logit error on 64 held-out calibration photos) without a new best
    # before the fine-tune stops; the best weights seen are kept either way.
    finetune_patience: int = Field(3, ge=1)
    max_fp32_layers: int = Field(8, ge=0)
    rank_images: int = Field(128, ge=0)
    # A bound on the search and fine-tune of the whole stage, in seconds (0: none); when reached,
    # the best graph found so far is kept and its methods say so.
    max_search_s: float = Field(0.0, ge=0)


class ValidateConfig(_Section):
    batch_sizes: Annotated[Tuple[Annotated[int, Field(ge=1)], ...], Strict(False)] = Field((1, 8), min_length=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=1)
    threads: int = Field(0, ge=0)  # 0: ONNX Runtime's default (all physical cores)
    torch_baseline: bool = True


class BatchProfile(_Section):
    min: int = Field(1, ge=1)
    opt: int = Field(8, ge=1)
    max: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "BatchProfile":
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile must satisfy min <= opt <= max, got {self.min}/{self.opt}/{self.max}")
        return self


class TargetConfig(_Section):
    description: str = ""
    backend: Literal["onnxruntime", "tensorrt"]
    # "auto": whatever GPU is found (desktop); otherwise "major.minor", e.g. "8.7" for Orin.
    compute_capability: Optional[str] = Field(None, pattern=r"^(auto|\d+\.\d+)$")
    jetpack: Optional[str] = None
    tensorrt_versions: Annotated[Tuple[str, ...], Strict(False)] = ()
    dla_cores: int = Field(0, ge=0)
    use_dla: bool = False
    workspace_mib: int = Field(1024, ge=16)
    profile: BatchProfile = BatchProfile()
    precisions: Annotated[Tuple[Precision, ...], Strict(False)] = ("fp32", "fp16", "int8")
    latency_budget_ms: Optional[float] = Field(None, gt=0)
    opset: Optional[int] = Field(None, ge=13, le=23)
    # The cpu target's runtime: "auto" measures every graph on ONNX Runtime and OpenVINO and
    # ships each on the faster one that meets its budget (pipeline.stages.runtime_choice).
    runtime: Literal["auto", "onnxruntime", "openvino"] = "onnxruntime"

    @model_validator(mode="after")
    def _consistent(self) -> "TargetConfig":
        if self.backend == "tensorrt" and not self.tensorrt_versions:
            raise ValueError("a tensorrt target needs tensorrt_versions")
        if self.backend == "tensorrt" and self.runtime != "onnxruntime":
            raise ValueError(
                "runtime chooses between the CPU runtimes of an onnxruntime target; a tensorrt target runs TensorRT"
            )
        if self.use_dla and self.dla_cores == 0:
            raise ValueError("use_dla is set but the target has no DLA cores")
        return self

    @property
    def tensorrt_majors(self) -> tuple[int, ...]:
        return tuple(sorted({int(v.split(".")[0]) for v in self.tensorrt_versions}))


class Config(_Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    simplify: SimplifyConfig = SimplifyConfig()
    precision: PrecisionConfig = PrecisionConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    budgets: Dict[Precision, Budget] = {}
    targets: Dict[str, TargetConfig] = {}
    aliases: Dict[str, str] = {}
    cache_dir: TomlPath = Path(".cache")
    engines_dir: TomlPath = Path("engines")
    lists_dir: TomlPath = Path("calib")  # the calibration and evaluation lists
    # Paths in the file are relative to the file's folder; this records that folder.
    base_dir: TomlPath = Path(".")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @model_validator(mode="after")
    def _aliases_resolve(self) -> "Config":
        for alias, name in self.aliases.items():
            if name not in self.targets:
                raise ValueError(f"alias {alias!r} points to unknown target {name!r}")
        return self

    def target(self, name: str) -> tuple[str, TargetConfig]:
        """Resolve a target name or alias; ConfigError lists the known names."""
        resolved = self.aliases.get(name, name)
        if resolved not in self.targets:
            known = ", ".join(sorted([*self.targets, *self.aliases]))
            raise ConfigError(f"unknown target {name!r}; known targets: {known}")
        return resolved, self.targets[resolved]

    def path(self, p: Path) -> Path:
        """A configured path, resolved against the config file's folder."""
        # Lexically normalised, so "../engines" reads as the folder it names in messages.
        return p if p.is_absolute() else Path(os.path.normpath(self.base_dir / p))

    def budget(self, precision: str) -> Budget | None:
        return self.budgets.get(precision)  # type: ignore[call-overload]


def load_config(path: Path | None = None) -> Config:
    """Read and validate a pipeline.toml. Any problem raises ConfigError with one line."""
    path = path or DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found (pass --config PATH)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if "base_dir" in raw:
        raise ConfigError(f"{path}: unknown key 'base_dir'")
    raw["base_dir"] = str(path.resolve().parent)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_validation_error(exc)}") from None
