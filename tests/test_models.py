"""Tests of the built-in models: VT-ResNet and its parts, the spec, the registry, ONNX export."""

from __future__ import annotations

import dataclasses
import io
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.models import (
    MODEL_REGISTRY,
    FilterTokenizer,
    ModelSpec,
    Projector,
    RecurrentTokenizer,
    ResNet,
    TokenTransformer,
    VTResNet,
    build_model,
    create_model,
)
from pipeline.models.profile import ModelStats, compare_paper_models, format_table, profile_model

TINY = ModelSpec(arch="vt_resnet18", num_classes=10, width=16, tokens=8, token_channels=64, heads=4)


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and scales.

    Fresh models start with zero-scaled residual branches; randomising the norms makes every
    branch contribute, so shape, gradient and export checks cover the whole graph.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


@pytest.fixture(scope="module")
def tiny_vt() -> VTResNet:
    torch.manual_seed(0)
    model = build_model(TINY)
    assert isinstance(model, VTResNet)
    return _randomise_norms(model).eval()


# --------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize(("batch", "size"), [(1, 64), (2, 64), (5, 64), (2, 96), (5, 96), (1, 224), (2, 224)])
def test_tiny_vt_output_shape(tiny_vt: VTResNet, batch: int, size: int) -> None:
    with torch.no_grad():
        logits = tiny_vt(torch.randn(batch, 3, size, size))
    assert logits.shape == (batch, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["vt_resnet34", "resnet18", "resnet34"])
def test_other_archs_output_shape(arch: str) -> None:
    model = create_model(arch, num_classes=7, width=8, tokens=4, token_channels=32, heads=2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 96)).shape == (2, 7)


def test_vt_module_count_follows_removed_stage() -> None:
    for arch, modules in (("vt_resnet18", 2), ("vt_resnet34", 3)):
        model = create_model(arch, width=4, tokens=2, token_channels=8, heads=2)
        assert len(model.vt) == modules
        assert isinstance(model.vt[0].tokenizer, FilterTokenizer)
        assert all(isinstance(m.tokenizer, RecurrentTokenizer) for m in model.vt[1:])
        assert not hasattr(model, "layer4")


def test_vt_input_is_stage4_map(tiny_vt: VTResNet) -> None:
    with torch.no_grad():
        features = tiny_vt.forward_features(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, 4 * TINY.width, 14, 14)


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_tokens_shape(tiny_vt: VTResNet, batch: int) -> None:
    with torch.no_grad():
        tokens = tiny_vt.forward_tokens(torch.randn(batch, 3, 64, 64))
    assert tokens.shape == (batch, TINY.tokens, TINY.token_channels)


def test_logits_are_linear_head_on_mean_token(tiny_vt: VTResNet) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_vt.fc(tiny_vt.forward_tokens(x).mean(dim=1))
        torch.testing.assert_close(tiny_vt(x), expected)


def test_named_submodules_carry_paths(tiny_vt: VTResNet) -> None:
    names = dict(tiny_vt.named_modules())
    for name in ("vt.0.tokenizer", "vt.0.transformer", "vt.1.tokenizer", "vt.1.transformer", "fc"):
        assert name in names


# --------------------------------------------------------------------------------------------
# VT parts


def test_filter_tokenizer_attention_is_distribution_over_pixels() -> None:
    torch.manual_seed(1)
    tokenizer = FilterTokenizer(channels=32, tokens=6, token_channels=48).eval()
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        attention = tokenizer.attention(x)
        tokens = tokenizer(x)
    assert attention.shape == (2, 6, 35)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 6))
    assert tokens.shape == (2, 48, 6)


def test_filter_tokenizer_pools_then_projects() -> None:
    """T = A^T X followed by the C -> C_T projection (Eq. 1 and the token projection)."""
    torch.manual_seed(2)
    tokenizer = FilterTokenizer(channels=16, tokens=4, token_channels=24).eval()
    x = torch.randn(3, 16, 6, 6)
    with torch.no_grad():
        pooled = tokenizer.attention(x) @ x.reshape(3, 16, 36).transpose(1, 2)  # (N, L, C)
        expected = tokenizer.project(pooled.transpose(1, 2))
        torch.testing.assert_close(tokenizer(x), expected)


def test_recurrent_tokenizer_uses_previous_tokens() -> None:
    torch.manual_seed(3)
    tokenizer = RecurrentTokenizer(channels=32, token_channels=48, heads=4).eval()
    x = torch.randn(2, 32, 6, 6)
    prev_a, prev_b = torch.randn(2, 48, 5), torch.randn(2, 48, 5)
    with torch.no_grad():
        attention = tokenizer.attention(x, prev_a)
        out_a, out_b = tokenizer(x, prev_a), tokenizer(x, prev_b)
    assert attention.shape == (2, 4, 5, 36)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 4, 5))
    assert out_a.shape == (2, 48, 5)  # as many tokens as the previous module had
    assert (out_a - out_b).abs().max() > 1e-3


