"""A user's own model in: ONNX files, plain state_dicts and safetensors built by a factory with
keyword arguments, labels files; the transformer recipe (what is quantized, LayerNorm in FP32
in FP16 graphs, decomposed for TensorRT 8.5). Tiny ViTs with random weights: shapes, paths and
messages only, never an answer of an untrained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # torch.onnx.export (TorchScript), as users call it

VIT_KWARGS = {
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "num_classes": 10,
}
# The names timm's VisionTransformer gives a depth-1 DeiT's parameters (timm 1.0: deit_tiny_patch16_224
# has these for each of its 12 blocks); a state_dict saved from timm loads by these names.
TIMM_DEIT_KEYS = {
    "cls_token",
    "pos_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc1.bias",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
}


def tiny_vit(**overrides):
    import torch

    from pipeline.models.vit import vit

    torch.manual_seed(0)
    return vit(**{**VIT_KWARGS, **overrides}).eval()


def use_vit_factory(project: Path, kwargs: dict = VIT_KWARGS, extra: str = "") -> None:
    """[model] of the tiny project pointed at the ViT factory with `kwargs`."""
    table = ", ".join(f"{k} = {json.dumps(v)}" for k, v in kwargs.items())
    text = (project / "pipeline.toml").read_text()
    text = text.replace(
        'checkpoint = "tiny.pt"\n',
        f'checkpoint = "tiny.pt"\nfactory = "pipeline.models.vit:vit"\nfactory_kwargs = {{ {table} }}\n{extra}',
    )
    (project / "pipeline.toml").write_text(text)


def write_labels(project: Path, count: int = 10) -> Path:
    path = project / "labels.txt"
    path.write_text("".join(f"class {i}\n" for i in range(count)))
    return path


def export(module, path: Path, dynamic: bool = True, names=("input", "output")) -> Path:
    import torch

    axes = {names[0]: {0: "n"}, names[1]: {0: "n"}} if dynamic else None
    torch.onnx.export(
        module,
        (torch.zeros(1, 3, 64, 64),),
        str(path),
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=17,
        dynamo=False,
        dynamic_axes=axes,
    )
    return path


def manifest(project: Path, bundle: str) -> dict:
    return json.loads((project / "engines" / bundle / "manifest.json").read_text())


def test_the_vit_has_timms_parameter_names_and_shapes():
    module = tiny_vit(depth=1)
    state = module.state_dict()
    assert set(state) == TIMM_DEIT_KEYS
    assert tuple(state["pos_embed"].shape) == (1, 1 + (64 // 16) ** 2, 32)  # class token + patches
    assert tuple(state["blocks.0.attn.qkv.weight"].shape) == (96, 32)  # q, k, v stacked, as timm does


def test_a_plain_state_dict_and_labels_build_for_cpu(tiny_project):
    import torch

    torch.save(tiny_vit().state_dict(), tiny_project / "vit.pth")
    use_vit_factory(tiny_project)
    labels = write_labels(tiny_project)
    result = run_cli(tiny_project, "build", "--model", "vit.pth", "--labels", labels.name, "--no-progress")
    assert result.returncode == 0, result.stderr
    found = manifest(tiny_project, "tiny-cpu")
    assert found["labels"] == [f"class {i}" for i in range(10)]
    assert found["model"]["arch"] == "vit" and found["model"]["spec"]["embed_dim"] == 32
    assert "--model vit.pth --labels labels.txt" in found["rebuild_command"]
    report = json.loads((tiny_project / "engines/tiny-cpu/report/report.json").read_text())
    # The transformer recipe: only the matrix products with weights read INT8; LayerNorm, GELU,
    # Softmax and the attention MatMuls between activations stay float.
    for flavour in ("int8", "int8-trt"):
        ops = report["precision_details"][flavour]["ops"]
        assert set(ops["int8"]) <= {"Conv", "Gemm", "MatMul"} and "Gemm" in ops["int8"], flavour
        assert {"LayerNormalization", "Erf", "Softmax", "MatMul"} <= set(ops["float"]), flavour
    # The quantization-aware fine-tune's torch twin computes what ONNX Runtime does on ViT graphs.
    from pipeline.backends.onnxruntime import onnx_logits
    from pipeline.graphs.twin import load_twin

    models = tiny_project / "engines/tiny-cpu/models"
    images = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    for graph in ("fp32", "int8-trt"):
        with torch.no_grad():
            twin = load_twin(models / f"model.{graph}.onnx", models / "model.fp32.onnx")(
                torch.from_numpy(images)
            ).numpy()
        expected = onnx_logits(models / f"model.{graph}.onnx", images, qdq_fusion=False)
        assert np.max(np.abs(twin - expected)) < 1e-4, graph


@pytest.mark.parametrize("wrap", ["model", "state_dict", "ddp"])
def test_wrapped_state_dicts_and_safetensors_load(tiny_project, wrap):
    import torch
    from safetensors.torch import save_file

    from pipeline.config import load_config
    from pipeline.stages.model_input import load_model

    state = tiny_vit().state_dict()
    saved = {"ddp": {f"module.{k}": v for k, v in state.items()}}.get(wrap) or {wrap: state, "epoch": 7}
    torch.save(saved, tiny_project / "vit.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tiny_project / "vit.safetensors"))
    use_vit_factory(tiny_project)
    config = load_config(tiny_project / "pipeline.toml")
    for name, kind in (("vit.pt", "state_dict"), ("vit.safetensors", "safetensors")):
        config = config.model_copy(update={"model": config.model.model_copy(update={"checkpoint": Path(name)})})
        model = load_model(config)
        assert model.kind == kind and model.classes_from == "dataset" and len(model.classes) == 10
        for key, value in model.module.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_an_onnx_file_is_imported_with_its_names_and_no_torch_baseline(tiny_project):
    path = export(tiny_vit(), tiny_project / "vit.onnx", names=("pixel_values", "scores"))
    result = run_cli(tiny_project, "build", "--model", str(path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "imported ONNX" in result.stderr and "renamed to 'images' and 'logits'" in result.stderr
    bundle = tiny_project / "engines/tiny-cpu"  # [model] name is set in the tiny config
    found = manifest(tiny_project, "tiny-cpu")
    assert found["model"]["arch"] == "onnx" and found["input"]["name"] == "images"
    report = json.loads((bundle / "report/report.json").read_text())
    assert "fp32-torch" not in {r["precision"] for r in report["results"]}
    assert any("imported from ONNX" in note for note in report["notes"])
    assert any("image set's class folders" in note for note in report["notes"])


def test_a_model_given_on_the_command_line_names_the_bundle_after_its_file(tiny_project):
    path = export(tiny_vit(), tiny_project / "my model.onnx")
    text = (tiny_project / "pipeline.toml").read_text().replace('name = "tiny"\n', "")
    (tiny_project / "pipeline.toml").write_text(text)
    result = run_cli(tiny_project, "build", "--model", str(path), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (tiny_project / "engines/my_model-cpu/manifest.json").is_file()


def test_a_fixed_batch_is_made_dynamic_when_the_graph_allows_it(tmp_path):
    """A CNN exported at batch 1 keeps the batch only in its I/O and a Reshape target."""
    import torch

    from pipeline.stages.onnx_import import normalise_onnx, read_io

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4 * 16 * 16, 5)

        def forward(self, x):
            return self.fc(self.conv(x).reshape(1, -1))  # the batch written into the graph

    torch.manual_seed(0)
    fixed = export(Net().eval(), tmp_path / "fixed.onnx", dynamic=False)
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    notes, diff = normalise_onnx(fixed, tmp_path / "out.onnx", images)
    assert "fixed batch 1 made dynamic" in notes and diff < 1e-5
    import onnx

    io = read_io(onnx.load(str(tmp_path / "out.onnx")), tmp_path / "out.onnx")
    assert (io.input_name, io.output_name, io.batch, io.classes) == ("images", "logits", "batch", 5)


def test_an_nhwc_graph_gets_a_transpose_in_front(tmp_path):
    import torch

    from pipeline.stages.onnx_import import normalise_onnx

    class Nhwc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_vit()

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    model = Nhwc().eval()
    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 64, 64, 3),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    images = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    notes, diff = normalise_onnx(path, tmp_path / "out.onnx", images)
    assert any("NHWC" in n for n in notes) and diff < 1e-4
    with torch.no_grad():
        expected = model(torch.from_numpy(images).permute(0, 2, 3, 1)).numpy()
    from pipeline.backends.onnxruntime import onnx_logits

    assert np.allclose(onnx_logits(tmp_path / "out.onnx", images), expected, atol=1e-4)


def _bad(project: Path, *args: str) -> str:
    result = run_cli(project, "build", *args, "--no-progress")
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_bad_inputs_are_one_line_and_exit_2(tiny_project):
    import torch

    torch.save(tiny_vit().state_dict(), tiny_project / "vit.pth")
    write_labels(tiny_project, 9)
    use_vit_factory(tiny_project)
    assert "labels.txt has 9 class names but the model vit.pth has 10 outputs" in _bad(
        tiny_project, "--model", "vit.pth", "--labels", "labels.txt"
    )
    fixed = export(tiny_vit(), tiny_project / "fixed.onnx", dynamic=False)
    assert "the batch size 1 is fixed inside the graph" in _bad(tiny_project, "--model", fixed.name)
    (tiny_project / "pipeline.toml").write_text(
        (tiny_project / "pipeline.toml").read_text().replace("num_classes = 10", "depthh = 3")
    )
    assert "unexpected keyword argument 'depthh'" in _bad(tiny_project, "--model", "vit.pth")


def test_weights_only_without_a_factory_and_a_non_classifier_onnx_are_refused(tiny_project):
    import torch

    torch.save(tiny_vit().state_dict(), tiny_project / "vit.pth")
    assert "holds weights only (no vt-edge spec): set [model] factory" in _bad(tiny_project, "--model", "vit.pth")
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    path = export(features, tiny_project / "features.onnx")
    assert "not a classifier: output 'output' has shape" in _bad(tiny_project, "--model", path.name)
    use_vit_factory(tiny_project, {**VIT_KWARGS, "pretrained": True})
    assert "pretrained = true would download weights" in _bad(tiny_project, "--model", "vit.pth")


def test_a_timm_factory_without_timm_names_the_extra(tiny_project):
    pytest.importorskip("torch")
    try:
        import timm  # noqa: F401

        pytest.skip("timm is installed here")
    except ImportError:
        pass
    import torch

    torch.save(tiny_vit().state_dict(), tiny_project / "vit.pth")
    text = (tiny_project / "pipeline.toml").read_text()
    text = text.replace(
        'checkpoint = "tiny.pt"\n',
        'checkpoint = "vit.pth"\nfactory = "timm:create_model"\n'
        'factory_kwargs = { model_name = "deit_tiny_patch16_224", num_classes = 10 }\n',
    )
    (tiny_project / "pipeline.toml").write_text(text)
    assert "cannot be imported: ModuleNotFoundError: No module named 'timm' (pip install -e '.[timm]')" in _bad(
        tiny_project
    )


def _layernorm_graph(path: Path, opset: int = 17) -> Path:
    """x -> LayerNorm -> MatMul: the shape of a transformer's pre-norm input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "bias"),
        numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["normed"], name="ln", axis=-1, epsilon=1e-6),
        helper.make_node("MatMul", ["normed", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


@pytest.mark.parametrize("opset", [17, 18])
def test_decomposed_layernorm_computes_the_same(tmp_path, opset):
    import onnx

    from pipeline.backends.onnxruntime import cpu_session
    from pipeline.graphs.layernorm import decompose_layernorm, layernorm_count, needs_decomposed_layernorm

    assert needs_decomposed_layernorm(("8.5", "10.3")) and not needs_decomposed_layernorm(("8.6", "10.3", "11.4"))
    fused = _layernorm_graph(tmp_path / "fused.onnx", opset)
    model = onnx.load(str(fused))
    assert decompose_layernorm(model) == 1
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp_path / "decomposed.onnx"))
    assert layernorm_count(tmp_path / "decomposed.onnx") == 0
    x = {"x": (np.random.default_rng(1).standard_normal((3, 5, 16)) * 50 + 7).astype(np.float32)}
    before = cpu_session(fused).run(None, x)[0]
    after = cpu_session(tmp_path / "decomposed.onnx").run(None, x)[0]
    assert np.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("decomposed", [False, True])
