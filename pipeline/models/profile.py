"""Parameter and FLOP counts of the built-in models, next to the numbers in the VT paper.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the matrix
multiplications and convolutions and reports 2 FLOPs per multiply-add. The VT paper (like the
ResNet paper) reports multiply-adds and calls them FLOPs, so `ModelStats.macs` (= flops / 2)
is the number to compare with it. Normalisation, activations, softmax and pooling are not
counted, as in the paper.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models.vt import ModelSpec, build_model

__all__ = ["PAPER_STATS", "PAPER_MODELS", "ModelStats", "compare_paper_models", "format_table", "profile_model"]

#: The four models of the paper's ImageNet comparison, at paper width with 1000 classes.
PAPER_MODELS: tuple[str, ...] = ("vt_resnet18", "resnet18", "vt_resnet34", "resnet34")

#: Wu et al. 2020, ImageNet table: (multiply-adds in G, parameters in M) at 224x224.
PAPER_STATS: dict[str, tuple[float, float]] = {
    "resnet18": (1.814, 11.7),
    "vt_resnet18": (1.569, 11.7),
    "resnet34": (3.664, 21.8),
    "vt_resnet34": (3.236, 19.2),
}


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model for one square input (batch 1)."""

    name: str
    input_size: int
    params: int
    flops: int  # 2 per multiply-add, as FlopCounterMode counts
    macs: int  # multiply-adds: what the VT and ResNet papers call FLOPs

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _count_flops(model: nn.Module, example: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def profile_model(spec_or_module: ModelSpec | str | nn.Module, input_size: int = 224) -> ModelStats:
    """Parameters and FLOPs of a model (a spec, a registered arch name, or a module).

    A spec or name is built on the meta device: only shapes are needed to count, so even the
    full-width models cost no memory and almost no time. A module is run as it is, on the
    device of its parameters, with a zero image.
    """
    if isinstance(spec_or_module, str):
        spec_or_module = ModelSpec(arch=spec_or_module)
    if isinstance(spec_or_module, ModelSpec):
        spec = spec_or_module
        with torch.device("meta"):
            model = build_model(spec)
        example = torch.zeros(1, spec.in_channels, input_size, input_size, device="meta")
        name = spec.arch
    elif isinstance(spec_or_module, nn.Module):
        model = spec_or_module
        spec = getattr(model, "spec", None)
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        in_channels = spec.in_channels if isinstance(spec, ModelSpec) else 3
        example = torch.zeros(1, in_channels, input_size, input_size, device=device)
        name = spec.arch if isinstance(spec, ModelSpec) else type(model).__name__
    else:
        kind = type(spec_or_module).__name__
        raise TypeError(f"profile_model expects a ModelSpec, an arch name or an nn.Module, got {kind}")
    flops = _count_flops(model, example)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(name=name, input_size=input_size, params=params, flops=flops, macs=flops // 2)


def compare_paper_models(input_size: int = 224) -> list[ModelStats]:
    """VT-ResNet-18, ResNet-18, VT-ResNet-34, ResNet-34 at the paper's configuration.

    Paper width (64), 1000 classes, L = 16 tokens of C_T = 1024 channels, 16 heads.
    """
    return [profile_model(ModelSpec(arch=arch), input_size) for arch in PAPER_MODELS]


def format_table(stats: list[ModelStats]) -> str:
    """A Markdown table of the stats, with the paper's numbers where it gives them (224 only)."""
    lines = [
        "| model | input | params (M) | GFLOPs (2/MAC) | GMACs | paper GMACs | paper params (M) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        paper = PAPER_STATS.get(s.name) if s.input_size == 224 else None
        paper_macs, paper_params = (f"{paper[0]:.3f}", f"{paper[1]:.1f}") if paper else ("-", "-")
        lines.append(
            f"| {s.name} | {s.input_size} | {s.mparams:.2f} | {s.flops / 1e9:.3f} | {s.gmacs:.3f} "
            f"| {paper_macs} | {paper_params} |"
        )
    return "\n".join(lines)
