"""A short, real training run of the tiny VT: checkpoint format, determinism, CLI."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import run_cli
from pipeline.config import load_config
from pipeline.models.checkpoint import load_checkpoint
from pipeline.train import train_model


def test_training_writes_a_weights_only_checkpoint_deterministically(tiny_project: Path):
    config = load_config(tiny_project / "pipeline.toml")
    first = train_model(config, tiny_project / "a.pt", progress=False)
    second = train_model(config, tiny_project / "b.pt", progress=False)
    a = torch.load(first.checkpoint, weights_only=True)
    b = torch.load(second.checkpoint, weights_only=True)
    assert set(a) >= {"state_dict", "spec", "classes", "class_names", "preprocessing", "metrics"}
    assert a["spec"]["arch"] == "vt_resnet18" and a["spec"]["width"] == 8 and len(a["classes"]) == 10
    assert a["preprocessing"]["crop"] == 64
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    assert 0.0 <= first.holdout_accuracy <= 1.0 and first.holdout_images == 50
    assert a["metrics"]["holdout_top1"] == first.holdout_accuracy
    assert load_checkpoint(first.checkpoint)["spec"] == a["spec"]


def test_train_command_reports_accuracy_and_time(tiny_project: Path):
    result = run_cli(tiny_project, "train", "--no-progress", "--output", "c.pt")
    assert result.returncode == 0, result.stderr
    assert "held-out top-1" in result.stdout and "epoch 1/1 loss" in result.stdout
    assert (tiny_project / "c.pt").is_file()
