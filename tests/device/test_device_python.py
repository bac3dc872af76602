"""What a device installs: the base package on the device's Python (3.8 on JetPack 5, 3.10 on
JetPack 6), without torch, onnx, onnxruntime or onnxsim."""

from __future__ import annotations

import subprocess
import sys

from device_support import ROOT

DEVICE_MODULES = (
    "pipeline.cli",
    "pipeline.api",
    "pipeline.finish",
    "pipeline.config",
    "pipeline.data",
    "pipeline.metrics",
    "pipeline.artifacts",
    "pipeline.backends.base",
    "pipeline.backends.timing",
    "pipeline.backends.tensorrt",
    "pipeline.backends.tensorrt_env",
    "pipeline.backends.tensorrt_plan",
    "pipeline.backends.tensorrt_build",
    "pipeline.backends.tensorrt_runner",
    "pipeline.backends.onnxruntime",
    "pipeline.bundle.manifest",
    "pipeline.bundle.paths",
    "pipeline.report.compare",
    "pipeline.report.gate",
    "pipeline.report.model",
    "pipeline.report.plots",
    "pipeline.report.text",
    "pipeline.report.views",
    "pipeline.stages.bundle",
    "pipeline.stages.report",
    "pipeline.stages.validate",
    "pipeline.stages.engine",
)
HOST_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter_common", "tensorrt")


def test_device_modules_import_without_host_packages():
    code = (
        f"import sys\nfor name in {HOST_PACKAGES!r}: sys.modules[name] = None\n"
        f"import importlib\nfor name in {DEVICE_MODULES!r}: importlib.import_module(name)\n"
        "print('ok', sys.version_info[:2])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_cli_help_and_targets_run_on_this_python():
    for args in (["--help"], ["targets"], ["build", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        )
        assert result.returncode == 0, result.stderr


def test_host_build_on_an_old_python_says_what_to_do_instead(tmp_path):
    if sys.version_info >= (3, 10):
        return  # the host side runs here
    (tmp_path / "pipeline.toml").write_text((ROOT / "pipeline.toml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--target", "cpu", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1 and "needs Python 3.10+" in result.stderr and "--bundle" in result.stderr
