"""A bundle is a function of its inputs: change one input it depends on (labels, an ONNX
model's external weights, the config, the model's path) and build again, and the bundle says so
or the build says why not. Also: temporary work under the cache, swept after a killed build;
`verify` refuses anything that is not a listed regular file; constants too big to fold are
refused before anything folds them. Tiny models, an FP32-only CPU target: seconds a build."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, NamedTuple

import numpy as np
import pytest

from conftest import run_cli
from tiny_project import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx.export (TorchScript)

FP32_ONLY = 'precisions = ["fp32"]'


def fp32_project(tiny_project: Path) -> Path:
    """The tiny project with an FP32-only cpu target and no torch timing: every build is quick."""
    config = tiny_project / "pipeline.toml"
    text = config.read_text().replace('precisions = ["fp32", "fp16", "int8", "int8-trt"]', FP32_ONLY, 1)
    text = text.replace("batch_sizes = [1, 2]", "batch_sizes = [1]\ntorch_baseline = false")
    config.write_text(text)
    return tiny_project


def build(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`build` with its temporary folder pointed at the project's own `tmp/`, to see what it leaves there."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT), "TMPDIR": str(project / "tmp")}
    (project / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--no-progress", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )


def bundle_json(project: Path, name: str = "tiny-cpu") -> tuple[dict, dict]:
    bundle = project / "engines" / name
    return json.loads((bundle / "manifest.json").read_text()), json.loads((bundle / "report/report.json").read_text())


def write_names(path: Path, prefix: str) -> List[str]:
    names = [f"{prefix} {i}" for i in range(10)]
    path.write_text("".join(f"{n}\n" for n in names))
    return names


class Change(NamedTuple):
    """One input changed, the build arguments after it, and what the bundle must then show."""

    what: str
    apply: Callable[[Path], List[str]]
    holds: Callable[[Path, subprocess.CompletedProcess], None]


def _labels_a(project: Path) -> List[str]:
    write_names(project / "a.txt", "alpha")
    return ["--labels", "a.txt"]


def _labels_b(project: Path) -> List[str]:
    write_names(project / "b.txt", "beta")
    return ["--labels", "b.txt"]


def _edit_b_in_place(project: Path) -> List[str]:
    write_names(project / "b.txt", "gamma")
    return ["--labels", "b.txt"]


def _calibration_method(project: Path) -> List[str]:
    config = project / "pipeline.toml"
    config.write_text(config.read_text().replace('calibration = "minmax"', 'calibration = "percentile"'))
    return ["--labels", "b.txt"]


def _same_bytes_elsewhere(project: Path) -> List[str]:
    (project / "elsewhere").mkdir()
    shutil.copyfile(project / "tiny.pt", project / "elsewhere/tiny.pt")
    return ["--model", "elsewhere/tiny.pt", "--labels", "b.txt"]


def _wrong_labels(project: Path) -> List[str]:
    (project / "short.txt").write_text("one\ntwo\n")
    return ["--model", "elsewhere/tiny.pt", "--labels", "short.txt"]


def _names_are(prefix: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def holds(project: Path, result: subprocess.CompletedProcess) -> None:
        manifest, report = bundle_json(project)
        expected = [f"{prefix} {i}" for i in range(10)]
        assert result.returncode == 0, result.stderr
        assert "nothing changed" not in result.stderr
        assert manifest["labels"] == expected and report["class_names"] == expected
        assert expected[3] in (project / "engines/tiny-cpu/report/report.md").read_text()

    return holds


def _calibration_is_percentile(project: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert bundle_json(project)[1]["calibration_method"] == "percentile"


def _only_the_command_changed(project: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "nothing changed: every stage came from the cache" in result.stderr
    manifest, _ = bundle_json(project)
    assert manifest["rebuild_command"].endswith("--model elsewhere/tiny.pt --labels b.txt")
    assert run_cli(project, "verify", "engines/tiny-cpu").returncode == 0


def _refused_and_left_alone(project: Path, result: subprocess.CompletedProcess) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "short.txt" in lines[0]
    manifest, _ = bundle_json(project)
    assert manifest["labels"][0] == "gamma 0" and "elsewhere/tiny.pt" in manifest["rebuild_command"]


CHANGES = [
    Change("labels a.txt", _labels_a, _names_are("alpha")),
    Change("labels b.txt instead", _labels_b, _names_are("beta")),
    Change("b.txt edited in place", _edit_b_in_place, _names_are("gamma")),
    Change("[precision] calibration", _calibration_method, _calibration_is_percentile),
    Change("the same checkpoint by another path", _same_bytes_elsewhere, _only_the_command_changed),
    Change("a labels file of the wrong length", _wrong_labels, _refused_and_left_alone),
]


def test_every_input_change_shows_in_the_bundle_or_is_refused(tiny_project):
    project = fp32_project(tiny_project)
    keys = []
    for change in CHANGES:
        result = build(project, *change.apply(project))
        change.holds(project, result)
        keys.append(bundle_json(project)[0]["build_key"])
    # Every change of content gave a new key; another path to the same bytes, or a refusal, did not.
    assert len(set(keys[:4])) == 4 and keys[3] == keys[4] == keys[5]
    # ONNX Runtime keeps one small session file (`.ses`) there, whatever the pipeline does.
    assert not [p.name for p in (project / "tmp").iterdir() if p.name != ".ses"], (
        "a build left files in the temporary folder"
    )
    assert not list((project / ".cache/scratch").iterdir())


def _external_onnx(folder: Path) -> Path:
    """A tiny ViT as ONNX with every weight in `vit.weights` beside it."""
    import onnx

    from test_own_models import export, tiny_vit

    path = export(tiny_vit(), folder / "vit.onnx")
    onnx.save_model(
        onnx.load(str(path)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="vit.weights",
        size_threshold=0,
    )
    return path


def _change_external_weights(path: Path) -> None:
    """Every float weight in the external data file moved by 0.1; the .onnx file stays as it is."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    weights = path.parent / "vit.weights"
    data = bytearray(weights.read_bytes())
    for tensor in onnx.load(str(path), load_external_data=False).graph.initializer:
        if uses_external_data(tensor) and tensor.data_type == onnx.TensorProto.FLOAT:
            info = ExternalDataInfo(tensor)
            values = np.frombuffer(bytes(data[info.offset : info.offset + info.length]), np.float32) + np.float32(0.1)
            data[info.offset : info.offset + info.length] = values.tobytes()
    weights.write_bytes(bytes(data))