def test_vt_resnet_second_module_depends_on_first_tokens(tiny_vt: VTResNet) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = tiny_vt.forward_features(x)
        first = tiny_vt.vt[0](features)
        second = tiny_vt.vt[1](features, first)
        perturbed = tiny_vt.vt[1](features, first + torch.randn_like(first))
    assert (second - perturbed).abs().max() > 1e-3


def test_transformer_shapes_and_attention() -> None:
    torch.manual_seed(4)
    transformer = _randomise_norms(TokenTransformer(token_channels=32, heads=4)).eval()
    tokens = torch.randn(3, 32, 7)
    with torch.no_grad():
        attention = transformer.attention(tokens)
        out = transformer(tokens)
    assert attention.shape == (3, 4, 7, 7)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(3, 4, 7))
    assert out.shape == tokens.shape


def test_transformer_mixes_tokens() -> None:
    """Eq. (3): changing one token changes the others' outputs through attention."""
    torch.manual_seed(5)
    transformer = TokenTransformer(token_channels=16, heads=2).eval()
    tokens = torch.randn(1, 16, 4)
    changed = tokens.clone()
    changed[:, :, 0] += 3.0
    with torch.no_grad():
        diff = transformer(tokens) - transformer(changed)
    assert diff[:, :, 1:].abs().max() > 1e-4


def test_projector_shape_and_token_dependence() -> None:
    torch.manual_seed(6)
    projector = Projector(channels=32, token_channels=48, heads=4, groups=4).eval()
    x = torch.randn(2, 32, 5, 6)
    tokens_a, tokens_b = torch.randn(2, 48, 8), torch.randn(2, 48, 8)
    with torch.no_grad():
        out_a, out_b = projector(x, tokens_a), projector(x, tokens_b)
        attention = projector.attention(x, tokens_a)
    assert out_a.shape == x.shape
    assert attention.shape == (2, 4, 30, 8)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 4, 30))
    assert (out_a - out_b).abs().max() > 1e-3


def test_bad_head_counts_rejected() -> None:
    with pytest.raises(ValueError, match="heads"):
        TokenTransformer(token_channels=30, heads=4)
    with pytest.raises(ValueError, match="heads"):
        RecurrentTokenizer(channels=30, token_channels=32, heads=4)
    with pytest.raises(ValueError, match="heads"):
        Projector(channels=30, token_channels=32, heads=4)


# --------------------------------------------------------------------------------------------
# Training signal


@pytest.mark.parametrize("arch", ["vt_resnet18", "vt_resnet34"])
def test_backward_gives_finite_gradients_everywhere(arch: str) -> None:
    torch.manual_seed(7)
    spec = dataclasses.replace(TINY, arch=arch, width=8, token_channels=32)
    model = _randomise_norms(build_model(spec)).train()
    loss = nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_fresh_model_has_unit_scale_outputs() -> None:
    """Zero-initialised residual branches and scaled logits: a sane start for training."""
    torch.manual_seed(8)
    model = build_model(TINY).train()
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 64, 64))
        tokens = model.forward_tokens(torch.randn(4, 3, 64, 64))
    assert logits.abs().max() < 10
    assert 0.3 < tokens.std() < 3


# --------------------------------------------------------------------------------------------
# ModelSpec and registry


def test_spec_round_trip_through_json() -> None:
    data = json.loads(json.dumps(TINY.to_dict()))
    assert ModelSpec.from_dict(data) == TINY
    assert ModelSpec.from_dict({"arch": "resnet34"}) == ModelSpec(arch="resnet34")


def test_stem_is_left_out_of_imagenet_specs_and_old_dicts_read_as_imagenet() -> None:
    assert "stem" not in TINY.to_dict() and TINY.stem == "imagenet"
    cifar = dataclasses.replace(TINY, stem="cifar")
    assert cifar.to_dict()["stem"] == "cifar"
    assert ModelSpec.from_dict(json.loads(json.dumps(cifar.to_dict()))) == cifar
    assert ModelSpec.from_dict({"arch": "vt_resnet18", "stem": "imagenet"}) == ModelSpec(arch="vt_resnet18")


def test_cifar_stem_keeps_the_resolution_for_32x32_photos() -> None:
    model = build_model(dataclasses.replace(TINY, stem="cifar")).eval()
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.stem.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 4 * TINY.width, 8, 8)
        assert model(x).shape == (2, 10)
        assert model.forward_tokens(x).shape == (2, TINY.tokens, TINY.token_channels)
    plain = build_model(dataclasses.replace(TINY, arch="resnet18", stem="cifar")).eval()
    with torch.no_grad():
        assert plain.forward_features(x).shape == (2, 8 * TINY.width, 4, 4)


