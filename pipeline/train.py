"""Deterministic CPU training of the built-in VT: on the generated set (default) or on photos in a
zip such as CIFAR-10's (`[train] source = "cifar10-zip"`), with a seeded held-out split.

The checkpoint is a plain dict of tensors and JSON-able values, so `torch.load(weights_only=True)`
reads it: `state_dict`, `spec` (architecture), `classes`, `preprocessing`, `metrics`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pipeline.config import Config, TrainConfig
from pipeline.data import (
    GENERATED_TRAIN_SEED,
    GENERATED_VAL_SEED,
    LabelledSet,
    PreprocessSpec,
    ensure_generated,
    load_crops,
    normalize,
)
from pipeline.models.checkpoint import CheckpointInfo, save_checkpoint, save_weights_only


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    train_accuracy: float
    holdout_accuracy: float
    holdout_images: int
    epochs: int
    wall_s: float


def _augment(crops: "np.ndarray", out_size: int, rng: np.random.Generator, pad: int = 0) -> "np.ndarray":
    """Random crop + horizontal flip on uint8 NCHW (the classes are mirror-symmetric).

    With `pad` > 0 every image is first padded by `pad` pixels on each side by reflection,
    so crops can move beyond the image's border.
    """
    if pad:
        crops = np.pad(crops, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    n, _, h, w = crops.shape
    tops = rng.integers(0, h - out_size + 1, size=n)
    lefts = rng.integers(0, w - out_size + 1, size=n)
    flips = rng.random(n) < 0.5
    out = np.empty((n, 3, out_size, out_size), dtype=crops.dtype)
    for i in range(n):
        patch = crops[i, :, tops[i] : tops[i] + out_size, lefts[i] : lefts[i] + out_size]
        out[i] = patch[:, :, ::-1] if flips[i] else patch
    return out


def _normalise(batch_uint8: "np.ndarray", spec: PreprocessSpec):
    """The model input as a torch tensor, by the same contract as every other stage."""
    import torch

    return torch.from_numpy(normalize(np.ascontiguousarray(batch_uint8), spec))


def evaluate_accuracy(
    model, crops: "np.ndarray", labels: "np.ndarray", spec: PreprocessSpec, batch: int = 64, device: str = "cpu"
) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            images = _normalise(crops[start : start + batch], spec).to(device)
            logits = model(images.contiguous(memory_format=torch.channels_last))
            correct += int((logits.argmax(1).cpu().numpy() == labels[start : start + batch]).sum())
    return correct / max(len(crops), 1)


def model_spec_from(train: TrainConfig, num_classes: int):
    from pipeline.models import ModelSpec

    return ModelSpec(
        arch=train.arch,
        num_classes=num_classes,
        width=train.width,
        tokens=train.tokens,
        token_channels=train.token_channels,
        heads=train.heads,
        stem=train.stem,
    )


@dataclass
class TrainingData:
    """What training needs, as uint8 NCHW arrays; nothing in `holdout` is ever trained on."""

    images: "np.ndarray"  # whole training images at `resize` (random crops move around them)
    labels: "np.ndarray"
    train_eval: "np.ndarray"  # centre crops of (some of) the training images, for train top-1
    train_eval_labels: "np.ndarray"
    holdout: "np.ndarray"  # centre crops
    holdout_labels: "np.ndarray"
    classes: list[str]
    class_names: list[str]
    details: dict[str, Any]  # goes into the checkpoint's metrics


def load_training_data(config: Config, progress: bool = True) -> TrainingData:
    """The configured training images and held-out crops (`[train] source`)."""
    pp = config.preprocessing
    eval_spec = PreprocessSpec(resize=pp.resize, crop=pp.crop, mean=pp.mean, std=pp.std)
    # Training keeps the whole resized image so random crops can move around it.
    train_spec = PreprocessSpec(resize=pp.resize, crop=pp.resize, mean=pp.mean, std=pp.std)
    tc = config.train
    if tc.source == "cifar10-zip":
        return _load_zip(config, train_spec, eval_spec)
    train_set = ensure_generated(config.path(tc.train_root), tc.train_per_class, GENERATED_TRAIN_SEED)
    holdout_set = _holdout_set(config)
    limit = config.data.max_image_pixels
    train_data = load_crops(train_set.samples, train_spec, progress=progress, max_pixels=limit)
    holdout = load_crops(holdout_set.samples, eval_spec, progress=progress, max_pixels=limit)
    train_eval = load_crops(train_set.samples, eval_spec, max_pixels=limit)
    return TrainingData(
        images=train_data.crops,
        labels=train_data.labels,
        train_eval=train_eval.crops,
        train_eval_labels=train_eval.labels,
        holdout=holdout.crops,
        holdout_labels=holdout.labels,
        classes=train_set.classes,
        class_names=train_set.class_names,
        details={"source": "generated"},
    )


def _load_zip(config: Config, train_spec: PreprocessSpec, eval_spec: PreprocessSpec) -> TrainingData:
    from pipeline.artifacts import sha256_file
    from pipeline.data.cifar import decode_members, export_members, read_zip_index, split_holdout

    tc = config.train
    assert tc.zip is not None  # the config requires it for this source
    zip_path = config.path(tc.zip)
    split = split_holdout(read_zip_index(zip_path), tc.holdout_per_class, tc.split_seed)
    if tc.export_holdout is not None:
        export_members(
            zip_path, split.holdout_subset(tc.export_per_class), split.classes, config.path(tc.export_holdout)
        )
    images, labels = decode_members(zip_path, split.train, train_spec)
    holdout, holdout_labels = decode_members(zip_path, split.holdout, eval_spec)
    # Train top-1 on every 9th training image (5,000 of CIFAR-10's 45,000), centre-cropped
    # like the evaluation crops (the images are square, so the offsets are the same).
    off = (train_spec.crop - eval_spec.crop) // 2
    train_eval = np.ascontiguousarray(images[::9, :, off : off + eval_spec.crop, off : off + eval_spec.crop])
    details = {
        "source": "cifar10-zip",
        "zip": zip_path.name,
        "zip_sha256": sha256_file(zip_path),
        "split_rule": split.rule,
        "split_seed": tc.split_seed,
        "train_images": len(split.train),
        "train_eval_images": len(train_eval),
    }
    return TrainingData(
        images=images,
        labels=labels,
        train_eval=train_eval,
        train_eval_labels=labels[::9].copy(),
        holdout=holdout,
        holdout_labels=holdout_labels,
        classes=split.classes,
        class_names=split.classes,
        details=details,
    )


def fit(model, data: TrainingData, tc: TrainConfig, spec: PreprocessSpec, rng: np.random.Generator, log=None) -> None:
    """Train `model` in place: `tc.epochs` epochs of random crops (`spec.crop`) under a one-cycle LR.

    `log`: where each epoch's line goes (None: a progress bar instead)."""
    import torch
    from rich.progress import Progress

    if tc.optimizer == "sgd":
        optimiser = torch.optim.SGD(
            model.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=tc.momentum > 0, weight_decay=tc.weight_decay
        )
    else:
        optimiser = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    images, labels, progress = data.images, data.labels, log is None
    steps_per_epoch = -(-len(images) // tc.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=tc.lr,
        total_steps=tc.epochs * steps_per_epoch,
        pct_start=tc.warmup,
        cycle_momentum=tc.optimizer == "adamw",  # SGD keeps `momentum` throughout
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    labels_all = torch.from_numpy(labels)
    started, cpu_started = time.perf_counter(), time.process_time()

    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("training", total=tc.epochs * steps_per_epoch)
        for epoch in range(tc.epochs):
            model.train()
            order = rng.permutation(len(images))
            running, seen = 0.0, 0
            for start in range(0, len(order), tc.batch_size):
                idx = order[start : start + tc.batch_size]
                batch = _normalise(_augment(images[idx], spec.crop, rng, tc.pad), spec)
                batch = batch.contiguous(memory_format=torch.channels_last)
                loss = loss_fn(model(batch), labels_all[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                running += loss.item() * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{tc.epochs} loss {running / seen:.3f}")
            if not progress:  # logs and CI still see how training goes
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                log(f"epoch {epoch + 1}/{tc.epochs} loss {running / seen:.3f} ({wall:.0f} s, CPU {cpu:.0f} s)")


def train_model(
    config: Config, output: Path, progress: bool = True, log: Optional[Callable[[str], None]] = None
) -> TrainResult:
    """Train the configured VT on the training set and save a weights-only checkpoint at `output`
    (`progress`: bars; else a line per epoch to `log`, default standard output)."""
    if "torch" not in sys.modules:
        # OpenMP threads that spin while waiting make training several times slower as soon as
        # another process wants a core (measured: 10x on 2 shared cores); sleeping costs little.
        # libgomp reads this when torch loads, so only a fresh process can take it.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    tc = config.train
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(tc.seed)
    started, cpu_started = time.perf_counter(), time.process_time()

    pp = config.preprocessing
    eval_spec = PreprocessSpec(resize=pp.resize, crop=pp.crop, mean=pp.mean, std=pp.std)
    data = load_training_data(config, progress=progress)
    loaded_s = time.perf_counter() - started

    model, spec = _training_model(tc, len(data.classes))
    # channels_last: oneDNN's convolutions train several times faster in NHWC on CPU.
    model = model.to(memory_format=torch.channels_last)
    lines = log if log is not None else (lambda m: print(m, flush=True))
    fit(model, data, tc, eval_spec, rng, log=None if progress else lines)
    train_s = time.perf_counter() - started - loaded_s
    model = model.to(memory_format=torch.contiguous_format)

    train_acc = evaluate_accuracy(model, data.train_eval, data.train_eval_labels, eval_spec)
    holdout_acc = evaluate_accuracy(model, data.holdout, data.holdout_labels, eval_spec)
    wall_s = time.perf_counter() - started
    # CPU seconds of all threads: on a shared machine the wall time also counts other
    # processes' turns; the CPU time is what the training itself cost.
    cpu_s = time.process_time() - cpu_started
    metrics = {
        "train_top1": train_acc,
        "holdout_top1": holdout_acc,
        "holdout_images": len(data.holdout_labels),
        "epochs": tc.epochs,
        "wall_s": round(wall_s, 1),
        "load_s": round(loaded_s, 1),
        "train_s": round(train_s, 1),
        "cpu_s": round(cpu_s, 1),
        "threads": tc.threads,
        "torch": str(torch.__version__),
        "recipe": _recipe(tc),
        **data.details,
    }
    if spec is None:  # a factory's model: weights only, with its labels and metrics beside them
        save_weights_only(output, model, data.class_names, metrics)
    else:
        save_checkpoint(
            output, model, CheckpointInfo(spec.to_dict(), data.classes, data.class_names, eval_spec.to_dict(), metrics)
        )
    return TrainResult(output, train_acc, holdout_acc, len(data.holdout_labels), tc.epochs, wall_s)


def _training_model(tc: TrainConfig, num_classes: int):
    """The module to train and, for the built-in VT, its spec (None for a factory's model)."""
    if tc.factory is None:
        from pipeline.models import build_model

        spec = model_spec_from(tc, num_classes=num_classes)
        return build_model(spec), spec
    from pipeline.stages.model_input import resolve_factory

    return resolve_factory(tc.factory)(**{**tc.factory_kwargs, "num_classes": num_classes}), None


def _recipe(tc: TrainConfig) -> dict:
    """The training settings recorded in the checkpoint's metrics."""
    return {
        "optimizer": tc.optimizer,
        "lr": tc.lr,
        "momentum": tc.momentum if tc.optimizer == "sgd" else None,
        "warmup": tc.warmup,
        "weight_decay": tc.weight_decay,
        "label_smoothing": tc.label_smoothing,
        "batch_size": tc.batch_size,
        "pad": tc.pad,
        "seed": tc.seed,
        **({"factory": tc.factory, "factory_kwargs": dict(tc.factory_kwargs)} if tc.factory else {}),
    }


def _holdout_set(config: Config) -> LabelledSet:
    """The held-out split: the generated calibration/evaluation pool (never trained on)."""
    return ensure_generated(config.path(config.data.root), config.data.generated_per_class, GENERATED_VAL_SEED)
