"""The device side as a Jetson user meets it, on the devices' Pythons (3.8 on JetPack 5, 3.10 on
JetPack 6): verify the host's bundle, print the trtexec lines and run one as printed, finish the
bundle (engines, validation against the host's FP32 logits, report, manifest), with stand-ins
for TensorRT, pycuda and trtexec (standins/README.md) in place of the device's."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import types

import pytest
from device_support import BUNDLE, ROOT, device_env, device_project, host_project, run_device  # noqa: F401 (fixtures)

from pipeline.backends.tensorrt import GpuInfo, TensorRTInfo, resolve_plan
from pipeline.finish import plans_for_device
from pipeline.stages.bundle import verify_bundle

JETPACKS = [("8.5.2.2", "8.5.2"), ("10.3.0.30", "10.3.0")]  # JetPack 5.1 (Python 3.8), JetPack 6.1/6.2 (3.10)
ORIN = GpuInfo("Orin", "8.7", 32 << 30, "pycuda")


def _group(stdout: str, release: str) -> str:
    """The part of --dry-run's output for one TensorRT release."""
    parts = re.split(r"^== with TensorRT (\S+):.*$", stdout, flags=re.M)
    groups = dict(zip(parts[1::2], parts[2::2]))
    assert release in groups, f"no group for {release} in: {sorted(groups)}"
    return groups[release]


def _trtexec_lines(text: str) -> dict:
    lines = [
        line.split("trtexec       ", 1)[1] for line in text.splitlines() if line.startswith("  trtexec       mkdir")
    ]
    # Keyed by the precision in the engine's name (int8-trt's graph differs per typing mode).
    return {re.search(r"--saveEngine=\S*/engines/[^/.]+\.([\w-]+)\.b\d", line).group(1): line for line in lines}


def _option(line: str, name: str) -> str:
    return next(arg.split("=", 1)[1] for arg in shlex.split(line) if arg.startswith(f"--{name}="))


@pytest.mark.parametrize(("version", "release"), JETPACKS)
def test_printed_trtexec_line_runs_and_names_the_engine_the_finish_looks_up(
    device_project, device_env, version, release
):
    off_device = run_device(
        device_project, device_env(version, standins=False), "build", "--target", "jetson", "--dry-run"
    )
    assert off_device.returncode == 0, off_device.stderr
    lines = _trtexec_lines(_group(off_device.stdout, release))
    assert sorted(lines) == ["fp16", "fp32", "int8-trt"]
    # Strongly typed TensorRT (10.x, 11.x) builds the INT8 graph that is FP16 outside its Q/DQ.
    graph = "int8-trt-fp16" if int(release.split(".")[0]) >= 10 else "int8-trt"
    assert f"models/model.{graph}.onnx" in lines["int8-trt"]
    found = TensorRTInfo(version, *(int(p) for p in release.split(".")), module=types.ModuleType("tensorrt"))
    expected = {p.precision: resolve_plan(p, found, ORIN) for p in plans_for_device(device_project / BUNDLE, found)}
    for precision, line in lines.items():
        assert _option(line, "saveEngine") == f"{BUNDLE}/{expected[precision].engine}"
        assert _option(line, "timingCacheFile") == f"{BUNDLE}/{expected[precision].timing_cache}"
        assert _option(line, "memPoolSize") == f"workspace:{expected[precision].workspace_mib}"
    assert not (device_project / BUNDLE / "engines").exists()  # a fresh bundle has no engines/ folder
    ran = subprocess.run(
        lines["fp16"], shell=True, cwd=device_project, capture_output=True, text=True, env=device_env(version)
    )
    assert ran.returncode == 0, ran.stderr
    assert (device_project / BUNDLE / expected["fp16"].engine).is_file()
    # On the device (TensorRT and the GPU found) --dry-run prints the same lines for its release only.
    on_device = run_device(device_project, device_env(version), "build", "--target", "jetson", "--dry-run")
    assert on_device.returncode == 0, on_device.stderr
    assert (
        on_device.stdout.count("== with TensorRT") == 1 and _trtexec_lines(_group(on_device.stdout, release)) == lines
    )


