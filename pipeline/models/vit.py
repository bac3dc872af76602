"""A ViT / DeiT classifier in plain torch.nn, with timm's parameter names and shapes.

`vit(...)` builds the same module tree as timm's `VisionTransformer` (patch_embed.proj, cls_token,
pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head), so a
state_dict saved from timm (e.g. `deit_tiny_patch16_224`: embed_dim 192, depth 12, 3 heads)
loads into it without timm or torchvision installed, and a state_dict saved from it loads into
timm. It is also the transformer the project trains and tests its INT8 recipe on.

Attention is written as explicit MatMul / Softmax / MatMul (not a fused kernel), which is how
it exports to ONNX and where the INT8 recipe places its Q/DQ pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import ModelError


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: one strided convolution, flattened to (B, N, D)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ModelError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"embed_dim {dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class ViTShape:
    """The architecture; the defaults are DeiT-Tiny's (timm `deit_tiny_patch16_224`)."""

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    qkv_bias: bool = True
    in_chans: int = 3


class VisionTransformer(nn.Module):
    """ViT with a class token; the classifier reads the class token after the final norm."""

    def __init__(self, shape: ViTShape) -> None:
        super().__init__()
        self.shape = shape
        self.patch_embed = PatchEmbed(shape.img_size, shape.patch_size, shape.in_chans, shape.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, shape.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, shape.embed_dim))
        self.blocks = nn.Sequential(
            *[Block(shape.embed_dim, shape.num_heads, shape.mlp_ratio, shape.qkv_bias) for _ in range(shape.depth)]
        )
        self.norm = nn.LayerNorm(shape.embed_dim, eps=1e-6)
        self.head = nn.Linear(shape.embed_dim, shape.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's scheme: truncated normal (std 0.02) for tokens, positions and linear layers.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        fan_in = self.patch_embed.proj.in_channels * math.prod(self.patch_embed.proj.kernel_size)
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=math.sqrt(1.0 / fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit(**shape) -> VisionTransformer:
    """A ViT classifier from keyword arguments (`ViTShape`'s fields), as a config's
    `[model] factory_kwargs` gives them; unknown keywords fail with their name."""
    return VisionTransformer(ViTShape(**shape))
