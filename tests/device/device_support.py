"""Device-side fixtures: the host's tiny jetson project as copied to a device, and the stand-ins
for TensorRT, pycuda and trtexec (standins/README.md) that let the finish run without a GPU.

Not a conftest.py: tests/conftest.py is imported as `conftest` by the other test files, so the
device tests import these fixtures by name from here."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
BUNDLE = "engines/tiny-jetson-agx-orin"


@pytest.fixture(scope="session")
def host_project(tmp_path_factory) -> Path:
    """A tiny project with the jetson bundle the host made (export, precision graphs, FP32 logits).

    VTEDGE_HOST_PROJECT names one made by `python tests/tiny_project.py DIR jetson` (.ci/run
    makes it with the host's Python before the device Pythons run); otherwise it is made here,
    which needs torch."""
    given = os.environ.get("VTEDGE_HOST_PROJECT")
    if given:
        assert (Path(given) / BUNDLE / "manifest.json").is_file(), f"VTEDGE_HOST_PROJECT={given} has no {BUNDLE}"
        return Path(given)
    if importlib.util.find_spec("torch") is None:
        pytest.skip(
            "needs the host's tiny jetson project: VTEDGE_HOST_PROJECT=DIR after `python tests/tiny_project.py "
            "DIR jetson` on the host"
        )
    folder = tmp_path_factory.mktemp("host") / "project"
    made = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tiny_project.py"), str(folder), "jetson"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert made.returncode == 0, made.stderr
    return folder


@pytest.fixture
def device_project(host_project, tmp_path) -> Path:
    """What a user copies to the device: the configuration and the bundle, nothing else."""
    folder = tmp_path / "device"
    folder.mkdir()
    shutil.copy(host_project / "pipeline.toml", folder / "pipeline.toml")
    shutil.copytree(host_project / BUNDLE, folder / BUNDLE)
    return folder


@pytest.fixture
def device_env(device_project, tmp_path):
    """env(version) for a subprocess on the "device": the stand-ins importable and `trtexec` on PATH."""
    bundle = device_project / BUNDLE
    manifest = json.loads((bundle / "manifest.json").read_text())
    lookup = tmp_path / "lookup.npz"
    np.savez(
        lookup,
        crops=np.load(bundle / "reference/eval_crops.npy"),
        logits=np.load(bundle / "reference/fp32_logits.npy"),
        mean=np.array(manifest["preprocessing"]["mean"], np.float32),
        std=np.array(manifest["preprocessing"]["std"], np.float32),
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDINS / "trtexec.py"}" "$@"\n')
    (bin_dir / "trtexec").chmod(0o755)

    def env(version: str, standins: bool = True) -> dict:
        paths = [str(STANDINS), str(ROOT)] if standins else [str(ROOT)]
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(paths),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "COLUMNS": "250",
            "VTEDGE_FAKE_TRT_VERSION": version,
            "VTEDGE_FAKE_LOOKUP": str(lookup),
            "VTEDGE_FAKE_LEAKS": str(tmp_path / "leaks.json"),
        }

    return env


def run_device(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=folder, capture_output=True, text=True, env=env
    )