def test_an_onnx_models_external_weights_are_part_of_what_the_bundle_is_made_from(tiny_project):
    project = fp32_project(tiny_project)
    path = _external_onnx(project)
    onnx_bytes = path.read_bytes()
    first = build(project, "--model", path.name)
    assert first.returncode == 0, first.stderr
    shipped = (project / "engines/tiny-cpu/models/model.fp32.onnx").read_bytes()
    sha = bundle_json(project)[1]["model"]["checkpoint_sha256"]

    _change_external_weights(path)
    assert path.read_bytes() == onnx_bytes
    second = build(project, "--model", path.name)
    assert second.returncode == 0 and "nothing changed" not in second.stderr, second.stderr
    assert (project / "engines/tiny-cpu/models/model.fp32.onnx").read_bytes() != shipped
    assert bundle_json(project)[1]["model"]["checkpoint_sha256"] != sha

    # The same files under another name: the stages stay cached, the bundle names the new file.
    path.rename(project / "renamed.onnx")
    third = build(project, "--model", "renamed.onnx")
    assert third.returncode == 0, third.stderr
    stage_lines = [
        line.split()
        for line in third.stderr.splitlines()
        if line.strip().split()[:1] in (["export"], ["simplify"], ["validate"])
    ]
    assert stage_lines and all(words[1] == "cached" for words in stage_lines), third.stderr
    manifest, report = bundle_json(project)
    assert manifest["model"]["spec"]["source"] == report["model"]["source"] == "renamed.onnx"
    assert "--model renamed.onnx" in manifest["rebuild_command"]
    assert any("renamed.onnx" in note for note in report["notes"])


def test_a_weights_file_outside_the_model_folder_is_refused_by_the_hash_too(tmp_path):
    import onnx

    from pipeline.errors import ModelInputError
    from pipeline.stages.onnx_import import model_files

    (tmp_path / "model").mkdir()
    path = _external_onnx(tmp_path / "model")
    assert model_files(path) == [path, tmp_path / "model/vit.weights"]
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelInputError, match=r"'\.\./secret\.bin', outside the model's folder; refused"):
        model_files(path)


