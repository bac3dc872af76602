"""vt-edge from Python: what the CLI does, as functions that return typed results and raise the
project's errors (`pipeline.errors.VtEdgeError` and its kinds: ConfigError, ModelInputError,
DataError, BundleError, ...). Nothing here prints; the CLI (pipeline.cli) parses arguments, calls
these and prints what they return.

    from pipeline import api

    outcome = api.build("cpu", "pipeline.toml")        # every stage, then the bundle
    if not outcome.passed:
        print(outcome.gate_failures)
    manifest = api.verify(outcome.bundle)               # the manifest, every SHA-256 checked
    comparison = api.compare(outcome.bundle, "baseline/report.json")
    if comparison.regressions: ...

A build's progress reaches the caller through a `StageLog` (pipeline.context): `on_stage` after
each stage, `on_message` for a line of news, `on_progress` for long work inside a stage.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

from pipeline.config import Config, load_config
from pipeline.context import BuildContext, BuildOptions, BuildOutcome, StageLog
from pipeline.errors import BundleError, ConfigError

PathLike = Union[str, Path]


def load(
    config: PathLike = "pipeline.toml", model: Optional[PathLike] = None, labels: Optional[PathLike] = None
) -> Config:
    """The config at `config`, with a model file and its class names in place of [model]'s
    checkpoint and labels when given (the bundle is then named after the model's file unless
    [model] name is set)."""
    cfg = load_config(Path(config))
    update: dict = {}
    if model is not None:
        update["checkpoint"] = Path(model).resolve()
        if "name" not in cfg.model.model_fields_set:
            update["name"] = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model).stem).lstrip("._-") or "model"
    if labels is not None:
        update["labels"] = Path(labels).resolve()
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=update)}) if update else cfg


def model(
    config: PathLike = "pipeline.toml", model: Optional[PathLike] = None, labels: Optional[PathLike] = None
) -> Any:
    """The model a build of `config` starts from (pipeline.stages.model_input.LoadedModel: the
    torch module or ONNX graph, its classes and checkpoint hash); checkpoints load weights-only."""
    from pipeline.stages.model_input import load_model

    return load_model(load(config, model, labels))


def model_args(model: Optional[PathLike], labels: Optional[PathLike]) -> Tuple[str, ...]:
    """`--model PATH --labels FILE` as the bundle's rebuild command repeats them."""
    from pipeline.artifacts import path_for_user

    pairs = (("--model", model), ("--labels", labels))
    return tuple(
        part for flag, value in pairs if value is not None for part in (flag, path_for_user(Path(value).resolve()))
    )


def build(
    target: str = "cpu",
    config: PathLike = "pipeline.toml",
    *,
    model: Optional[PathLike] = None,
    labels: Optional[PathLike] = None,
    options: Optional[BuildOptions] = None,
    log: Optional[StageLog] = None,
) -> BuildOutcome:
    """Every stage for `target`, then its bundle in engines/<model>-<target>/. The outcome holds
    the report, the gate's failures (`passed` is False when there are any; a failing gate is a
    result here, not an error) and the engines left for the device."""
    from pipeline.build import build as run_build

    cfg = load(config, model, labels)
    chosen = replace(
        options or BuildOptions(progress=False),
        target=target,
        config_path=Path(config),
        model_args=model_args(model, labels),
    )
    check_options(cfg, chosen, finishing=False)
    return run_build(cfg, chosen, log)


def graphs(
    target: str = "cpu",
    config: PathLike = "pipeline.toml",
    *,
    model: Optional[PathLike] = None,
    labels: Optional[PathLike] = None,
    log: Optional[StageLog] = None,
) -> Any:
    """The host stages up to the precision graphs (data, export, simplify, calibrate, precision;
    each from the cache when it has them), without engines, validation or a bundle: a
    pipeline.context.Graphs with each precision's ONNX graph (`models`), the data subsets
    (`data`) and the loaded model (`model`). For measuring the graphs with other tools."""
    from pipeline.build import make_graphs
    from pipeline.context import check_host_side

    check_host_side()
    options = BuildOptions(target=target, config_path=Path(config), progress=False)
    return make_graphs(BuildContext.open(load(config, model, labels), options, log))


def finish(
    bundle: PathLike,
    config: PathLike = "pipeline.toml",
    *,
    target: Optional[str] = None,
    options: Optional[BuildOptions] = None,
    log: Optional[StageLog] = None,
) -> BuildOutcome:
    """On the device: build and validate the bundle's TensorRT engines, update its report and
    manifest. `target` defaults to the one the bundle was made for (its manifest's)."""
    from pipeline.finish import finish_bundle
    from pipeline.stages.bundle import read_manifest

    cfg = load(config)
    if target is None:
        target = options.target if options is not None else read_manifest(Path(bundle))["target"]["name"]
    chosen = replace(options or BuildOptions(progress=False), target=target, config_path=Path(config))
    check_options(cfg, chosen, finishing=True)
    return finish_bundle(cfg, chosen, Path(bundle), (log or StageLog()).message)


