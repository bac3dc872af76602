"""Bad model files, labels and class names through the CLI: one line naming the file and what is
wrong, and the README's exit code (1: the model file itself cannot be read as a model, whatever
its kind; 2: a readable model, labels file or setting that does not fit). Tiny inputs only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VIT_KWARGS = {
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 10,
}


def one_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The single `error:` line of a failed command, its exit code checked, and no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def build(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(project, "build", *args, "--no-progress")


def classifier_graph(
    custom_op: bool = False, short_initializer: bool = False, weight_shape=(3, 10), weight_dtype=np.float32
):
    """images [n, 3, 64, 64] -> GlobalAveragePool -> Flatten -> MatMul -> [n, 10], optionally with
    an operator of a custom domain, a weight whose raw data is shorter than its shape says, or a
    weight of another shape or type than the MatMul takes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal(weight_shape).astype(weight_dtype), "w")
    if short_initializer:
        weight.raw_data = weight.raw_data[:40]  # 10 of the 30 floats the shape declares
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
    ]
    if custom_op:
        nodes.append(helper.make_node("Scramble", ["flat"], ["scrambled"], domain="example.custom"))
    nodes.append(helper.make_node("MatMul", ["scrambled" if custom_op else "flat", "w"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 10])],
        [weight],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("example.custom", 1)] if custom_op else [])
    return onnx.helper.make_model(graph, opset_imports=opsets)


def use_vit_factory(project: Path) -> None:
    table = ", ".join(f"{k} = {v}" for k, v in VIT_KWARGS.items())
    config = project / "pipeline.toml"
    config.write_text(
        config.read_text().replace(
            'checkpoint = "tiny.pt"\n',
            f'checkpoint = "tiny.pt"\nfactory = "pipeline.models.vit:vit"\nfactory_kwargs = {{ {table} }}\n',
        )
    )


def vit_state():
    import torch

    from pipeline.models.vit import vit

    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in vit(**VIT_KWARGS).state_dict().items()}


def model_file(project: Path, kind: str) -> Path:
    """A valid model file of `kind` in the project (a tiny ViT, or the classifier graph)."""
    import onnx
    import torch

    path = project / f"model.{kind}"
    if kind == "onnx":
        onnx.save(classifier_graph(), str(path))
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file(vit_state(), str(path))
    else:
        torch.save(vit_state(), path)
    return path


# ---------------------------------------------------------------------------------------------
# ONNX graphs that are not what they claim, or that ONNX Runtime cannot run


def test_an_onnx_with_a_custom_domain_op_is_one_line_exit_2(tiny_project):
    import onnx

    onnx.save(classifier_graph(custom_op=True), str(tiny_project / "custom.onnx"))
    line = one_error(build(tiny_project, "--model", "custom.onnx"), 2)
    assert "custom.onnx: ONNX Runtime cannot run this model" in line and "example.custom:Scramble" in line


def test_an_initializer_that_claims_more_data_than_it_holds_is_one_line_exit_1(tiny_project):
    import onnx

    onnx.save(classifier_graph(short_initializer=True), str(tiny_project / "short.onnx"))
    line = one_error(build(tiny_project, "--model", "short.onnx"), 1)
    assert (
        "short.onnx: not a valid ONNX model (ValidationError: TensorProto (tensor name: w) raw_data size (40 "
        "bytes) is too small" in line
    )


@pytest.mark.parametrize(
    "weight_shape, weight_dtype, expected",
    [
        ((4, 10), np.float32, "Incompatible dimensions for matrix multiplication"),
        ((3, 10), np.int64, "B has inconsistent type tensor(int64)"),
    ],
)
def test_a_graph_whose_shapes_or_types_do_not_agree_is_one_line_exit_1(
    tiny_project, weight_shape, weight_dtype, expected
):
    import onnx

    onnx.save(classifier_graph(weight_shape=weight_shape, weight_dtype=weight_dtype), str(tiny_project / "clash.onnx"))
    line = one_error(build(tiny_project, "--model", "clash.onnx"), 1)
    assert "clash.onnx: not a valid ONNX model (InferenceError: " in line and "MatMul" in line and expected in line


# ---------------------------------------------------------------------------------------------
# One rule for a model file that cannot be read, whatever its kind


@pytest.mark.parametrize("kind", ["onnx", "pth", "pt", "safetensors"])
def test_an_empty_model_file_is_called_empty_exit_1(tiny_project, kind):
    (tiny_project / f"empty.{kind}").write_bytes(b"")
    assert f"empty.{kind}: the model file is empty (0 bytes)" in one_error(
        build(tiny_project, "--model", f"empty.{kind}"), 1
    )


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("onnx", "not a readable ONNX model (corrupt or truncated"),
        ("pth", "not a torch checkpoint (corrupt, truncated or another kind of file)"),
        ("safetensors", "not a readable safetensors file (corrupt or truncated"),
    ],
)
def test_a_truncated_model_file_exits_1_whatever_its_kind(tiny_project, kind, expected):
    use_vit_factory(tiny_project)
    path = model_file(tiny_project, kind)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert f"model.{kind}: {expected}" in one_error(build(tiny_project, "--model", path.name), 1)


