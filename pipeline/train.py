"""Deterministic CPU training of the built-in VT on an ImageFolder set (the generated one by default).

The checkpoint is a plain dict of tensors and JSON-able values, so `torch.load(weights_only=True)`
reads it: `state_dict`, `spec` (architecture), `classes`, `preprocessing`, `metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, TrainConfig
from pipeline.data import GENERATED_TRAIN_SEED, GENERATED_VAL_SEED, LabelledSet, PreprocessSpec, ensure_generated, load_crops, normalize
from pipeline.models.checkpoint import CheckpointInfo, save_checkpoint



@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    train_accuracy: float
    holdout_accuracy: float
    holdout_images: int
    epochs: int
    wall_s: float


def _augment(crops: "np.ndarray", out_size: int, rng: np.random.Generator) -> "np.ndarray":
    """Random crop + horizontal flip on uint8 NCHW (the classes are mirror-symmetric)."""
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


def evaluate_accuracy(model, crops: "np.ndarray", labels: "np.ndarray", spec: PreprocessSpec, batch: int = 64) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            logits = model(_normalise(crops[start : start + batch], spec))
            correct += int((logits.argmax(1).numpy() == labels[start : start + batch]).sum())
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
    )


def train_model(config: Config, output: Path, progress: bool = True) -> TrainResult:
    """Train the configured VT on the training set and save a weights-only checkpoint at `output`."""
    import torch
    from rich.progress import Progress

    from pipeline.models import build_model

    tc = config.train
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(tc.seed)
    started = time.perf_counter()

    pp = config.preprocessing
    eval_spec = PreprocessSpec(resize=pp.resize, crop=pp.crop, mean=pp.mean, std=pp.std)
    # Training keeps the whole resized image so random crops can move around it.
    train_spec = PreprocessSpec(resize=pp.resize, crop=pp.resize, mean=pp.mean, std=pp.std)
    train_set = ensure_generated(config.path(tc.train_root), tc.train_per_class, GENERATED_TRAIN_SEED)
    holdout_set = _holdout_set(config)
    train_data = load_crops(train_set.samples, train_spec, progress=progress, max_pixels=config.data.max_image_pixels)
    holdout = load_crops(holdout_set.samples, eval_spec, progress=progress, max_pixels=config.data.max_image_pixels)

    spec = model_spec_from(tc, num_classes=len(train_set.classes))
    model = build_model(spec)
    optimiser = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = -(-len(train_data.crops) // tc.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=tc.lr, total_steps=tc.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    labels_all = torch.from_numpy(train_data.labels)

    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("training", total=tc.epochs * steps_per_epoch)
        for epoch in range(tc.epochs):
            model.train()
            order = rng.permutation(len(train_data.crops))
            running, seen = 0.0, 0
            for start in range(0, len(order), tc.batch_size):
                idx = order[start : start + tc.batch_size]
                images = _normalise(_augment(train_data.crops[idx], pp.crop, rng), eval_spec)
                loss = loss_fn(model(images), labels_all[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                running += loss.item() * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{tc.epochs} loss {running / seen:.3f}")
            if not progress:  # logs and CI still see how training goes
                print(f"epoch {epoch + 1}/{tc.epochs} loss {running / seen:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)

    train_eval = load_crops(train_set.samples, eval_spec, max_pixels=config.data.max_image_pixels)
    train_acc = evaluate_accuracy(model, train_eval.crops, train_eval.labels, eval_spec)
    holdout_acc = evaluate_accuracy(model, holdout.crops, holdout.labels, eval_spec)
    wall_s = time.perf_counter() - started
    metrics = {
        "train_top1": train_acc,
        "holdout_top1": holdout_acc,
        "holdout_images": len(holdout.labels),
        "epochs": tc.epochs,
        "wall_s": round(wall_s, 1),
        "threads": tc.threads,
        "torch": str(torch.__version__),
    }
    save_checkpoint(output, model, CheckpointInfo(spec.to_dict(), train_set.classes, train_set.class_names, eval_spec.to_dict(), metrics))
    return TrainResult(output, train_acc, holdout_acc, len(holdout.labels), tc.epochs, wall_s)


def _holdout_set(config: Config) -> LabelledSet:
    """The held-out split: the generated calibration/evaluation pool (never trained on)."""
    return ensure_generated(config.path(config.data.root), config.data.generated_per_class, GENERATED_VAL_SEED)
