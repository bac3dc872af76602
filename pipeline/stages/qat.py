"""Quantization-aware fine-tune of an INT8 graph, exported as the same Q/DQ graph.

The student is the torch twin of the flavour's Q/DQ graph (pipeline.stages.twin): the same ops
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

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np


@dataclass(frozen=True)
class FinetuneSettings:
    """How long and how hard the fine-tune pushes (defaults measured on the real-photo VT)."""

    steps: int = 300
    batch: int = 32
    learning_rate: float = 2e-5
    temperature: float = 4.0
    seed: int = 0


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


def finetune(qdq_path: Path, fp32_path: Path, images: np.ndarray, settings: FinetuneSettings = FinetuneSettings()) -> Dict[str, np.ndarray]:
    """Distil the FP32 graph into the Q/DQ graph's twin on `images`; the new float initializers."""
    import torch
    import torch.nn.functional as F

    from pipeline.backends.onnxruntime import cpu_session
    from pipeline.stages.twin import load_twin

    torch.manual_seed(settings.seed)
    student = load_twin(qdq_path, fp32_path)
    teacher = cpu_session(fp32_path)
    optimiser = torch.optim.Adam(student.trainable(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(settings.steps, 1))
    rng = np.random.default_rng(settings.seed)
    t = settings.temperature
    for _ in range(settings.steps):
        batch = augment(images[rng.integers(0, len(images), settings.batch)], rng)
        target = torch.from_numpy(teacher.run(None, {teacher.get_inputs()[0].name: batch})[0])
        logits = student(torch.from_numpy(batch))
        loss = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(target / t, 1), reduction="batchmean", log_target=True) * t * t
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return student.float_initializers()


def write_weights(fp32_path: Path, weights: Dict[str, np.ndarray], destination: Path) -> None:
    """A copy of the FP32 graph with `weights` in place of its initializers of the same names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            shape = tuple(tensor.dims)
            tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name].reshape(shape).astype(np.float32), tensor.name))
    onnx.save(model, str(destination))