def check_options(cfg: Config, options: BuildOptions, finishing: bool) -> None:
    """Options that do not fit the target (or the device finish) as a ConfigError."""
    _, target = cfg.target(options.target)
    if options.dla_core is not None and (target.backend != "tensorrt" or finishing):
        raise ConfigError(
            "--dla-core applies to TensorRT targets when the bundle is made (the device finish uses the bundle's plans)"
        )


def verify(bundle: PathLike) -> Any:
    """The bundle's manifest (pipeline.bundle.manifest.Manifest) once its contract and every
    listed file's SHA-256 and size are checked; BundleError naming the first problem otherwise."""
    from pipeline.bundle.manifest import Manifest

    return Manifest.model_validate(_verified(Path(bundle), regenerable=()))


def _verified(bundle: Path, regenerable: Any) -> dict:
    from pipeline.stages.bundle import verify_bundle

    try:
        return verify_bundle(bundle, regenerable=regenerable)
    except RecursionError:  # json.loads of a hand-made manifest nested thousands deep
        raise BundleError(f"{bundle}/manifest.json: not a vt-edge manifest (JSON nested too deeply to read)") from None


def report(bundle: PathLike, lock_timeout_s: Optional[float] = None, on_wait: Optional[Any] = None) -> List[Path]:
    """Re-render a bundle's report (Markdown, HTML, plots) from its report.json and record the
    renderings in its manifest (the bundle is verified first: only renderings are re-made).
    A folder holding only a report/report.json is re-rendered without a manifest."""
    from pipeline.stages.bundle import bundle_lock, update_manifest
    from pipeline.stages.report import RENDERED, rerender

    bundle = Path(bundle)
    # A folder that does not exist gets its one-line error from rerender, and no lock file.
    with bundle_lock(bundle, on_wait, lock_timeout_s) if bundle.is_dir() else nullcontext():
        listed = (bundle / "manifest.json").is_file()
        if listed:
            _verified(bundle, regenerable=RENDERED)
        written = rerender(bundle)
        if listed:
            update_manifest(bundle, [p.relative_to(bundle).as_posix() for p in written])
    return written


def read_report(source: PathLike) -> dict:
    """A bundle's report.json (the bundle verified first) or a saved report.json, checked against
    the report model."""
    from pipeline.stages.report import RENDERED
    from pipeline.stages.report import read_report as read

    path = Path(source)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            _verified(path, regenerable=RENDERED)
        path = path / "report" / "report.json"
    return read(path)


def compare(
    candidate: PathLike,
    baseline: PathLike,
    max_slowdown: float = 0.10,
    min_slowdown_ms: float = 0.1,
    output: Optional[PathLike] = None,
) -> Any:
    """What changed from `baseline` to `candidate` per precision (each a bundle folder or a saved
    report.json): a pipeline.report.compare.Comparison, whose `regressions` lists what got worse
    (accuracy past its budget; p50 latency slower by more than `max_slowdown` of the baseline's and
    by more than `min_slowdown_ms`). With `output`, the comparison is also written as Markdown."""
    import math

    from pipeline.artifacts import write_text_atomic
    from pipeline.report.compare import LatencyRule, compare_reports
    from pipeline.stages.report import render_comparison

    if not (math.isfinite(max_slowdown) and math.isfinite(min_slowdown_ms)) or max_slowdown < 0 or min_slowdown_ms < 0:
        raise ConfigError("--max-slowdown and --min-slowdown-ms must be finite numbers, 0 or more")
    comparison = compare_reports(
        read_report(candidate), read_report(baseline), LatencyRule(max_slowdown, min_slowdown_ms)
    )
    if output is not None:
        write_text_atomic(Path(output), render_comparison(comparison))
    return comparison


def train(
    config: PathLike = "pipeline.toml",
    *,
    output: Optional[PathLike] = None,
    zip: Optional[PathLike] = None,
    progress: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> Any:
    """Train the configured VT deterministically on the CPU (pipeline.train.TrainResult): on its
    training set, or the photos in `zip` for `[train] source = "cifar10-zip"`; the checkpoint goes
    to `output` (default: the config's `[model] checkpoint`). `progress`: rich progress bars on
    the terminal; else a line per epoch to `log` (default: nowhere)."""
    from pipeline.progress import quiet
    from pipeline.train import train_model

    cfg = load(config)
    if zip is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"zip": Path(zip).resolve()})})
    destination = Path(output) if output is not None else cfg.path(cfg.model.checkpoint)
    return train_model(cfg, destination, progress=progress, log=log or quiet)


def paper_models(input_size: int = 224) -> List[Any]:
    """Params and FLOPs of VT-ResNet-18/34 against ResNet-18/34 at the paper's width, 1000 classes."""
    from pipeline.models.profile import compare_paper_models

    return list(compare_paper_models(input_size=input_size))


def generate_data(root: PathLike, per_class: int = 30, seed: int = 0, size: int = 224) -> Any:
    """Write the generated labelled demo image set (ImageFolder layout) and return it."""
    from pipeline.data import generate_demo_set
    from pipeline.errors import DataError

    try:
        return generate_demo_set(Path(root), per_class=per_class, seed=seed, size=size)
    except OSError as exc:  # the message would name the hidden staging folder, not the target
        raise DataError(f"{root}: cannot write the image set ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(str(exc)) from None
