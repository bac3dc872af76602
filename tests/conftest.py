"""Shared fixtures: a tiny project (config, generated images, untrained tiny VT checkpoint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_project import ROOT, make_tiny_project


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """A tiny project whose generated images and checkpoint are made once per session."""
    return make_tiny_project(tmp_path_factory.mktemp("tiny-template"))


@pytest.fixture
def tiny_project(tiny_template, tmp_path) -> Path:
    """A fresh copy of the tiny project (its own cache and engines folders)."""
    folder = tmp_path / "project"
    shutil.copytree(tiny_template, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cpu_bundle(tmp_path_factory, tiny_template) -> Path:
    """The tiny project built once for the cpu target; tests must not modify it."""
    folder = tmp_path_factory.mktemp("tiny-built") / "project"
    shutil.copytree(tiny_template, folder)
    result = run_cli(folder, "build", "--target", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    return folder


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=folder, capture_output=True, text=True, env=env
    )
