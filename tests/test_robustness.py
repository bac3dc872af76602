"""Nothing lost, nothing let in: concurrent builds, the bundle check, inputs checked where they
enter, one-line errors, whole listings and the decoder limit."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from pipeline.artifacts import StageCache, exclusive_lock, save_array
from pipeline.stages.bundle import BundleError, bundle_lock, verify_bundle

BUNDLE = "engines/tiny-cpu"


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def one_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The single `error:` line of a failed command (and no traceback)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = error_lines(result)
    assert len(errors) == 1, result.stderr
    return errors[0]


def start_cli(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------------------------------------
# Concurrent builds


def test_two_builds_of_one_target_at_once_give_one_complete_bundle(tiny_project):
    first = start_cli(tiny_project, "build", "--no-progress")
    second = start_cli(tiny_project, "build", "--no-progress")
    results = [(p.wait(timeout=900), *p.communicate()) for p in (first, second)]
    for code, _, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr
    assert any("waiting for" in stderr and "pid " in stderr for _, _, stderr in results)  # the one that waited said so
    manifest = verify_bundle(tiny_project / BUNDLE)
    assert (
        len(manifest["files"]) == 19
    )  # models for 5 graphs (int8-trt-fp16 included), their ONNX Runtime-optimized copies, reference, report
    engines = tiny_project / "engines"
    assert sorted(p.name for p in engines.iterdir()) == [".tiny-cpu.lock", "tiny-cpu"]  # no staging or old folder left
    assert not list((tiny_project / ".cache").glob("*/.*.partial"))


def test_a_locked_bundle_with_lock_timeout_0_fails_naming_the_holder(tiny_project):
    with bundle_lock(tiny_project / BUNDLE):
        result = run_cli(tiny_project, "build", "--no-progress", "--lock-timeout", "0")
    line = one_error(result)
    assert f"engines/tiny-cpu is locked by pid {os.getpid()} on {socket.gethostname()}" in line
    assert not (tiny_project / BUNDLE).exists()


def test_lock_is_reentrant_in_a_process_and_times_out_naming_the_holder(tmp_path):
    lock = tmp_path / ".x.lock"
    with exclusive_lock(lock, "x"):
        with exclusive_lock(lock, "x", timeout_s=0):  # a build finishing its own bundle
            pass
        code = (
            "import sys; sys.path.insert(0, %r)\n"
            "from pathlib import Path\n"
            "from pipeline.artifacts import exclusive_lock, LockError\n"
            "waits = []\n"
            "try:\n"
            "    with exclusive_lock(Path(%r), 'x', waits.append, timeout_s=0.5): print('got it')\n"
            "except LockError as exc: print(exc, '|', waits)\n"
        ) % (str(ROOT), str(lock))
        held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"x is locked by pid {os.getpid()}" in held.stdout and "waiting for x: locked by pid" in held.stdout, held
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert free.stdout.strip() == "got it"  # released with the block


def test_cache_leftovers_of_a_running_build_are_kept(tmp_path):
    stage = tmp_path / "export"
    stage.mkdir()
    (stage / ".aaaa.x1.partial").mkdir()  # a build killed mid-stage: nobody holds its lock
    (stage / ".bbbb.x2.partial").mkdir()  # another process is making this entry right now
    cache = StageCache(tmp_path)

    def body(workdir):
        (workdir / "out.txt").write_text("x")
        return {"out": "out.txt"}, {}

    with exclusive_lock(stage / ".bbbb.lock", "entry bbbb"):
        subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "import sys; sys.path.insert(0, %r)\n"
                    "from pathlib import Path\n"
                    "from pipeline.artifacts import StageCache\n"
                    "StageCache(Path(%r))._remove_leftovers(Path(%r))\n"
                )
                % (str(ROOT), str(tmp_path), str(stage)),
            ],
            check=True,
        )
        assert (stage / ".bbbb.x2.partial").is_dir() and not (stage / ".aaaa.x1.partial").exists()
        result = cache.run("export", {"a": "1"}, {}, {}, body)
    assert result.output("out").read_text() == "x" and cache.run("export", {"a": "1"}, {}, {}, body).cached


def test_an_incomplete_bundle_is_never_up_to_date_and_the_next_build_repairs_it(tiny_cpu_bundle, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_cpu_bundle, project)
    bundle = project / BUNDLE
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["files"]["reference/eval_crops.npy"]  # as a race used to leave it: file and entry gone
    (bundle / "reference/eval_crops.npy").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert "'reference/eval_crops.npy' is not listed in files" in one_error(run_cli(project, "verify", str(bundle)))
    result = run_cli(project, "build", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "is up to date" not in result.stderr
    assert "reference/eval_crops.npy" in verify_bundle(bundle)["files"]


# ---------------------------------------------------------------------------------------------
# The bundle check


def _tampered(tiny_cpu_bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _set(path: str, value):
    def change(manifest):
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value

    return change


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            _set("precisions.fp32.onnx", "../../../../etc/passwd"),
            "key 'precisions.fp32.onnx': path '../../../../etc/passwd' leaves the bundle folder: it contains '..'",
        ),
        (
            _set("precisions.fp16.optimized", "/etc/passwd"),
            "key 'precisions.fp16.optimized': path '/etc/passwd' leaves the bundle folder: it is absolute",
        ),
        (_set("files", {}), "key 'files': Dictionary should have at least 1 item"),
        (_set("target", {}), "key 'target.name': Field required"),
        (_set("target", "cpu"), "key 'target': Input should be a valid dictionary"),
        (_set("model.num_classes", 0), "key 'model.num_classes': Input should be greater than or equal to 1"),
        (_set("model.num_classes", "10"), "key 'model.num_classes': Input should be a valid integer"),
        (_set("labels", ["a"]), "labels has 1 entries but model.num_classes is 10"),
        (
            _set("precisions.fp32.onnx", "models/other.onnx"),
            "precisions.fp32.onnx 'models/other.onnx' is not listed in files",
        ),
        (
            lambda m: m["files"].pop("reference/fp32_logits.npy"),
            "required file 'reference/fp32_logits.npy' is not listed in files",
        ),
        (lambda m: m["precisions"].pop("fp32"), "precisions has no fp32 entry"),
        (_set("engines", [{"path": "models/model.fp32.onnx"}]), "key 'engines.0.precision': Field required"),
        (_set("surprise", 1), "unknown key 'surprise'"),
        (_set("format_version", 4), "unsupported format_version 4 (this tool reads 1, 2 and 3)"),
        (
            _set(
                "session.int8",
                {
                    "runtime": "openvino",
                    "openvino": "2026.4.1",
                    "device": "CPU",
                    "threads": 0,
                    "performance_hint": "LATENCY",
                    "inference_precision": "f32",
                    "intra_op_threads": 0,
                },
            ),
            "unknown key 'session.int8.openvino.intra_op_threads'",
        ),
        (_set("format_version", 1), "session: format_version 1 has one session object"),
        (
            lambda m: m["session"].pop("int8"),
            "session names graphs ['fp16', 'fp32', 'int8-trt', 'int8-trt-fp16'], precisions lists",
        ),
        (_set("preprocessing.std", [0, 1, 1]), "key 'preprocessing.std.0': Input should be greater than 0"),
    ],
)
def test_verify_refuses_a_manifest_outside_its_contract(tiny_cpu_bundle, tmp_path, change, expected):
    copy = _tampered(tiny_cpu_bundle, tmp_path, change)
    with pytest.raises(BundleError, match="manifest.json: ") as info:
        verify_bundle(copy)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_format_version_1_manifest_is_still_read(tiny_cpu_bundle, tmp_path):
    """Version 1 had one `session` for every graph."""

    def to_version_1(manifest):
        manifest["format_version"] = 1
        manifest["session"] = manifest["session"]["fp32"]

    assert verify_bundle(_tampered(tiny_cpu_bundle, tmp_path, to_version_1))["format_version"] == 1


@pytest.mark.parametrize("target", [{}, "cpu"])
def test_cli_verify_of_a_broken_target_is_one_line(tiny_cpu_bundle, tmp_path, target):
    copy = _tampered(tiny_cpu_bundle, tmp_path, _set("target", target))
    assert "manifest.json: key 'target" in one_error(run_cli(tmp_path, "verify", str(copy)))


def test_report_refuses_a_symlink_in_the_bundle_and_writes_nothing_through_it(tiny_cpu_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, copy)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (copy / "report/accuracy.png").unlink()
    (copy / "report/accuracy.png").symlink_to(outside)
    for command in ("report", "verify"):
        line = one_error(run_cli(tmp_path, command, str(copy)))
        assert "report/accuracy.png: a symbolic link inside" in line and "refused" in line
    assert outside.read_text() == "precious"


def test_report_plots_are_written_atomically_replacing_a_link(tmp_path):
    from pipeline.stages.report import render_report

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "latency.png").symlink_to(outside)
    result = {
        "precision": "fp32",
        "accuracy": {"top1": 1.0, "top5": 1.0, "agreement": 1.0, "cosine_mean": 1.0, "max_abs_error": 0.0},
        "latency": [
            {"batch": 1, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "mean_ms": 1.05, "throughput_ips": 1.0, "runs": 2}
        ],
        "samples_ms": {"1": [1.0, 1.1]},
    }
    report = {
        "bundle": "b",
        "target": "cpu",
        "backend": "onnxruntime",
        "model": {"arch": "x", "num_classes": 1, "checkpoint_sha256": "0" * 64},
        "results": [result],
        "created_utc": "now",
        "host": {},
        "evaluation_images": 1,
        "calibration_images": 1,
    }
    render_report(report, folder)
    assert outside.read_bytes() == b"precious"
    assert not (folder / "latency.png").is_symlink() and (folder / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_the_committed_schema_is_the_models_schema():
    from pipeline.bundle.manifest import schema_text

    assert (ROOT / "docs/manifest.schema.json").read_text() == schema_text(), (
        'docs/manifest.schema.json is stale: python -c "from pipeline.bundle.manifest import schema_text; '
        "print(schema_text(), end='')\" > docs/manifest.schema.json"
    )


def test_a_real_bundle_validates_against_the_schema_file(tiny_cpu_bundle):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "docs/manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads((tiny_cpu_bundle / BUNDLE / "manifest.json").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**json.loads((tiny_cpu_bundle / BUNDLE / "manifest.json").read_text()), "files": {}}, schema
        )


def test_bundle_format_doc_names_every_manifest_key():
    from pipeline.bundle.manifest import Manifest

    doc = (ROOT / "docs/bundle-format.md").read_text()
    for key in Manifest.model_fields:
        assert f"| `{key}` |" in doc, key


# ---------------------------------------------------------------------------------------------
# Inputs checked where they enter


def _imagefolder(project: Path, classes: list[str]) -> None:
    sub = project / "data/sub"
    for name in classes:
        shutil.copytree(project / "data/val" / name, sub / name)
    config = project / "pipeline.toml"
    config.write_text(config.read_text().replace('root = "data/val"', 'source = "imagefolder"\nroot = "data/sub"'))


def test_a_data_set_with_other_classes_than_the_checkpoint_is_refused(tiny_project):
    names = sorted(p.name for p in (tiny_project / "data/val").iterdir())
    _imagefolder(tiny_project, names[:2])
    line = one_error(run_cli(tiny_project, "build", "--no-progress"))
    assert "data/sub has 2 classes but the checkpoint" in line and "tiny.pt has 10" in line
    assert not (tiny_project / ".cache/data").exists()  # refused before decoding anything


def test_same_count_but_other_class_names_are_refused(tiny_project, tmp_path):
    from pipeline.config import load_config
    from pipeline.stages.dataset import check_classes, open_dataset

    config = load_config(tiny_project / "pipeline.toml")
    dataset = open_dataset(config)
    check_classes(config, dataset, list(dataset.classes))
    other = list(dataset.classes)
    other[3] = "c03_something_else"
    with pytest.raises(
        ValueError, match=r"class 3 is 'c03_.*' but the checkpoint .*tiny.pt calls class 3 'c03_something_else'"
    ):
        check_classes(config, dataset, other)


def _edit_checkpoint(project: Path, change) -> None:
    import torch

    data = torch.load(project / "tiny.pt", weights_only=True)
    change(data)
    torch.save(data, project / "tiny.pt")


def test_a_checkpoint_without_classes_is_refused(tiny_project):
    _edit_checkpoint(tiny_project, lambda d: d.update(classes=[], class_names=[]))
    assert "tiny.pt: the checkpoint lists no classes" in one_error(run_cli(tiny_project, "build", "--no-progress"))


@pytest.mark.parametrize("trusted", [False, True])
def test_random_bytes_are_reported_as_corrupt_not_as_untrusted(tiny_project, trusted):
    (tiny_project / "tiny.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    if trusted:
        config = tiny_project / "pipeline.toml"
        config.write_text(
            config.read_text().replace('checkpoint = "tiny.pt"', 'checkpoint = "tiny.pt"\ntrusted_checkpoint = true')
        )
    line = one_error(run_cli(tiny_project, "build", "--no-progress"))
    assert "tiny.pt: not a torch checkpoint (corrupt, truncated or another kind of file)" in line
    assert "trusted_checkpoint" not in line


def test_corrupt_checkpoints_in_process(tmp_path):
    import pickle

    from pipeline.models.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "c.pt"
    path.write_bytes(b"\x80" + bytes(range(200)))  # starts like a pickle, is not one
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"state_dict": {}, "spec": {}, "classes": ["a"]}, protocol=4))  # not by torch.save
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(path)


def test_weights_of_the_wrong_shape_are_one_line_naming_key_and_shapes(tiny_project):
    import torch

    from pipeline.config import load_config
    from pipeline.errors import ModelError
    from pipeline.stages.model_input import load_model

    _edit_checkpoint(
        tiny_project,
        lambda d: d["state_dict"].update({"fc.weight": torch.zeros(5, d["state_dict"]["fc.weight"].shape[1])}),
    )
    with pytest.raises(ModelError) as info:
        load_model(load_config(tiny_project / "pipeline.toml"))
    message = str(info.value)
    assert (
        "\n" not in message
        and "weight 'fc.weight' has shape [5, 16] in the checkpoint but [10, 16] in the model" in message
    )


@pytest.mark.parametrize(
    "factory, expected",
    [
        ("os:system", "model.factory 'os:system' failed on the spec of"),
        ("os:sep", "model.factory 'os:sep' is a str, not a function"),
        ("builtins:dict", "model.factory 'builtins:dict' returned a dict, not a torch.nn.Module"),
        ("nosuch.module:build", "model.factory 'nosuch.module:build' cannot be imported: ModuleNotFoundError"),
    ],
)
def test_a_factory_that_fails_is_one_line(tiny_project, factory, expected):
    from pipeline.config import load_config
    from pipeline.errors import ModelError
    from pipeline.stages.model_input import load_model

    config = tiny_project / "pipeline.toml"
    config.write_text(
        config.read_text().replace('checkpoint = "tiny.pt"', f'checkpoint = "tiny.pt"\nfactory = "{factory}"')
    )
    with pytest.raises(ModelError) as info:
        load_model(load_config(config))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_os_system_factory_through_the_cli_is_one_line(tiny_project):
    config = tiny_project / "pipeline.toml"
    config.write_text(
        config.read_text().replace('checkpoint = "tiny.pt"', 'checkpoint = "tiny.pt"\nfactory = "os:system"')
    )
    assert "model.factory 'os:system' failed on the spec of" in one_error(
        run_cli(tiny_project, "build", "--no-progress")
    )


def test_every_image_skipped_is_one_line_naming_the_folder(tiny_project):
    for image in (tiny_project / "data/val").glob("*/*.jpg"):
        image.write_bytes(b"not an image")
    line = one_error(run_cli(tiny_project, "build", "--no-progress"))
    assert f"{tiny_project / 'data/val'}: none of the 20 calibration images could be used (all skipped; first: " in line
    assert "not a recognised image file" in line


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def short_write(handle, array, **kwargs):
        raise OSError("3763200 requested and 2097024 written")  # what numpy says on a full disk

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(OSError) as info:
        save_array(tmp_path / "crops.npy", np.zeros(3))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "crops.npy")

    def body(workdir):
        raise OSError(errno.ENOSPC, "No space left on device")  # a write() knows no file name

    with pytest.raises(OSError) as info:
        StageCache(tmp_path / "cache").run("data", {}, {}, {}, body)
    assert info.value.filename == str(tmp_path / "cache/data")


def test_cli_says_disk_full_with_the_path(tmp_path):
    from pipeline.cli import _os_error

    line = _os_error(OSError(errno.ENOSPC, "3763200 requested and 2097024 written", "/c/data/crops.npy"))
    assert line == "/c/data/crops.npy: disk full (3763200 requested and 2097024 written); free space and run again"


# ---------------------------------------------------------------------------------------------
# Listings


def test_targets_piped_are_whole_and_json_is_available(tmp_path):
    result = run_cli(ROOT, "targets")
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for name in ("jetson-agx-orin (jetson)", "jetson-orin-nano", "fp32, fp16, int8-trt", "8.5, 8.6, 10.3, 11.4"):
        assert name in result.stdout
    listed = json.loads(run_cli(ROOT, "targets", "--json").stdout)
    by_name = {t["name"]: t for t in listed}
    assert by_name["jetson-agx-orin"]["aliases"] == ["jetson"] and by_name["cpu"]["backend"] == "onnxruntime"


def test_a_narrow_terminal_folds_cells_instead_of_cutting_them():
    from rich.console import Console

    from pipeline.cli import TARGET_COLUMNS, listing_table

    rows = [
        [
            "jetson-agx-orin (jetson)",
            "tensorrt",
            "8.7",
            "5.1 / 6.x / 7.2.2+",
            "8.5, 8.6, 10.3, 11.4",
            "2",
            "4096 MiB",
            "1/8/32",
            "fp32, fp16, int8-trt",
            "4",
        ]
    ]
    console = Console(width=60, record=True, force_terminal=True, color_system=None)
    console.print(listing_table("targets", TARGET_COLUMNS, rows))
    text = console.export_text()
    assert "…" not in text
    # Folded, not cut: every character of every header and cell is still printed somewhere.
    printed = Counter(ch for ch in text if ch.isalnum())
    expected = Counter(ch for ch in "".join(["targets", *TARGET_COLUMNS, *rows[0]]) if ch.isalnum())
    assert not expected - printed


def test_models_json():
    result = run_cli(ROOT, "models", "--input-size", "32", "--json")
    assert result.returncode == 0, result.stderr
    assert [m["name"] for m in json.loads(result.stdout)] == ["vt_resnet18", "resnet18", "vt_resnet34", "resnet34"]


# ---------------------------------------------------------------------------------------------
# Decoder limit


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width` x `height` (what a decompression bomb looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 7)) + chunk(b"IEND", b"")
    )
    return path


def test_an_image_over_the_limit_is_skipped_before_decoding_without_a_warning(tmp_path, recwarn):
    from PIL import Image

    from pipeline.data import PreprocessSpec, Sample, load_crops

    bomb = _png_claiming(tmp_path / "bomb.png", 12000, 12000)
    fine = tmp_path / "fine.png"
    Image.new("RGB", (80, 80), (1, 2, 3)).save(fine)
    before = Image.MAX_IMAGE_PIXELS
    loaded = load_crops([Sample(bomb, 0), Sample(fine, 1)], PreprocessSpec(resize=72, crop=64))
    assert len(loaded) == 1 and loaded.labels.tolist() == [1]
    assert loaded.skipped == [
        (bomb, "12000x12000 = 144,000,000 pixels, over data.max_image_pixels = 64,000,000; not decoded")
    ]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == before
    limited = load_crops([Sample(fine, 1)], PreprocessSpec(resize=72, crop=64), max_pixels=80 * 79)
    assert len(limited) == 0 and "80x80 = 6,400 pixels, over data.max_image_pixels = 6,320" in limited.skipped[0][1]


def test_the_limit_is_a_data_setting_and_skipped_images_are_counted(tiny_project):
    from pipeline.config import load_config
    from pipeline.stages.dataset import prepare_data_cached

    config_path = tiny_project / "pipeline.toml"
    assert load_config(config_path).data.max_image_pixels == 64_000_000
    victim = sorted((tiny_project / "data/val").glob("c03_*/*.jpg"))[0]
    victim.unlink()
    _png_claiming(victim, 12000, 12000)  # a .jpg name does not matter to the decoder
    config_path.write_text(
        config_path.read_text().replace("generated_per_class = 5", "generated_per_class = 5\nmax_image_pixels = 60000")
    )
    config = load_config(config_path)
    assert config.data.max_image_pixels == 60000
    split = prepare_data_cached(config, StageCache(tiny_project / ".cache"), progress=False)
    assert [(Path(p).name, why) for p, why in split.skipped] == [
        (victim.name, "12000x12000 = 144,000,000 pixels, over data.max_image_pixels = 60,000; not decoded")
    ]
    assert len(split.calib.labels) + len(split.evaluation.labels) == 49
