"""GPU targets on a host without TensorRT: the off-target bundle, its finish command, dry runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from pipeline.stages.bundle import verify_bundle

BUNDLE = "engines/tiny-jetson-agx-orin"


@pytest.fixture(scope="module")
def jetson_project(tmp_path_factory, tiny_template):
    import shutil

    folder = tmp_path_factory.mktemp("jetson") / "project"
    shutil.copytree(tiny_template, folder)
    result = run_cli(folder, "build", "--target", "jetson", "--no-progress")
    return folder, result


def test_off_target_build_writes_a_complete_bundle_and_exits_0(jetson_project):
    folder, result = jetson_project
    assert result.returncode == 0, result.stderr
    bundle = folder / BUNDLE
    manifest = verify_bundle(bundle)
    assert manifest["target"] == {
        "name": "jetson-agx-orin",
        "backend": "tensorrt",
        "compute_capability": "8.7",
        "tensorrt_majors": [8, 10, 11],
    }
    for precision in ("fp32", "fp16", "int8-trt", "int8-trt-fp16"):  # both int8-trt graphs
        assert (bundle / f"models/model.{precision}.onnx").is_file()
    assert not (bundle / "models/model.int8.onnx").exists()  # the ONNX Runtime flavour is not for this target
    for rel in (
        "reference/fp32_logits.npy",
        "reference/eval_crops.npy",
        "reference/eval_labels.npy",
        "reference/eval_set.json",
        "build_plan.json",
        "report/report.md",
    ):
        assert (bundle / rel).is_file(), rel
    assert manifest["pending"] == ["engine:fp32", "engine:fp16", "engine:int8-trt"]
    assert manifest["engines"] == []
    finish = (
        "python -m pipeline build --target jetson-agx-orin --config pipeline.toml --bundle engines/tiny-jetson-agx-orin"
    )
    assert manifest["rebuild_command"] == finish
    assert finish in result.stderr
    assert "engines left for the device (TensorRT is not installed" in result.stderr


def test_bundle_build_plans_cover_every_shipped_tensorrt(jetson_project):
    folder, _ = jetson_project
    document = json.loads((folder / BUNDLE / "build_plan.json").read_text())
    plans = document["plans"]
    assert document["target"] == "jetson-agx-orin"
    assert {(p["tensorrt_version"], p["precision"]) for p in plans} == {
        (v, p) for v in ("8.5", "8.6", "10.3", "11.4") for p in ("fp32", "fp16", "int8-trt")
    }
    by_version = {p["tensorrt_version"]: p for p in plans if p["precision"] == "int8-trt"}
    assert by_version["10.3"]["strongly_typed"] and not by_version["8.6"]["strongly_typed"]
    # Strongly typed TensorRT builds the FP16-outside graph; 8.x the FP32-outside one with flags.
    assert by_version["8.6"]["onnx"] == "models/model.int8-trt.onnx"
    assert by_version["10.3"]["onnx"] == by_version["11.4"]["onnx"] == "models/model.int8-trt-fp16.onnx"
    assert all((folder / BUNDLE / p["onnx"]).is_file() for p in plans)
    assert set(by_version["8.6"]["builder_flags"]) >= {"INT8"}
    assert all(p["profile"] == {"min": 1, "opt": 2, "max": 4} and p["input_chw"] == [3, 64, 64] for p in plans)
    assert len({p["engine"] for p in plans}) == len(plans)  # unique engine names


def test_report_is_labelled_cpu_proxy(jetson_project):
    folder, _ = jetson_project
    report = json.loads((folder / BUNDLE / "report/report.json").read_text())
    assert report["cpu_proxy"] is True
    assert [r["precision"] for r in report["results"]] == ["fp32-torch", "fp32", "fp16", "int8-trt", "int8-trt-fp16"]
    assert "CPU proxy" in (folder / BUNDLE / "report/report.md").read_text()


def test_require_engine_fails_cleanly(jetson_project):
    folder, _ = jetson_project
    result = run_cli(folder, "build", "--target", "jetson", "--no-progress", "--require-engine")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--require-engine" in errors[0] and "TensorRT is not installed" in errors[0]


def test_finish_without_tensorrt_says_what_is_missing(jetson_project):
    folder, _ = jetson_project
    result = run_cli(folder, "build", "--target", "jetson", "--bundle", BUNDLE, "--no-progress")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot finish" in errors[0] and "TensorRT is not installed" in errors[0]


def test_finish_checks_hashes_before_anything(jetson_project, tmp_path):
    import shutil

    folder, _ = jetson_project
    copy = tmp_path / "project"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".cache", "data"))
    plan = copy / BUNDLE / "models/model.int8-trt.onnx"
    plan.write_bytes(plan.read_bytes() + b"\0")
    result = run_cli(copy, "build", "--target", "jetson", "--bundle", BUNDLE, "--no-progress")
    assert result.returncode == 1 and "SHA-256 does not match" in result.stderr


def test_finish_refuses_a_bundle_of_another_target(tiny_cpu_bundle):
    result = run_cli(tiny_cpu_bundle, "build", "--target", "jetson", "--bundle", "engines/tiny-cpu", "--no-progress")
    assert result.returncode == 1 and "was made for target cpu, not jetson-agx-orin" in result.stderr


def test_dry_run_prints_plans_and_trtexec_without_tensorrt(tiny_project):
    result = run_cli(tiny_project, "build", "--target", "jetson", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "trtexec --onnx=engines/tiny-jetson-agx-orin/models/model.int8-trt.onnx" in result.stdout
    assert "--stronglyTyped" in result.stdout and "--int8" in result.stdout  # 10.3 and 8.6 plans
    assert not (tiny_project / ".cache").exists()  # nothing was built
    dla = run_cli(tiny_project, "build", "--target", "jetson", "--dry-run", "--dla-core", "1")
    assert dla.returncode == 0 and "--useDLACore=1 --allowGPUFallback" in dla.stdout


def test_targets_command_lists_the_table():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "targets"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-agx-orin (jetson)",
        "jetson-xavier",
        "jetson-thor",
        "desktop",
        "cpu",
    ):
        assert name in result.stdout


def test_importing_the_package_needs_no_torch_onnxruntime_or_tensorrt():
    code = (
        "import sys, pipeline, pipeline.cli, pipeline.build, pipeline.finish, pipeline.backends.tensorrt\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_lean_bindings') if m in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_device_picks_the_bundle_plans_for_its_tensorrt(jetson_project):
    import types

    from pipeline.backends.tensorrt import TensorRTInfo
    from pipeline.finish import plans_for_device

    folder, _ = jetson_project
    found = TensorRTInfo("10.3.0.30", 10, 3, 0, module=types.ModuleType("tensorrt"))
    plans = plans_for_device(folder / BUNDLE, found)
    assert sorted(p.precision for p in plans) == ["fp16", "fp32", "int8-trt"]
    assert {p.tensorrt_version for p in plans} == {"10.3"} and all(p.strongly_typed for p in plans)
    other = TensorRTInfo("9.2.0", 9, 2, 0, module=types.ModuleType("tensorrt"))
    with pytest.raises(RuntimeError, match=r"no plan for TensorRT 9.2.0 \(plans for 10.3, 11.4, 8.5, 8.6\)"):
        plans_for_device(folder / BUNDLE, other)


def test_use_dla_puts_fp16_and_int8_on_dla_and_keeps_fp32_on_gpu(tiny_project):
    config = tiny_project / "pipeline.toml"
    config.write_text(config.read_text().replace("dla_cores = 2\n", "dla_cores = 2\nuse_dla = true\n"))
    result = run_cli(tiny_project, "build", "--target", "jetson", "--dry-run")
    assert result.returncode == 0, result.stderr
    # fp16 + int8-trt on DLA with 8.5.2, 8.6.2, 10.3.0 and 11.4.1; 11.4.0 has no DLA: the GPU builds them there
    assert result.stdout.count("--useDLACore=0 --allowGPUFallback") == 8
    on_11_4_0 = result.stdout.split("== with TensorRT 11.4.0")[1].split("== with")[0]
    assert (
        "--useDLACore" not in on_11_4_0
        and "model.int8-trt-fp16.onnx" in on_11_4_0
        and ".trt11.4.0.sm87.engine" in on_11_4_0
    )
    assert "model.fp32.onnx" in result.stdout


def test_dla_core_is_refused_for_a_cpu_target(tiny_project):
    result = run_cli(tiny_project, "build", "--target", "cpu", "--dla-core", "0")
    assert result.returncode == 2 and "--dla-core applies to TensorRT targets" in result.stderr


def test_device_finish_needs_neither_torch_nor_onnxruntime(jetson_project):
    folder, _ = jetson_project
    # Block both imports, as on a Jetson with only the base install and TensorRT.
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None\n"
        "sys.argv = ['pipeline', 'build', '--target', 'jetson', '--bundle', %r, '--no-progress']\n"
        "from pipeline.cli import main; main()\n" % BUNDLE
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "TensorRT is not installed" in result.stderr


def test_off_target_bundle_validates_against_the_schema_file(jetson_project):
    jsonschema = pytest.importorskip("jsonschema")
    folder, _ = jetson_project
    schema = json.loads((ROOT / "docs/manifest.schema.json").read_text())
    manifest = json.loads((folder / BUNDLE / "manifest.json").read_text())
    jsonschema.validate(manifest, schema)
    assert "build_plan.json" in manifest["files"]  # the contract requires it of a TensorRT bundle


def test_the_build_plan_follows_its_generated_schema(jetson_project, tmp_path):
    """docs/build_plan.schema.json is the plan model's; a real bundle's plans validate against it;
    a format-1 document (the same keys) is still read."""
    jsonschema = pytest.importorskip("jsonschema")
    from pipeline.backends.tensorrt_plan import PLAN_FORMAT_VERSION, plan_schema_text, read_build_plans

    assert (ROOT / "docs/build_plan.schema.json").read_text() == plan_schema_text(), (
        'docs/build_plan.schema.json is stale: python -c "from pipeline.backends.tensorrt_plan import '
        "plan_schema_text; open('docs/build_plan.schema.json', 'w').write(plan_schema_text())\""
    )
    folder, _ = jetson_project
    document = json.loads((folder / BUNDLE / "build_plan.json").read_text())
    assert document["format_version"] == PLAN_FORMAT_VERSION
    jsonschema.validate(document, json.loads(plan_schema_text()))
    assert all(plan["network_flags"] is not None for plan in document["plans"])
    older = {**document, "format_version": 1, "plans": [{**plan, "format_version": 1} for plan in document["plans"]]}
    (tmp_path / "build_plan.json").write_text(json.dumps(older))
    assert [plan.network_flags for plan in read_build_plans(tmp_path)] == [
        tuple(plan["network_flags"]) for plan in document["plans"]
    ]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**document, "plans": [{k: v for k, v in document["plans"][0].items() if k != "network_flags"}]},
            json.loads(plan_schema_text()),
        )


def test_a_simulated_device_finish_leaves_a_bundle_that_verifies(jetson_project, tmp_path, monkeypatch):
    """The finish's own bookkeeping (engines, timing caches, report, manifest) on a host without
    TensorRT: the engine builder writes placeholder files and the "engines" run the precision
    graphs on ONNX Runtime. What is checked is that the finished bundle passes verify's check."""
    import shutil
    import types

    from pipeline import backends
    from pipeline.artifacts import write_bytes_atomic
    from pipeline.backends import tensorrt
    from pipeline.backends.onnxruntime import OrtRunner
    from pipeline.backends.tensorrt import GpuInfo, TensorRTInfo
    from pipeline.config import load_config
    from pipeline.context import BuildOptions
    from pipeline.finish import finish_bundle
    from pipeline.names import onnx_file
    from pipeline.stages import engine

    folder, _ = jetson_project
    copy = tmp_path / "project"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".cache", "data"))
    bundle = copy / BUNDLE

    def fake_build(plan, bundle_dir, trt=None, log=print, *, gpu=None):
        write_bytes_atomic(bundle_dir / plan.engine, f"engine {plan.precision}".encode())
        write_bytes_atomic(bundle_dir / plan.timing_cache, b"cache")
        return bundle_dir / plan.engine

    trt = TensorRTInfo("10.3.0.30", 10, 3, 0, module=types.ModuleType("tensorrt"))
    monkeypatch.setattr(tensorrt, "find_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt, "gpu_device", lambda: GpuInfo("Orin (simulated)", "8.7", 1 << 30, "none"))
    monkeypatch.setattr(engine, "host_mismatch", lambda *args: None)
    monkeypatch.setattr(tensorrt, "build_engine", fake_build)
    monkeypatch.setattr(tensorrt, "TensorRTRunner", lambda path, trt, name: OrtRunner(name, bundle / onnx_file(name)))
    assert backends  # the package whose module attributes are replaced above
    (bundle / "engines").mkdir(exist_ok=True)
    (bundle / "engines/.left.engine.abc.tmp").write_bytes(b"partial")  # a finish killed mid-write
    messages: list = []
    outcome = finish_bundle(
        load_config(copy / "pipeline.toml"), BuildOptions(target="jetson", progress=False), bundle, messages.append
    )
    manifest = verify_bundle(bundle)
    assert manifest["pending"] == [] and sorted(e["precision"] for e in manifest["engines"]) == [
        "fp16",
        "fp32",
        "int8-trt",
    ]
    assert not outcome.gate_failures and manifest["versions"]["tensorrt"] == "10.3.0.30"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(manifest, json.loads((ROOT / "docs/manifest.schema.json").read_text()))


def test_api_finish_takes_the_target_the_bundle_was_made_for(jetson_project):
    """api.finish(bundle) needs no target: the manifest names it (here it then stops at the missing TensorRT)."""
    from pipeline import api
    from pipeline.errors import VtEdgeError

    folder, _ = jetson_project
    with pytest.raises(VtEdgeError) as raised:
        api.finish(folder / BUNDLE, folder / "pipeline.toml")
    assert "made for target" not in str(raised.value) and "TensorRT" in str(raised.value)