def test_scratch_folders_of_killed_builds_are_swept_and_running_ones_kept(tmp_path):
    from pipeline.artifacts import StageCache

    holder = (
        "import sys, time; from pathlib import Path; from pipeline.artifacts import StageCache\n"
        "with StageCache(Path(sys.argv[1])).scratch('report') as work:\n"
        "    (work / 'report.md').write_text('x'); print(work, flush=True); time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        held = Path(process.stdout.readline().strip())
        with StageCache(tmp_path).scratch("report") as mine:  # sweeps: the running build's folder stays
            assert held.is_dir() and mine.is_dir()
        assert not mine.exists()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert held.is_dir()  # killed: nothing cleaned up after it
    with StageCache(tmp_path).scratch("report"):
        assert not held.exists()
    assert not list((tmp_path / "scratch").iterdir())


@pytest.fixture(scope="module")
def fp32_bundle(tiny_template, tmp_path_factory) -> Path:
    """An FP32-only tiny cpu bundle, built once for this file; tests copy it before changing it."""
    project = tmp_path_factory.mktemp("fp32") / "project"
    shutil.copytree(tiny_template, project)
    result = build(fp32_project(project))
    assert result.returncode == 0, result.stderr
    return project / "engines/tiny-cpu"


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_verify_refuses_a_special_file_in_the_bundle(fp32_bundle, tmp_path, monkeypatch, kind):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    assert run_cli(tmp_path, "verify", "bundle").returncode == 0
    special = bundle / "reference" / "extra"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        monkeypatch.chdir(special.parent)  # a socket's path is limited to ~100 characters
        server = socket.socket(socket.AF_UNIX)
        server.bind(special.name)
        server.close()
    result = run_cli(tmp_path, "verify", "bundle")
    assert result.returncode == 1, result.stdout
    name = {"fifo": "FIFO", "socket": "socket"}[kind]
    assert (
        result.stderr.strip()
        == f"error: {special.relative_to(tmp_path)}: a {name} inside the bundle, refused (a bundle holds only "
        "the regular files its manifest lists)"
    )


def _graph_with_a_big_constant(path: Path, elements: int) -> Path:
    """A classifier of a few hundred bytes whose output adds the sum of a ConstantOfShape of `elements` floats."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "weight"], ["scores"], name="head"),
        helper.make_node(
            "Constant", [], ["shape"], name="shape", value=numpy_helper.from_array(np.array([elements], np.int64))
        ),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="make_zeros"),
        helper.make_node("ReduceSum", ["zeros"], ["total"], name="sum", keepdims=0),
        helper.make_node("Add", ["scores", "total"], ["logits"], name="add"),
    ]
    weight = numpy_helper.from_array(np.ones((3, 10), np.float32), "weight")
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_tiny_graph_that_folds_into_gigabytes_is_refused_before_folding(tiny_project):
    path = _graph_with_a_big_constant(tiny_project / "bomb.onnx", 2_000_000_000)  # 8 GB of float32 zeros
    assert path.stat().st_size < 1000
    result = build(tiny_project, "--model", path.name)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (
        f"error: {path.resolve()}: node 'make_zeros' (ConstantOfShape) makes a constant of 7,629 MB; its constants "
        "would total 7,629 MB once folded, over [simplify] max_constant_mb = 4096 (raise it if the model "
        "really holds that much)"
    )


def test_the_limit_is_a_setting_and_the_simplify_stage_checks_it_too(tmp_path):
    from pipeline.config import Config
    from pipeline.errors import ModelInputError
    from pipeline.stages.simplify import simplify_onnx

    path = _graph_with_a_big_constant(tmp_path / "m.onnx", 1_000_000)  # 3.8 MB
    assert Config.model_validate({"simplify": {"max_constant_mb": 1}}).simplify.max_constant_mb == 1.0
    with pytest.raises(
        ModelInputError, match=r"node 'make_zeros' \(ConstantOfShape\) makes a constant of 4 MB.*max_constant_mb = 1 "
    ):
        simplify_onnx(path, tmp_path / "out.onnx", 1)
    assert not (tmp_path / "out.onnx").exists()
    simplify_onnx(path, tmp_path / "out.onnx", 16)


def test_folded_sizes_are_read_from_the_graph_without_running_it():
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.graphs.constant_size import folded_constants

    nodes = [
        helper.make_node("Constant", [], ["dims"], name="dims", value_ints=[1000, 1000]),
        helper.make_node(
            "Constant", [], ["row"], name="row", value=numpy_helper.from_array(np.ones((1, 1000), np.float32))
        ),
        helper.make_node("Expand", ["row", "dims"], ["expanded"], name="expand"),
        helper.make_node("Tile", ["row", "dims"], ["tiled"], name="tile"),
        helper.make_node("Range", ["start", "limit", "step"], ["steps"], name="range"),
        helper.make_node("Mul", ["expanded", "expanded"], ["squared"], name="square"),
        helper.make_node("Relu", ["x"], ["y"], name="not_constant"),
    ]
    scalars = [
        numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("start", 0), ("limit", 100), ("step", 3))
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        scalars,
    )
    sizes = {c.what: c.bytes for c in folded_constants(graph)}
    assert sizes["node 'expand' (Expand)"] == sizes["node 'square' (Mul)"] == 1000 * 1000 * 4
    assert sizes["node 'tile' (Tile)"] == 1000 * 1_000_000 * 4
    assert sizes["node 'range' (Range)"] == 34 * 8
    assert not any("not_constant" in what for what in sizes)


def _path_cases():
    cases = Path(__file__).resolve().parents[1] / "loader" / "tests" / "bundle_path_cases.txt"
    for line in cases.read_text().splitlines():
        if line and not line.startswith("#"):
            verdict, quoted, *reason = line.split("\t")
            yield verdict, quoted[1:-1], reason[0] if reason else None


@pytest.mark.parametrize("verdict, path, reason", list(_path_cases()))
def test_bundle_path_rule_matches_the_shared_cases(verdict, path, reason):
    """The rule of pipeline/bundle/paths.py on the cases the C++ loader's test reads too."""
    from pipeline.bundle.paths import path_problem

    problem = path_problem(path)
    assert (problem is None) if verdict == "accept" else (reason in problem)
