"""DINOv2 ViT/14, the frozen prior backbone of FSSAM's pseudo prompt generator.

Our own implementation with the hub models' hyper-parameters (patch 14, img_size 518, layer
scale 1.0, no registers, LayerNorm eps 1e-6, bicubic pos-embed resize with offset 0.1) and
their state-dict keys (``blocks.N.*``), so the original ``dinov2_vit?14_pretrain.pth`` files
load as they are, from a local file rather than torch.hub. Only what FSSAM uses is implemented:
last-block, normed patch tokens (docs/deviations.md, "DINOv2 backbone").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .sam2_checkpoint import check_state_dict, load_checkpoint_file, strip_wrapper_prefix, unwrap_state_dict


@dataclass(frozen=True)
class DinoV2Config:
    dim: int
    depth: int
    heads: int
    swiglu: bool = False  # SwiGLU FFN (ViT-g) instead of the GELU MLP
    patch: int = 14
    img_size: int = 518  # pos_embed covers (518/14)^2 = 37x37 patches + the class token


DINOV2_CONFIGS = {
    "vits14": DinoV2Config(dim=384, depth=12, heads=6),
    "vitb14": DinoV2Config(dim=768, depth=12, heads=12),
    "vitl14": DinoV2Config(dim=1024, depth=24, heads=16),
    "vitg14": DinoV2Config(dim=1536, depth=40, heads=24, swiglu=True),
    "tiny-toy": DinoV2Config(dim=64, depth=3, heads=2),  # synthetic world / tests
}
KIND_BY_DIM = {384: "ViT-S/14", 768: "ViT-B/14", 1024: "ViT-L/14", 1536: "ViT-g/14", 64: "tiny-toy"}
POS_EMBED_OFFSET = 0.1  # the hub's interpolate_offset


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B,3,H,W) -> (B,H/14*W/14,C)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B,heads,N,C/heads)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """ViT-g's FFN: w3(silu(a) * b) with (a, b) = w12(x); hidden 2/3 of 4*dim, rounded to 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # 4096 for ViT-g
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    def __init__(self, config: DinoV2Config):
        super().__init__()
        dim = config.dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, config.heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLU if config.swiglu else Mlp)(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    def __init__(self, config: DinoV2Config):
        super().__init__()
        self.config = config
        grid = config.img_size // config.patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, config.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, config.dim))  # pretraining only; kept for the keys
        self.patch_embed = PatchEmbed(config.patch, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """(1,1+h*w,C) position embedding for an h x w patch grid, resized as the hub does it."""
        pos = self.pos_embed
        m = math.isqrt(pos.shape[1] - 1)  # 37
        if h == w == m:
            return pos
        grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)  # (1,C,m,m)
        # the scale factor (not the size) drives the sampling grid, so the offset matters
        scale = ((h + POS_EMBED_OFFSET) / m, (w + POS_EMBED_OFFSET) / m)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic")  # (1,C,h,w)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1].float(), grid], dim=1).to(pos.dtype)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last block's tokens after the final LayerNorm, class token dropped, as a map.

        x (B,3,H,W) ImageNet-normalised, H and W multiples of 14 -> (B,C,H/14,W/14).
        """
        b, channels, height, width = x.shape
        p = self.config.patch
        if channels != 3 or height % p or width % p:
            raise ValueError(
                f"DINOv2 input of shape {tuple(x.shape)}: expected (B,3,H,W) with H and W "
                f"multiples of {p} (FSSAM uses 560x560)"
            )
        h, w = height // p, width // p
        tokens = self.patch_embed(x)  # (B,h*w,C)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B,1+h*w,C)
        tokens = tokens + self.pos_embed_for(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens[:, 1:])  # (B,h*w,C)
        return tokens.transpose(1, 2).reshape(b, -1, h, w)


def read_dinov2_state_dict(checkpoint) -> tuple[dict, str]:
    """(state dict with hub keys, its name for errors) of an original DINOv2 file, a state
    dict, or an authors' FSSAM checkpoint (``module.dino.*`` / ``dino.*`` keys)."""
    if isinstance(checkpoint, dict):
        source, obj = "DINOv2 state dict", checkpoint
    else:
        source = os.fspath(checkpoint)
        obj = load_checkpoint_file(source)
    return strip_wrapper_prefix(unwrap_state_dict(obj, source), "dino"), source


def check_dinov2_kind(state_dict: dict, name: str, source: str) -> None:
    """Raise unless ``state_dict`` is a DINOv2 (no registers) of the width ``name`` has."""
    if "cls_token" not in state_dict:
        hint = " (it looks like a SAM 2 checkpoint)" if any("image_encoder." in k for k in state_dict) else ""
        raise ValueError(f"{source}: holds no DINOv2 weights (no cls_token){hint}")
    if "register_tokens" in state_dict:
        raise ValueError(
            f"{source}: DINOv2 with registers (dinov2_vit?14_reg) is not supported: "
            "FSSAM uses the hub models without registers (dinov2_vit?14_pretrain.pth)"
        )
    dim = state_dict["cls_token"].shape[-1]
    if dim != DINOV2_CONFIGS[name].dim:
        raise ValueError(f"{source}: checkpoint is DINOv2 {KIND_BY_DIM.get(dim, f'{dim}-dim')}, you asked for {name}")


def load_dinov2_weights(model: DinoV2, state_dict: dict, source: str) -> None:
    """Strict load; ``source`` names the checkpoint in errors."""
    check_state_dict(model.state_dict(), state_dict, f"{source}: does not match the DINOv2 model ({model.config})")
    model.load_state_dict(state_dict, strict=True)


def build_dinov2(name: str = "vitb14", checkpoint=None) -> DinoV2:
    """A frozen DINOv2 in eval mode: random weights, or ``checkpoint`` (a local file or a
    state dict; see ``read_dinov2_state_dict``). Never downloads."""
    if name not in DINOV2_CONFIGS:
        raise ValueError(f"dino={name!r}: expected one of {sorted(DINOV2_CONFIGS)}")
    state_dict = source = None
    if checkpoint is not None:
        state_dict, source = read_dinov2_state_dict(checkpoint)
        check_dinov2_kind(state_dict, name, source)  # before building a possibly large model
    model = DinoV2(DINOV2_CONFIGS[name])
    if state_dict is not None:
        load_dinov2_weights(model, state_dict, source)
    return model.eval().requires_grad_(False)
