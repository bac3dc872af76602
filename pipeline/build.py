"""`build`: wire the stages in order for one target and write the engine bundle.

config -> data -> export -> simplify -> calibrate -> precision -> engine -> validate -> report
-> bundle. Every stage is cached by content and lives in pipeline/stages/; this module only
passes each stage's artifacts to the next.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from pipeline.artifacts import StageResult, sha256_file
from pipeline.config import Config
from pipeline.context import (
    BuildContext,
    BuildOptions,
    BuildOutcome,
    EngineStep,
    Graphs,
    StageLog,
    check_host_side,
)
from pipeline.errors import StageError
from pipeline.names import FP32, INT8_FLAVOURS, graph_variants


def build(config: Config, options: BuildOptions, log: Optional[StageLog] = None) -> BuildOutcome:
    """Every stage for one target, then its bundle; one build of a bundle at a time.

    A second build of the same bundle waits for the first (then finds every stage cached) or,
    past `options.lock_timeout_s`, fails naming the holder. Success is only reported for a
    bundle that passes the same check as `verify`.
    """
    from pipeline.stages.bundle import bundle_lock, verify_bundle

    check_host_side()
    ctx = BuildContext.open(config, options, log)
    with bundle_lock(ctx.bundle_dir, ctx.log.message, options.lock_timeout_s):
        outcome = _build_locked(ctx)
        verify_bundle(outcome.bundle)
    return outcome


def _build_locked(ctx: BuildContext) -> BuildOutcome:
    from pipeline.stages.bundle import BundleInputs, run_bundle

    graphs = make_graphs(ctx)
    engine = engine_step(ctx, graphs)
    validation = validate_step(ctx, graphs, engine)
    return _finish_or_leave(ctx, run_bundle(ctx, BundleInputs(graphs, engine, validation)))


def make_graphs(ctx: BuildContext) -> Graphs:
    """data -> export -> simplify -> calibrate -> precision, each cached by content."""
    from pipeline.data import normalize
    from pipeline.stages.calibrate import CalibrateInputs, run_calibrate
    from pipeline.stages.dataset import DataInputs, run_data
    from pipeline.stages.export import ExportInputs, run_export
    from pipeline.stages.model_input import load_model
    from pipeline.stages.precision import PrecisionInputs, run_precision
    from pipeline.stages.simplify import SimplifyInputs, run_simplify

    config, log = ctx.config, ctx.log
    model = load_model(config)  # a bad checkpoint fails before any data work
    data = log.run("data", lambda: run_data(ctx, DataInputs(model)))
    check = data.evaluation.crops[: config.export.check_images]
    exported = log.run("export", lambda: run_export(ctx, ExportInputs(model, check, data.content_hash)))
    simplified = log.run("simplify", lambda: run_simplify(ctx, SimplifyInputs(exported, check, data.content_hash)))
    calib_images = np.ascontiguousarray(normalize(data.calib.crops, config.preprocessing.spec()))
    calibration = None
    if any(p in INT8_FLAVOURS for p in ctx.target.precisions):
        calibrate = CalibrateInputs(simplified, calib_images, data.content_hash)
        calibration = log.run("calibrate", lambda: run_calibrate(ctx, calibrate))
    inputs = PrecisionInputs(simplified, exported, calibration, calib_images, data.calib.labels)
    precision = log.run("precision", lambda: run_precision(ctx, inputs))
    graphs = [p for p in ctx.target.precisions if p != FP32] + graph_variants(ctx.target.precisions)
    models = {FP32: simplified.output("onnx"), **{p: precision.output(p) for p in graphs}}
    # Downstream keys are the graphs' content, so a re-made graph that differs re-runs what follows.
    keys = {p: sha256_file(path) for p, path in models.items()}
    return Graphs(data, model, {"export": exported, "simplify": simplified, "precision": precision}, models, keys)


def engine_step(ctx: BuildContext, graphs: Graphs) -> EngineStep:
    from pipeline.stages.engine import EngineInputs, run_engine

    return ctx.log.run("engine", lambda: run_engine(ctx, EngineInputs(graphs.models, graphs.keys)))


def validate_step(ctx: BuildContext, graphs: Graphs, engine: EngineStep) -> StageResult:
    from pipeline.stages.engine import openvino_graphs
    from pipeline.stages.validate import ValidationInputs, run_validate

    data, models, keys = graphs.data, graphs.models, graphs.keys
    if engine.stage:  # the cpu target ships ONNX Runtime's optimized graphs: those are what is validated
        models = {p: engine.stage.output(p) for p in graphs.models}
        keys = {p: sha256_file(path) for p, path in models.items()}
    evaluation = data.evaluation
    openvino = openvino_graphs(ctx.target, graphs.models)
    inputs = ValidationInputs(
        models, keys, evaluation.crops, evaluation.labels, data.content_hash, graphs.model, openvino
    )
    return ctx.log.run("validate", lambda: run_validate(ctx, inputs))


def _finish_or_leave(ctx: BuildContext, outcome: BuildOutcome) -> BuildOutcome:
    """Build the pending engines right away when this host is the target; else leave them."""
    if not outcome.pending:
        return outcome
    if not outcome.left_reason:
        from pipeline.finish import finish_bundle

        return finish_bundle(ctx.config, ctx.options, outcome.bundle, ctx.log.message)
    if ctx.options.require_engine:
        raise StageError(
            f"--require-engine: the {ctx.options.target} engine cannot be built on this host: {outcome.left_reason}"
        )
    return outcome