class _RunsACommand:
    """Unpickling this calls os.system (pickled as `posix.system` on Linux)."""

    def __reduce__(self):
        return (os.system, ("touch unpickled",))


def test_a_pickle_naming_posix_system_is_refused_as_unsafe_not_called_corrupt(tiny_project):
    import torch

    torch.save({"weights": _RunsACommand()}, tiny_project / "evil.pth")
    line = one_error(build(tiny_project, "--model", "evil.pth"), 1)
    assert "evil.pth: refused as unsafe: the pickle names posix.system" in line
    assert "set trusted_checkpoint = true in [model] of pipeline.toml only for a file you made" in line
    assert "corrupt" not in line
    assert not (tiny_project / "unpickled").exists()  # refused, never run


@pytest.mark.parametrize("key, dtype", [("head.weight", "int64"), ("blocks.0.norm1.bias", "bool")])
def test_integer_or_bool_weights_for_float_parameters_are_refused_naming_the_key(tiny_project, key, dtype):
    import torch

    use_vit_factory(tiny_project)
    state = vit_state()
    state[key] = state[key].to(getattr(torch, dtype))
    torch.save(state, tiny_project / "vit.pth")
    line = one_error(build(tiny_project, "--model", "vit.pth"), 1)
    assert (
        f"vit.pth: weight '{key}' holds {dtype} values in the checkpoint but the model" in line
        and "keeps it as float32" in line
    )


def test_integer_buffers_load_as_integers(tmp_path):
    import torch

    from pipeline.stages.model_input import load_weights

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = module.state_dict()
    state["1.num_batches_tracked"] = torch.tensor(7)  # int64, as BatchNorm keeps it
    load_weights(module, state, tmp_path / "bn.pth", "test")
    assert module[1].num_batches_tracked.dtype == torch.int64 and int(module[1].num_batches_tracked) == 7


# ---------------------------------------------------------------------------------------------
# Class names: plain text only, wherever they come from


def test_a_byte_order_mark_is_not_part_of_the_first_label(tiny_project):
    # Were the mark kept, "\ufeffclass 0" and "class 0" would be two names.
    names = ["class 0"] + [f"class {i}" for i in range(9)]
    (tiny_project / "labels.txt").write_bytes(("\ufeff" + "\n".join(names) + "\n").encode("utf-8"))
    line = one_error(build(tiny_project, "--labels", "labels.txt"), 2)
    assert "labels.txt: class name 'class 0' appears twice" in line


def test_labels_with_a_byte_order_mark_and_windows_line_ends_read_as_written(tmp_path):
    from pipeline.stages.model_input import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\r\n  dog \r\n\r\nbird\r\n".encode("utf-8"))
    assert read_labels(path) == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    "bad, shown",
    [
        ("\x00", r"'\x00' (U+0000)"),
        ("\x1b[31m", r"'\x1b' (U+001B)"),
        ("\r", r"'\r' (U+000D)"),
        ("\x0b", r"'\x0b' (U+000B)"),
        ("\u2028", r"'\u2028' (U+2028)"),
        ("\u202e", r"'\u202e' (U+202E)"),
    ],
)
def test_a_control_character_in_a_labels_file_names_the_file_and_the_line(tiny_project, bad, shown):
    names = [f"class {i}" for i in range(10)]
    names[2] = f"class{bad}2"
    (tiny_project / "labels.txt").write_bytes(("\n".join(names) + "\n").encode("utf-8"))
    line = one_error(build(tiny_project, "--labels", "labels.txt"), 2)
    assert "labels.txt: line 3: class name " in line and f"holds the control character {shown}" in line
    assert bad not in line  # shown escaped, never passed to the terminal


def _edit_checkpoint(project: Path, change) -> None:
    import torch

    data = torch.load(project / "tiny.pt", weights_only=True)
    change(data)
    torch.save(data, project / "tiny.pt")


@pytest.mark.parametrize("key", ["classes", "class_names"])
@pytest.mark.parametrize(
    "bad, shown", [("\r", r"'\r' (U+000D)"), ("\x1b", r"'\x1b' (U+001B)"), ("\x00", r"'\x00' (U+0000)")]
)
def test_a_control_character_in_a_checkpoints_class_name_is_refused(tiny_project, key, bad, shown):
    def change(data):
        data[key] = [name + (bad if index == 4 else "") for index, name in enumerate(data[key])]

    _edit_checkpoint(tiny_project, change)
    line = one_error(build(tiny_project), 1)
    assert f"tiny.pt: '{key}' entry 4 " in line and f"holds the control character {shown}" in line


def test_a_control_character_in_a_class_folder_name_is_refused(tiny_project):
    import shutil

    config = tiny_project / "pipeline.toml"
    config.write_text(config.read_text().replace('root = "data/val"', 'source = "imagefolder"\nroot = "data/val"'))
    folder = sorted((tiny_project / "data/val").iterdir())[0]
    shutil.move(folder, folder.with_name(folder.name + "\x1b[2J"))
    line = one_error(build(tiny_project), 1)
    assert "data/val: class folder " in line and r"holds the control character '\x1b' (U+001B) in its name" in line
