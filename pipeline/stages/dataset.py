"""Calibration and evaluation subsets: chosen once, written to calib/, loaded as uint8 crops.

The subsets are deterministic for a seed, stratified per class and disjoint; the lists (with
the SHA-256 of every image) are the content that later stages' cache keys depend on. Decoded
crops are cached by that content, so a re-run decodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from pipeline.artifacts import StageCache, save_array, sha256_file, sha256_json
from pipeline.config import Config
from pipeline.data import (
    GENERATED_VAL_SEED,
    LabelledSet,
    PreprocessSpec,
    ensure_generated,
    load_crops,
    read_ilsvrc_val,
    read_image_folder,
    stratified_subsets,
    write_subset_list,
)
from pipeline.errors import DataError


@dataclass
class Subset:
    crops: np.ndarray  # uint8 NCHW
    labels: np.ndarray  # int64
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DataSplit:
    """The two subsets, loaded, with the list files that describe them."""

    calib: Subset
    evaluation: Subset
    calib_list: Path
    eval_list: Path
    spec: PreprocessSpec
    content_hash: str  # changes when any chosen image, label or the preprocessing changes
    arrays: dict[str, Path]  # cached .npy files (bundled for validation on the device)
    cached: bool = False  # the crops came from the cache (nothing decoded)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [*self.calib.skipped, *self.evaluation.skipped]


def open_dataset(config: Config) -> LabelledSet:
    """The configured image source; the generated set is made on first use."""
    data = config.data
    root = config.path(data.root)
    if data.source == "generated":
        return ensure_generated(root, data.generated_per_class, GENERATED_VAL_SEED)
    if data.source == "imagefolder":
        return read_image_folder(root)
    assert data.ilsvrc_solution is not None and data.ilsvrc_synsets is not None
    return read_ilsvrc_val(root, config.path(data.ilsvrc_solution), config.path(data.ilsvrc_synsets))


def write_lists(config: Config, dataset: LabelledSet) -> tuple[Path, Path, list, list]:
    data = config.data
    calib, evaluation = stratified_subsets(dataset, data.calib_per_class, data.eval_per_class, data.seed)
    lists_dir = config.path(config.lists_dir)
    calib_list = lists_dir / f"{config.model.name}.calibration.json"
    eval_list = lists_dir / f"{config.model.name}.evaluation.json"
    for samples, path, role in ((calib, calib_list, "calibration"), (evaluation, eval_list, "evaluation")):
        write_subset_list(samples, dataset.root, path, dataset.classes, seed=data.seed, method=f"stratified-{role}")
    return calib_list, eval_list, calib, evaluation


def check_classes(config: Config, dataset: LabelledSet, model_classes: List[str], by_position: bool = False) -> None:
    """The image set's classes are the checkpoint's, in the same order: label i must mean the
    class the model's output i was trained for, or every accuracy number is meaningless.

    `by_position`: the names come from a labels file; when they are not the folders' names
    (e.g. human names for synset folders), the sorted folders are the outputs in order."""
    checkpoint = config.path(config.model.checkpoint)
    if dataset.num_classes == 0:
        raise DataError(f"{dataset.root}: no classes (a classifier is evaluated on at least one)")
    if dataset.num_classes != len(model_classes):
        raise DataError(
            f"{dataset.root} has {dataset.num_classes} classes but the checkpoint {checkpoint} has "
            f"{len(model_classes)}: the image set must hold the checkpoint's classes"
        )
    if by_position and set(dataset.classes) != set(model_classes):
        return
    for index, (found, expected) in enumerate(zip(dataset.classes, model_classes)):
        if found != expected:
            raise DataError(
                f"{dataset.root}: class {index} is {found!r} but the checkpoint {checkpoint} calls class {index} "
                f"{expected!r} ({len(model_classes)} classes each): the folders must be the checkpoint's "
                "classes, in its order"
            )


def _usable(loaded: Any, root: Path, role: str) -> None:
    """At least one image of the subset decoded: nothing downstream can run on none."""
    if len(loaded) == 0:
        where = f"; first: {loaded.skipped[0][0]}: {loaded.skipped[0][1]}" if loaded.skipped else ""
        raise DataError(f"{root}: none of the {len(loaded.skipped)} {role} images could be used (all skipped{where})")


@dataclass(frozen=True)
class DataInputs:
    """What the data stage reads beyond the config: the model, whose classes the image set must match."""

    model: Any  # pipeline.stages.model_input.LoadedModel


def run_data(ctx: Any, inputs: DataInputs) -> DataSplit:
    """The data stage: the calibration and evaluation subsets, decoded once and cached."""
    model = inputs.model
    by_position = model.classes_from == "labels"
    return prepare_data_cached(ctx.config, ctx.cache, ctx.options.progress, model.classes, by_position)


def summary(split: DataSplit) -> str:
    """The stage's line in the build log."""
    return (
        f"{len(split.calib.labels)} calibration / {len(split.evaluation.labels)} evaluation images, "
        f"{len(split.skipped)} skipped"
    )


def prepare_data_cached(
    config: Config,
    cache: StageCache,
    progress: bool = True,
    model_classes: Optional[List[str]] = None,
    by_position: bool = False,
) -> DataSplit:
    """Choose and record the subsets; decode their crops unless the cache has them.

    `model_classes` (the model's) are checked against the image set's before anything is
    decoded (`by_position`: see check_classes).
    """
    dataset = open_dataset(config)
    if model_classes is not None:
        check_classes(config, dataset, model_classes, by_position)
    calib_list, eval_list, calib, evaluation = write_lists(config, dataset)
    spec = config.preprocessing.spec()
    max_pixels = config.data.max_image_pixels
    inputs = {"calibration": sha256_file(calib_list), "evaluation": sha256_file(eval_list)}

    def body(workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
        outputs, details = {}, {}
        for role, samples in (("calib", calib), ("eval", evaluation)):
            loaded = load_crops(samples, spec, progress=progress, max_pixels=max_pixels)
            _usable(loaded, dataset.root, "calibration" if role == "calib" else "evaluation")
            save_array(workdir / f"{role}_crops.npy", loaded.crops)
            save_array(workdir / f"{role}_labels.npy", loaded.labels)
            outputs[f"{role}_crops"] = f"{role}_crops.npy"
            outputs[f"{role}_labels"] = f"{role}_labels.npy"
            details[f"{role}_skipped"] = [[str(p), why] for p, why in loaded.skipped]
        return outputs, details

    # The decoder limit decides which images are skipped, so it is part of the data's identity.
    settings = {**spec.to_dict(), "max_image_pixels": max_pixels}
    result = cache.run("data", inputs, settings, {}, body, "1")
    arrays = {name: result.output(name) for name in result.record.outputs}
    return DataSplit(
        calib=_subset(arrays, result.record.details, "calib"),
        evaluation=_subset(arrays, result.record.details, "eval"),
        calib_list=calib_list,
        eval_list=eval_list,
        spec=spec,
        content_hash=sha256_json([inputs, settings])[:32],
        arrays=arrays,
        cached=result.cached,
    )


def _subset(arrays: dict[str, Path], details: dict[str, Any], role: str) -> Subset:
    skipped = [(p, why) for p, why in details.get(f"{role}_skipped", [])]
    return Subset(np.load(arrays[f"{role}_crops"]), np.load(arrays[f"{role}_labels"]), skipped)