def test_fp16_graphs_keep_layernorm_in_fp32_where_fp16_would_overflow(tmp_path, decomposed):
    """Activations of ~1000: their squares (1e6) overflow FP16, so LayerNorm must not run in it."""
    import onnx

    from pipeline.backends.onnxruntime import cpu_session
    from pipeline.graphs.fp16 import convert_fp16
    from pipeline.graphs.layernorm import decompose_layernorm

    source = _layernorm_graph(tmp_path / "fused.onnx")
    if decomposed:
        model = onnx.load(str(source))
        decompose_layernorm(model)
        onnx.save(model, str(source))
    convert_fp16(source, tmp_path / "fp16.onnx")
    x = {"x": (np.random.default_rng(2).standard_normal((2, 5, 16)) * 1000).astype(np.float32)}
    reference = cpu_session(source).run(None, x)[0]
    produced = cpu_session(tmp_path / "fp16.onnx").run(None, x)[0]
    assert np.isfinite(produced).all()
    assert np.max(np.abs(produced - reference)) < 0.05 * np.max(np.abs(reference))


@pytest.mark.parametrize("kind", ["state_dict", "safetensors", "onnx"])
def test_a_jetson_bundle_of_a_vit_decomposes_layernorm_for_tensorrt_8_5(tiny_project, kind):
    import onnx
    import torch
    from safetensors.torch import save_file

    state = tiny_vit().state_dict()
    model = {"state_dict": "vit.pth", "safetensors": "vit.safetensors", "onnx": "vit.onnx"}[kind]
    torch.save(state, tiny_project / "vit.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tiny_project / "vit.safetensors"))
    export(tiny_vit(), tiny_project / "vit.onnx")
    use_vit_factory(tiny_project)
    result = run_cli(tiny_project, "build", "--model", model, "--target", "jetson", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "finish on the device with: python -m pipeline build --target jetson-agx-orin" in result.stderr
    assert "LayerNorm decomposed (TensorRT 8.5 has no LayerNormalization)" in result.stderr
    models = tiny_project / "engines/tiny-jetson-agx-orin/models"
    for name in ("fp32", "fp16", "int8-trt", "int8-trt-fp16"):
        ops = [n.op_type for n in onnx.load(str(models / f"model.{name}.onnx")).graph.node]
        assert "LayerNormalization" not in ops and ops.count("Sqrt") == 5, name  # 2 blocks x 2 + the final norm