@pytest.mark.parametrize(("version", "release"), JETPACKS)
def test_finish_on_the_device_builds_validates_and_records(device_project, device_env, version, release, tmp_path):
    env = device_env(version)
    verified = run_device(device_project, env, "verify", BUNDLE)
    assert verified.returncode == 0 and "bundle OK" in verified.stdout, verified.stderr
    dry = run_device(device_project, env, "build", "--target", "jetson", "--dry-run")
    fp16_line = _trtexec_lines(dry.stdout)["fp16"]
    assert subprocess.run(fp16_line, shell=True, cwd=device_project, env=env, capture_output=True).returncode == 0

    finished = run_device(device_project, env, "build", "--target", "jetson", "--bundle", BUNDLE, "--no-progress")
    assert finished.returncode == 0, finished.stderr
    assert f"finishing {BUNDLE} with TensorRT {version} on Orin (sm 8.7)" in finished.stderr
    assert re.search(
        r"fp16: engines/\S+\.trt" + re.escape(release) + r"\.sm87\.engine was built on this device", finished.stderr
    )
    bundle = device_project / BUNDLE
    manifest = verify_bundle(bundle)  # strict: engines and timing caches are listed
    assert manifest["pending"] == [] and manifest["versions"]["tensorrt"] == version
    engines = {e["precision"]: e for e in manifest["engines"]}
    assert sorted(engines) == ["fp16", "fp32", "int8-trt"]
    for precision, entry in engines.items():
        assert entry["path"].endswith(f".trt{release}.sm87.engine") and entry["compute_capability"] == "8.7"
        assert entry["tensorrt_version"] == version and entry["device_name"] == "Orin"
    built = {p: json.loads((bundle / e["path"]).read_text()) for p, e in engines.items()}
    assert built["fp16"]["built_by"] == "trtexec" and built["int8-trt"]["built_by"] == "builder"
    assert built["fp16"]["workspace_mib"] == built["int8-trt"]["workspace_mib"] == 1024
    if release.startswith("8."):  # weakly typed: Q/DQ needs INT8, FP16 for the rest
        assert built["int8-trt"]["network_flags"] == ["EXPLICIT_BATCH"] and built["int8-trt"]["builder_flags"] == [
            "INT8",
            "FP16",
        ]
        assert built["fp16"]["builder_flags"] == ["FP16"]
    else:  # strongly typed: precision from the graph
        assert built["int8-trt"]["network_flags"] == ["STRONGLY_TYPED"] and built["int8-trt"]["builder_flags"] == []
        assert built["fp16"]["network_flags"] == ["STRONGLY_TYPED"]

    report = json.loads((bundle / "report/report.json").read_text())
    assert report["cpu_proxy"] is False and report["gate"]["failures"] == []
    measured = {r["precision"]: r for r in report["results"]}
    for precision in engines:  # each engine ran every bundled crop, in order, through the device buffers
        assert (
            measured[precision]["accuracy"]["agreement"] == 1.0
            and measured[precision]["runner"]["backend"] == "tensorrt"
        )
    assert "with TensorRT " + version in (bundle / "report/report.md").read_text()
    leaks = json.loads((tmp_path / "leaks.json").read_text())
    assert leaks == {"allocations": 0, "contexts": 0}  # every runner was closed

    again = run_device(device_project, env, "build", "--target", "jetson", "--bundle", BUNDLE, "--no-progress")
    assert again.returncode == 0 and again.stderr.count("is in the bundle: reused") == 3, again.stderr
    assert run_device(device_project, env, "verify", BUNDLE).returncode == 0


def test_finish_refuses_a_tensorrt_the_target_does_not_ship(device_project, device_env):
    result = run_device(
        device_project, device_env("9.2.0.5"), "build", "--target", "jetson", "--bundle", BUNDLE, "--no-progress"
    )
    assert result.returncode == 1
    assert "this host has TensorRT 9.2.0.5; jetson-agx-orin ships 8.5, 8.6, 10.3, 11.4" in result.stderr
    assert "Traceback" not in result.stderr and not (device_project / BUNDLE / "engines").exists()


def test_printed_finish_command_works_from_another_folder(host_project, tmp_path):
    """The command printed after a host build names --config and --bundle as typed from where the user is."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "250"}
    code = (
        "import sys; from pathlib import Path; from types import SimpleNamespace as NS\n"
        "from pipeline.config import load_config; from pipeline.context import BuildContext, BuildOptions\n"
        "from pipeline.stages.bundle import rebuild_command\n"
        f"config = Path({str(host_project / 'pipeline.toml')!r})\n"
        "ctx = BuildContext.open(load_config(config), BuildOptions(target='jetson', config_path=Path(sys.argv[1])))\n"
        "print(rebuild_command(ctx, True))\n"
    )
    for typed in (str(host_project / "pipeline.toml"), os.path.relpath(host_project / "pipeline.toml", elsewhere)):
        printed = subprocess.run(
            [sys.executable, "-c", code, typed], cwd=elsewhere, capture_output=True, text=True, env=env
        )
        assert printed.returncode == 0, printed.stderr
        command = shlex.split(printed.stdout.strip())
        config, bundle = command[command.index("--config") + 1], command[command.index("--bundle") + 1]
        assert (elsewhere / config).resolve() == (host_project / "pipeline.toml").resolve()
        assert (elsewhere / bundle / "manifest.json").resolve() == (host_project / BUNDLE / "manifest.json").resolve()
