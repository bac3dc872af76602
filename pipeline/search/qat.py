"""Quantization-aware fine-tune of an INT8 graph, exported as the same Q/DQ graph.

The student is the torch twin of the flavour's Q/DQ graph (pipeline.graphs.twin): the same ops
and the same Q/DQ, with the FP32 graph's weights as parameters quantized on the fly per channel.
The teacher is the FP32 graph. A few hundred steps of distillation (KL divergence between the
softened logits) on augmented photos move the weights to where their quantized values reproduce
the FP32 answers. BatchNorm is already folded into the convolutions of the exported graph, so it
stays frozen by construction, and the activation ranges stay the calibration's.

Export: the fine-tuned float weights are written into a copy of the FP32 graph, and the same
quantizer with the same ranges makes the Q/DQ graph from it, so the result has exactly the
structure and activation scales of the post-training graph; only weights and biases differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from pipeline.progress import ProgressFn, Step, or_silent


@dataclass(frozen=True)
class FinetuneSettings:
    """How long and how hard the fine-tune pushes (defaults measured on the real-photo VT).

    `steps` is the most it runs: every `check_every` steps the logit error against FP32 is
    measured on `check_images` calibration photos it does not train on, and after `patience`
    checks without a new best it stops; the best weights seen are the ones returned."""

    steps: int = 300
    batch: int = 32
    learning_rate: float = 2e-5
    temperature: float = 4.0
    seed: int = 0
    check_every: int = 20  # 0: no checks, the last weights are returned
    patience: int = 3
    check_images: int = 64
    deadline: Optional[float] = None  # time.monotonic() past which it stops (the precision stage's time bound)


@dataclass
class FinetuneResult:
    weights: Dict[str, np.ndarray]  # the best float initializers, by FP32 graph name
    steps_run: int
    stopped: str  # why it stopped: "steps", "no better", "time bound"
    device: str
    start_error: float  # logit error on the check photos before and at the best check
    best_error: float


def augment(images: np.ndarray, rng: np.random.Generator, pad: int = 2) -> np.ndarray:
    """Random shift by up to `pad` pixels (reflected border) and horizontal flip, NCHW float."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.empty_like(images)
    for i in range(n):
        y, x = rng.integers(0, 2 * pad + 1, 2)
        patch = padded[i, :, y : y + h, x : x + w]
        out[i] = patch[:, :, ::-1] if rng.random() < 0.5 else patch
    return out


def _device() -> Any:
    """A CUDA GPU when torch sees one (activation ranges stay the calibration's: the host decides them)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Check:
    """The logit error of the student on photos it does not train on; remembers the best weights."""

    def __init__(self, student: Any, images: np.ndarray, target: np.ndarray, device: Any) -> None:
        import torch

        self.student, self.device = student, device
        self.images, self.target = torch.from_numpy(images).to(device), torch.from_numpy(target).to(device)
        self.best_error, self.best_weights, self.since_best = self.error(), student.float_initializers(), 0
        self.start_error = self.best_error

    def error(self) -> float:
        import torch

        with torch.no_grad():
            return float(torch.mean((self.student(self.images) - self.target) ** 2))

    def better(self) -> bool:
        """Measure now; True when this is a new best (its weights are kept)."""
        error = self.error()
        if error < self.best_error:
            self.best_error, self.best_weights, self.since_best = error, self.student.float_initializers(), 0
            return True
        self.since_best += 1
        return False


def finetune(
    qdq_path: Path,
    fp32_path: Path,
    images: np.ndarray,
    settings: FinetuneSettings = FinetuneSettings(),
    progress: Optional[ProgressFn] = None,
) -> FinetuneResult:
    """Distil the FP32 graph into the Q/DQ graph's twin on `images`; the best float initializers."""
    import torch

    from pipeline.backends.onnxruntime import cpu_session
    from pipeline.graphs.twin import load_twin

    report, device = or_silent(progress), _device()
    torch.manual_seed(settings.seed)
    student = load_twin(qdq_path, fp32_path).to(device)
    teacher = cpu_session(fp32_path)
    train, held = _split(images, settings)
    check = _Check(student, held, _teacher_logits(teacher, held), device)
    optimiser = torch.optim.Adam(student.trainable(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(settings.steps, 1))
    rng = np.random.default_rng(settings.seed)
    step, stopped = 0, "steps"
    while step < settings.steps:
        batch = augment(train[rng.integers(0, len(train), settings.batch)], rng)
        loss = _distillation_loss(
            student(torch.from_numpy(batch).to(device)), _teacher_logits(teacher, batch), settings.temperature, device
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        if settings.check_every and (step % settings.check_every == 0 or step == settings.steps):
            check.better()
            report(Step("fine-tune", step, settings.steps, f"logit error {check.best_error:.4g}"))
        stopped = _stop_reason(check, settings) or stopped
        if stopped != "steps":
            break
    report(Step("fine-tune", settings.steps, settings.steps, stopped))
    if not settings.check_every:  # no checks: the last weights
        check.best_weights, check.best_error = student.float_initializers(), check.error()
    return FinetuneResult(check.best_weights, step, stopped, str(device), check.start_error, check.best_error)


def _split(images: np.ndarray, settings: FinetuneSettings) -> Tuple[np.ndarray, np.ndarray]:
    """(photos to train on, photos to check on): a seeded choice of `check_images` held out,
    as long as at least as many are left to train on."""
    held = min(settings.check_images, len(images) // 2)
    order = np.random.default_rng(settings.seed).permutation(len(images))
    if held == 0:
        return images, images
    return images[order[held:]], images[order[:held]]


def _teacher_logits(teacher: Any, batch: np.ndarray) -> np.ndarray:
    return teacher.run(None, {teacher.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def _distillation_loss(logits: Any, target: np.ndarray, t: float, device: Any) -> Any:
    import torch
    import torch.nn.functional as F

    soft_target = F.log_softmax(torch.from_numpy(target).to(device) / t, 1)
    return F.kl_div(F.log_softmax(logits / t, 1), soft_target, reduction="batchmean", log_target=True) * t * t


def _stop_reason(check: _Check, settings: FinetuneSettings) -> Optional[str]:
    if check.since_best >= settings.patience:
        return "no better"
    if settings.deadline is not None and time.monotonic() > settings.deadline:
        return "time bound"
    return None


def write_weights(fp32_path: Path, weights: Dict[str, np.ndarray], destination: Path) -> None:
    """A copy of the FP32 graph with `weights` in place of its initializers of the same names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            shape = tuple(tensor.dims)
            tensor.CopyFrom(
                numpy_helper.from_array(weights[tensor.name].reshape(shape).astype(np.float32), tensor.name)
            )
    onnx.save(model, str(destination))