def test_spec_defaults_are_the_paper_configuration() -> None:
    spec = ModelSpec(arch="vt_resnet18")
    assert (spec.num_classes, spec.width, spec.tokens, spec.token_channels, spec.heads) == (1000, 64, 16, 1024, 16)


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.tokens = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"arch": "vt_resnet18", "colour": 1}, "colour"),
        ({"num_classes": 10}, "arch"),
        ({"arch": "vt_resnet50"}, "arch"),
        ({"arch": 18}, "arch"),
        ({"arch": "vt_resnet18", "tokens": "16"}, "tokens"),
        ({"arch": "vt_resnet18", "width": 16.0}, "width"),
        ({"arch": "vt_resnet18", "heads": True}, "heads"),
        ({"arch": "vt_resnet18", "num_classes": 0}, "num_classes"),
        ({"arch": "vt_resnet18", "tokens": -1}, "tokens"),
        ({"arch": "vt_resnet18", "width": 16, "heads": 5}, "heads"),
        ({"arch": "vt_resnet18", "token_channels": 100}, "token_channels"),
        ({"arch": "vt_resnet18", "stem": "tiny"}, "stem"),
        ({"arch": "vt_resnet18", "stem": 1}, "stem"),
    ],
)
def test_spec_from_dict_errors_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ModelSpec.from_dict(data)


def test_spec_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ValueError):
        ModelSpec.from_dict(["arch", "vt_resnet18"])  # type: ignore[arg-type]


def test_plain_resnet_ignores_token_fields() -> None:
    spec = dataclasses.replace(TINY, arch="resnet18", heads=5, token_channels=7)
    model = build_model(spec)
    assert isinstance(model, ResNet) and model.spec == spec


def test_registry_lists_the_four_models() -> None:
    assert set(MODEL_REGISTRY) == {"vt_resnet18", "vt_resnet34", "resnet18", "resnet34"}
    model = MODEL_REGISTRY["vt_resnet18"](num_classes=10, width=8, tokens=4, token_channels=32, heads=2)
    assert isinstance(model, VTResNet) and model.spec.num_classes == 10


def test_create_model_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="vt_resnet18") as info:
        create_model("vit_b16")
    assert "resnet34" in str(info.value) and "vit_b16" in str(info.value)


def test_create_model_bad_override_names_the_key() -> None:
    with pytest.raises(ValueError, match="depth"):
        create_model("resnet18", depth=3)
    with pytest.raises(ValueError, match="arch"):
        create_model("resnet18", arch="resnet34")


def test_build_model_needs_a_spec() -> None:
    with pytest.raises(TypeError):
        build_model({"arch": "resnet18"})  # type: ignore[arg-type]


def test_build_model_keeps_spec() -> None:
    model = build_model(TINY)
    assert model.spec == TINY
    assert ModelSpec.from_dict(model.spec.to_dict()) == TINY


# --------------------------------------------------------------------------------------------
# ONNX


def test_onnx_export_matches_torch(tiny_vt: VTResNet) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            tiny_vt.eval(),
            torch.randn(1, 3, 64, 64),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph)
    assert any(node.name.startswith("/vt.1/transformer/") for node in graph.graph.node)
    assert not {node.op_type for node in graph.graph.node} & {"Einsum", "Loop", "If"}
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        images = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = tiny_vt(images).numpy()
        (logits,) = session.run(["logits"], {"images": images.numpy()})
        assert logits.shape == (batch, 10)
        assert np.abs(logits - expected).max() < 1e-4


# --------------------------------------------------------------------------------------------
# FLOPs


def test_paper_models_vt_costs_less_than_resnet() -> None:
    stats = {s.name: s for s in compare_paper_models(224)}
    assert list(stats) == ["vt_resnet18", "resnet18", "vt_resnet34", "resnet34"]
    for depth in ("18", "34"):
        vt, resnet = stats[f"vt_resnet{depth}"], stats[f"resnet{depth}"]
        assert vt.macs < resnet.macs
        assert vt.params < resnet.params
    # The plain ResNets match the published counts, so the VT numbers are comparable.
    assert stats["resnet18"].macs == pytest.approx(1.814e9, rel=2e-3)
    assert stats["resnet34"].macs == pytest.approx(3.664e9, rel=2e-3)
    assert stats["resnet18"].params == pytest.approx(11.7e6, rel=5e-3)
    # Within 5% of the paper's VT-ResNet multiply-adds (1.569 G and 3.236 G).
    assert stats["vt_resnet18"].macs == pytest.approx(1.569e9, rel=0.05)
    assert stats["vt_resnet34"].macs == pytest.approx(3.236e9, rel=0.05)
    assert "vt_resnet34" in format_table(list(stats.values()))


def test_profile_module_matches_profile_spec() -> None:
    model = build_model(TINY)
    from_module, from_spec = profile_model(model, 112), profile_model(TINY, 112)
    assert isinstance(from_module, ModelStats)
    assert from_module == from_spec
    assert from_module.flops == 2 * from_module.macs
    assert from_module.params == sum(p.numel() for p in model.parameters())
    assert model.training  # profiling restores the mode it found
