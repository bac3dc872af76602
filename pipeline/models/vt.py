"""VT-ResNet: ResNet-18/34 whose last stage is replaced by Visual Transformer modules.

Reference: B. Wu et al., "Visual Transformers: Token-based Image Representation and
Processing for Computer Vision", 2020 (arXiv:2006.03677). Equation numbers below refer to
Section 3 of that paper:

    (1) filter-based tokenizer   T = SOFTMAX_HW(X W_A)^T X
    (2) recurrent tokenizer      W_R = T_in W_{T->R};  T = SOFTMAX_HW(X W_R)^T X
    (3) transformer              T'_out = T_in + SOFTMAX_L((T_in K)(T_in Q)^T) T_in
    (4)                          T_out = T'_out + sigma(T'_out F_1) F_2
    (5) projector                X_out = X_in + SOFTMAX_L((X_in W_Q)(T W_K)^T) T

Layout. Feature maps are (N, C, H, W). Tokens are kept channels-first, (N, C_T, L), the
layout of a one-dimensional feature map: every token-wise linear map is then a 1x1
convolution, which ONNX exports as a Conv node that ONNX Runtime and TensorRT fuse with the
BatchNorm after it and quantize with per-output-channel weight scales. `VTResNet.forward_tokens`
returns the conventional (N, L, C_T).

Export. Only matmul, softmax, 1x1 convolutions, BatchNorm, ReLU, transposes and reshapes
whose channel dimensions are constants (the batch comes from the input's shape, the pixel or
token count is -1), so the graph exports with the TorchScript exporter at opset 17 with a
dynamic batch and carries no data-dependent control flow. Submodules are named
(`vt.0.tokenizer`, `vt.1.transformer`, ...) so ONNX node names carry their module path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import ModelError

__all__ = [
    "ARCH_STAGE_BLOCKS",
    "MODEL_REGISTRY",
    "BasicBlock",
    "FilterTokenizer",
    "STEMS",
    "ModelSpec",
    "Projector",
    "RecurrentTokenizer",
    "ResNet",
    "TokenTransformer",
    "VTModule",
    "VTResNet",
    "build_model",
    "create_model",
    "resnet18",
    "resnet34",
    "vt_resnet18",
    "vt_resnet34",
]

# Residual blocks per stage (stages 2..5 of the paper's numbering, layer1..layer4 here).
ARCH_STAGE_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "vt_resnet18": (2, 2, 2, 2),
    "vt_resnet34": (3, 4, 6, 3),
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}

# Stage 1 ("stem") variants. "imagenet": 7x7/2 convolution and 3x3/2 max pool (output stride
# 4, the paper's). "cifar": one 3x3/1 convolution and no pool (output stride 1), for 32x32
# photos, where an output stride of 4 would leave the VT modules a 2x2 map.
STEMS: tuple[str, ...] = ("imagenet", "cifar")


# --------------------------------------------------------------------------------------------
# Model specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model; JSON-able through `to_dict` / `from_dict`.

    arch:           one of `vt_resnet18`, `vt_resnet34`, `resnet18`, `resnet34`.
    num_classes:    size of the classifier output.
    width:          channels of the stem and stage 1; stages double it, so the VT input has
                    4 * width channels (paper: 64, i.e. 256 channels at 14x14 for 224 input).
    tokens:         number of visual tokens L (paper: 16).
    token_channels: token channels C_T (paper: 1024).
    heads:          attention heads of the transformer and the recurrent tokenizer (paper: 16).
    in_channels:    image channels.
    stem:           stage 1, one of `STEMS`: "imagenet" (7x7/2 conv + 3x3/2 max pool, the
                    default) or "cifar" (3x3/1 conv, no pool: the VT input is then at stride
                    4, 8x8 for a 32x32 photo). `to_dict` leaves the default out, so specs
                    written before the key existed and specs of "imagenet" models are the
                    same dict, and a dict without the key reads as "imagenet".

    `tokens`, `token_channels` and `heads` only shape the VT modules; plain ResNets ignore
    them (they are still type-checked), so one spec can be switched between the two families.
    """

    arch: str
    num_classes: int = 1000
    width: int = 64
    tokens: int = 16
    token_channels: int = 1024
    heads: int = 16
    in_channels: int = 3
    stem: str = "imagenet"

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCH_STAGE_BLOCKS:
            raise ModelError(f"arch: {self.arch!r} is not one of {sorted(ARCH_STAGE_BLOCKS)}")
        if not isinstance(self.stem, str) or self.stem not in STEMS:
            raise ModelError(f"stem: {self.stem!r} is not one of {list(STEMS)}")
        for field in dataclasses.fields(self):
            if field.name in ("arch", "stem"):
                continue
            value = getattr(self, field.name)
            # bool is an int subclass; True as a channel count is a mistake, not a 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ModelError(f"{field.name}: expected an int, got {type(value).__name__} {value!r}")
            if value < 1:
                raise ModelError(f"{field.name}: must be >= 1, got {value}")
        if self.is_vt:
            self._check_vt_divisibility()

    def _check_vt_divisibility(self) -> None:
        feature_channels = 4 * self.width
        if feature_channels % self.heads:
            raise ModelError(f"heads: {self.heads} must divide the VT input channels 4 * width = {feature_channels}")
        if self.token_channels % (2 * self.heads):
            raise ModelError(
                f"token_channels: {self.token_channels} must be divisible by 2 * heads = {2 * self.heads} "
                "(keys and queries have C_T / 2 channels split over the heads)"
            )

    @property
    def is_vt(self) -> bool:
        return self.arch.startswith("vt_")

    @property
    def stage_blocks(self) -> tuple[int, int, int, int]:
        return ARCH_STAGE_BLOCKS[self.arch]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["stem"] == "imagenet":  # the default: keep the dict as it was before `stem`
            del data["stem"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec; ValueError names the offending key (unknown, missing, mistyped, bad)."""
        if not isinstance(data, Mapping):
            raise ModelError(f"ModelSpec.from_dict expects a mapping, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise ModelError(f"{key!r}: unknown ModelSpec key (known: {', '.join(known)})")
        if "arch" not in data:
            raise ModelError("'arch': missing; it is required")
        return cls(**dict(data))


# --------------------------------------------------------------------------------------------
# ResNet trunk (BasicBlock), shared by ResNet and VT-ResNet
# --------------------------------------------------------------------------------------------


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


def _make_stem(in_channels: int, width: int, kind: str = "imagenet") -> nn.Sequential:
    """Stage 1. "imagenet": 7x7/2 convolution and 3x3/2 max pool, output stride 4.
    "cifar": 3x3/1 convolution, output stride 1 (small photos keep their resolution)."""
    if kind == "cifar":
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def _make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_trunk(module: nn.Module) -> None:
    """He init for convolutions; the last BN of every residual branch starts at zero.

    Zero-initialising the residual branch makes each block start as an identity, which lets a
    from-scratch model train quickly and stably (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"); it changes nothing about the architecture.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def _make_trunk(spec: ModelSpec) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
    """Stem and stages 2..4 (layer1..layer3): 4 * width channels at output stride 16
    ("imagenet" stem) or 4 ("cifar" stem)."""
    w, blocks = spec.width, spec.stage_blocks
    return (
        _make_stem(spec.in_channels, w, spec.stem),
        _make_stage(w, w, blocks[0], stride=1),
        _make_stage(w, 2 * w, blocks[1], stride=2),
        _make_stage(2 * w, 4 * w, blocks[2], stride=2),
    )


class ResNet(nn.Module):
    """Plain ResNet-18/34 (BasicBlock) for comparison: trunk, layer4, global pool, linear head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.is_vt:
            raise ModelError(f"arch: ResNet cannot build {spec.arch!r}; use VTResNet")
        self.spec = spec
        w = spec.width
        self.stem, self.layer1, self.layer2, self.layer3 = _make_trunk(spec)
        self.layer4 = _make_stage(4 * w, 8 * w, spec.stage_blocks[3], stride=2)
        self.fc = nn.Linear(8 * w, spec.num_classes)
        _init_trunk(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stage-5 feature map (N, 8 * width, H/32, W/32); H/8, W/8 with the "cifar" stem."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.layer4(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Visual Transformer components
# --------------------------------------------------------------------------------------------


def _pixels(x: Tensor, channels: int) -> Tensor:
    """(N, C, H, W) -> (N, C, HW); the batch comes from the shape, C is a known constant."""
    return x.reshape(x.shape[0], channels, -1)


def _pool_tokens(pixels: Tensor, attention: Tensor) -> Tensor:
    """T = A^T X, computed channels-first as X^T A: pixels (..., c, HW), A^T (..., L, HW) -> (..., c, L)."""
    return torch.matmul(pixels, attention.transpose(-1, -2))


class _TokenProjection(nn.Module):
    """C -> C_T projection of pooled tokens, then BatchNorm over token channels.

    The paper projects the feature map to C_T channels pixel by pixel before pooling (a 1x1
    convolution, grouped to save FLOPs). Because the rows of the attention sum to one,
    A^T (X W + 1 b^T) = (A^T X) W + 1 b^T: projecting the L pooled tokens instead is the same
    linear map at L / HW of the cost (16 tokens instead of 196 pixels at 224 input), so it can
    stay dense (ungrouped). The BatchNorm gives the transformer unit-scale tokens whatever the
    scale of the convolutional features; at inference it folds into the 1x1 convolution.
    """

    def __init__(self, channels: int, token_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, token_channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(token_channels)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.bn(self.conv(tokens))


class FilterTokenizer(nn.Module):
    """Filter-based tokenizer, Eq. (1): T = SOFTMAX_HW(X W_A)^T X, then T W_V (C -> C_T).

    X: (N, C, H, W) feature map, W_A: C x L (a 1x1 convolution with L outputs), softmax over
    the HW pixels so that every token is a convex combination of pixels. Logits are scaled by
    1 / sqrt(C), as in the paper's code, to keep the softmax away from saturation (which also
    keeps INT8 calibration ranges sane). Output tokens (N, C_T, L).
    """

    def __init__(self, channels: int, tokens: int, token_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.tokens = tokens
        self.attn_logits = nn.Conv2d(channels, tokens, 1)  # W_A
        self.project = _TokenProjection(channels, token_channels)  # W_V
        self.scale = 1.0 / math.sqrt(channels)
        # With the 1/sqrt(C) scale, weights of standard deviation s give logits of about s times
        # the feature RMS. The default init (s ~ 1/sqrt(3C)) would make every token the plain
        # mean of the image, all L tokens alike, and W_A would have to learn its way out of
        # that symmetry; s = 2 starts from distinct soft groupings (logit std ~1.4 on
        # post-ReLU stage-4 features of RMS ~0.7).
        nn.init.normal_(self.attn_logits.weight, std=2.0)
        nn.init.zeros_(self.attn_logits.bias)

    def attention(self, x: Tensor) -> Tensor:
        """A^T: (N, L, HW), each row a distribution over the pixels."""
        logits = self.attn_logits(x).reshape(x.shape[0], self.tokens, -1) * self.scale
        return torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(_pool_tokens(_pixels(x, self.channels), self.attention(x)))


class RecurrentTokenizer(nn.Module):
    """Recurrent tokenizer, Eq. (2): W_R = T_in W_{T->R}; T = SOFTMAX_HW(X W_R)^T X, then T W_V.

    The pixel-grouping weights W_R (L x C) are computed per image from the previous module's
    tokens T_in (N, C_T, L), so which image regions the new tokens describe depends on what
    the previous tokens found. With `heads` > 1 the C channels are split into heads that each
    attend over the pixels on their own (as in the paper's code); W_{T->R} is unchanged, only
    the dot product X W_R is summed per head. Logits are scaled by 1 / sqrt(C / heads).
    Output tokens (N, C_T, L).
    """

    def __init__(self, channels: int, token_channels: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ModelError(f"heads: {heads} must divide channels {channels}")
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.token_to_weights = nn.Conv1d(token_channels, channels, 1)  # W_{T->R}
        self.project = _TokenProjection(channels, token_channels)  # W_V
        self.scale = 1.0 / math.sqrt(self.head_channels)

    def attention(self, x: Tensor, prev_tokens: Tensor) -> Tensor:
        """A^T per head: (N, heads, L, HW), each row a distribution over the pixels."""
        n, h, c = x.shape[0], self.heads, self.head_channels
        weights = self.token_to_weights(prev_tokens).reshape(n, h, c, -1)  # W_R^T: (N, h, c, L)
        logits = torch.matmul(weights.transpose(2, 3), x.reshape(n, h, c, -1)) * self.scale
        return torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor, prev_tokens: Tensor) -> Tensor:
        n = x.shape[0]
        attention = self.attention(x, prev_tokens)
        pooled = _pool_tokens(x.reshape(n, self.heads, self.head_channels, -1), attention)
        return self.project(pooled.reshape(n, self.channels, -1))


class TokenTransformer(nn.Module):
    """Transformer over tokens, Eqs. (3)-(4), with multi-head attention.

    T' = T + SOFTMAX_L((T K)(T Q)^T / sqrt(d)) T, per head;  T_out = T' + relu(T' F_1) F_2.

    K, Q: C_T -> C_T / 2 (the paper's sizes), split into `heads` heads of d = C_T / (2 heads);
    the values are the tokens themselves (Eq. 3 has no value projection), split into heads of
    C_T / heads channels. `groups` > 1 makes K and Q grouped 1x1 convolutions.

    Normalisation: BatchNorm after F_1 and after F_2 (the paper's code uses BatchNorm in its
    VT modules). Unlike LayerNorm, an inference-time BatchNorm is a per-channel affine map that
    folds into the preceding 1x1 convolution, so the exported graph keeps no normalisation op
    for INT8 to handle, and it needs no LayerNormalization support from older TensorRT parsers.
    The BatchNorm after F_2 starts with zero scale, so the feed-forward branch starts as an
    identity, like the residual branches of the trunk.
    """

    def __init__(self, token_channels: int, heads: int = 1, groups: int = 1) -> None:
        super().__init__()
        if token_channels % (2 * heads):
            raise ModelError(f"heads: 2 * {heads} must divide token_channels {token_channels}")
        self.channels = token_channels
        self.heads = heads
        self.key_channels = token_channels // (2 * heads)
        self.value_channels = token_channels // heads
        self.scale = 1.0 / math.sqrt(self.key_channels)
        self.key = nn.Conv1d(token_channels, token_channels // 2, 1, groups=groups)  # K
        self.query = nn.Conv1d(token_channels, token_channels // 2, 1, groups=groups)  # Q
        self.ffn = nn.Sequential(
            nn.Conv1d(token_channels, token_channels, 1, bias=False),  # F_1
            nn.BatchNorm1d(token_channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(token_channels, token_channels, 1, bias=False),  # F_2
            nn.BatchNorm1d(token_channels),
        )
        nn.init.zeros_(self.ffn[-1].weight)

    def attention(self, tokens: Tensor) -> Tensor:
        """SOFTMAX_L((T K)(T Q)^T / sqrt(d)): (N, heads, L, L), rows sum to one."""
        n, h, d = tokens.shape[0], self.heads, self.key_channels
        keys = self.key(tokens).reshape(n, h, d, -1)
        queries = self.query(tokens).reshape(n, h, d, -1)
        return torch.softmax(torch.matmul(keys.transpose(2, 3), queries) * self.scale, dim=-1)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[0]
        values = tokens.reshape(n, self.heads, self.value_channels, -1)
        mixed = torch.matmul(values, self.attention(tokens).transpose(2, 3))  # (N, h, C_T/h, L)
        tokens = tokens + mixed.reshape(n, self.channels, -1)
        return tokens + self.ffn(tokens)


class Projector(nn.Module):
    """Projector, Eq. (5): X_out = X + SOFTMAX_L((X W_Q)(T W_K)^T / sqrt(d)) (T W_V).

    Fuses tokens (N, C_T, L) back into the feature map X (N, C, H, W), for dense-prediction
    heads such as VT-FPN; the classifier does not need it. W_Q (C -> C) is a per-pixel 1x1
    convolution grouped into `groups` groups, as the paper does to save FLOPs; W_K, W_V
    (C_T -> C) act on the L tokens only. Each of the `heads` heads lets every pixel attend over
    the L tokens with C / heads channels (d = C / heads).
    """

    def __init__(self, channels: int, token_channels: int, heads: int = 1, groups: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ModelError(f"heads: {heads} must divide channels {channels}")
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.scale = 1.0 / math.sqrt(self.head_channels)
        self.query = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)  # W_Q
        self.key = nn.Conv1d(token_channels, channels, 1)  # W_K
        self.value = nn.Conv1d(token_channels, channels, 1)  # W_V: tokens back to C channels

    def attention(self, x: Tensor, tokens: Tensor) -> Tensor:
        """(N, heads, HW, L), each pixel's row a distribution over the tokens."""
        n, h, c = x.shape[0], self.heads, self.head_channels
        queries = self.query(x).reshape(n, h, c, -1)
        keys = self.key(tokens).reshape(n, h, c, -1)
        return torch.softmax(torch.matmul(queries.transpose(2, 3), keys) * self.scale, dim=-1)

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        n, h, c = x.shape[0], self.heads, self.head_channels
        values = self.value(tokens).reshape(n, h, c, -1)  # (N, h, c, L)
        update = torch.matmul(values, self.attention(x, tokens).transpose(2, 3))  # (N, h, c, HW)
        return x + update.reshape(x.shape)


class VTModule(nn.Module):
    """One VT module of the classifier: a tokenizer followed by a transformer.

    The first module uses a `FilterTokenizer`; later ones a `RecurrentTokenizer` fed with the
    previous module's output tokens. All modules tokenize the same stage-4 feature map.
    """

    def __init__(self, tokenizer: FilterTokenizer | RecurrentTokenizer, transformer: TokenTransformer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.recurrent = isinstance(tokenizer, RecurrentTokenizer)

    def forward(self, x: Tensor, prev_tokens: Tensor | None = None) -> Tensor:
        # `recurrent` is fixed at construction, so this branch is not data dependent.
        if self.recurrent:
            if prev_tokens is None:
                raise ModelError("a recurrent VT module needs the previous module's tokens")
            tokens = self.tokenizer(x, prev_tokens)
        else:
            tokens = self.tokenizer(x)
        return self.transformer(tokens)


class VTResNet(nn.Module):
    """VT-ResNet-18/34: ResNet stages 1-4, then one VT module per block of the removed stage 5.

    The VT modules read the stage-4 feature map (4 * width channels at stride 16: 256 x 14 x 14
    for a 224 input at paper width; at stride 4 with the "cifar" stem: 8 x 8 for a 32x32 photo). The last
    module's tokens are averaged over L and fed to a linear classifier.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if not spec.is_vt:
            raise ModelError(f"arch: VTResNet cannot build {spec.arch!r}; use ResNet")
        self.spec = spec
        self.stem, self.layer1, self.layer2, self.layer3 = _make_trunk(spec)
        _init_trunk(self)
        channels, ct = 4 * spec.width, spec.token_channels
        modules = [VTModule(FilterTokenizer(channels, spec.tokens, ct), TokenTransformer(ct, spec.heads))]
        for _ in range(spec.stage_blocks[3] - 1):
            tokenizer = RecurrentTokenizer(channels, ct, spec.heads)
            modules.append(VTModule(tokenizer, TokenTransformer(ct, spec.heads)))
        self.vt = nn.ModuleList(modules)
        self.fc = nn.Linear(ct, spec.num_classes)
        # The pooled tokens are batch-normalised (unit scale), so a default-initialised head
        # would start with logits of std ~1 and a loss above chance; start near uniform.
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stage-4 feature map (N, 4 * width, H/16, W/16), the input of the VT modules
        (H/4, W/4 with the "cifar" stem)."""
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def _tokens(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)
        tokens = None
        for module in self.vt:
            tokens = module(features, tokens)
        assert tokens is not None
        return tokens

    def forward_tokens(self, x: Tensor) -> Tensor:
        """The last VT module's output tokens, (N, L, C_T)."""
        return self._tokens(x).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self._tokens(x).mean(dim=2))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the (randomly initialised) model a spec describes; `model.spec` keeps the spec."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model expects a ModelSpec, got {type(spec).__name__}")
    return VTResNet(spec) if spec.is_vt else ResNet(spec)


def _build(arch: str, overrides: Mapping[str, Any]) -> nn.Module:
    if "arch" in overrides and overrides["arch"] != arch:
        raise ModelError(f"arch: factory {arch!r} cannot build {overrides['arch']!r}")
    return build_model(ModelSpec.from_dict({**overrides, "arch": arch}))


def vt_resnet18(**overrides: Any) -> nn.Module:
    """VT-ResNet-18: ResNet-18 stages 1-4 and 2 VT modules (ModelSpec fields as keywords)."""
    return _build("vt_resnet18", overrides)


def vt_resnet34(**overrides: Any) -> nn.Module:
    """VT-ResNet-34: ResNet-34 stages 1-4 and 3 VT modules (ModelSpec fields as keywords)."""
    return _build("vt_resnet34", overrides)


def resnet18(**overrides: Any) -> nn.Module:
    """ResNet-18 (BasicBlock, 2-2-2-2)."""
    return _build("resnet18", overrides)


def resnet34(**overrides: Any) -> nn.Module:
    """ResNet-34 (BasicBlock, 3-4-6-3)."""
    return _build("resnet34", overrides)


MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "vt_resnet18": vt_resnet18,
    "vt_resnet34": vt_resnet34,
    "resnet18": resnet18,
    "resnet34": resnet34,
}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model by name; keyword overrides are ModelSpec fields."""
    if name not in MODEL_REGISTRY:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[name](**overrides)
