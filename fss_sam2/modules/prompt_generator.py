"""The paper's "Pseudo Prompt Generator" (PPG): DINOv2 priors for the query image.

For every shot k, a frozen DINOv2 compares the query patch tokens with the support's
foreground and background prototypes:

    fg_sim = minmax(cos(query tokens, masked_average(support tokens, m)))
    bg_sim = minmax(cos(query tokens, masked_average(support tokens, 1 - m)))

both upsampled to the image size, and gives two soft "pseudo prompts" for SAM 2:

    prior_fg   = fg_sim                         (foreground prior)
    prior_disc = minmax(max(fg_sim - bg_sim, 0)) (discriminative prior; "ae" in the authors' code)

Normalisation is per shot, as in the release's K-shot model (its 1-shot model normalises over
all shots, the same when K = 1). The
model averages the K priors afterwards, not this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fss_sam2.modules.common import cosine_map, masked_average, minmax_normalize

DINO_PATCH = 14
# ImageNet mean / std scaled by 255: DINOv2 reads the raw 0..255 images.
DINO_MEAN = tuple(255 * m for m in (0.485, 0.456, 0.406))
DINO_STD = tuple(255 * s for s in (0.229, 0.224, 0.225))


def dino_size(size: int) -> int:
    """DINOv2 input side for an image side: size * 35 / 32 (512 -> 560 = 40 tokens of 14 px)."""
    if size <= 0 or (size * 35) % 32 or (size * 35 // 32) % DINO_PATCH:
        raise ValueError(
            f"image side {size}: the DINOv2 input side size*35/32 must be a whole multiple of "
            f"the patch size {DINO_PATCH}, i.e. the image side must be a multiple of 64 (e.g. 512)"
        )
    return size * 35 // 32


@dataclass
class PriorMaps:
    """Per-shot similarity maps of one batch of episodes (all in [0, 1])."""

    fg_tokens: torch.Tensor  # (B,K,t,t) fg_sim on the DINOv2 token grid
    bg_tokens: torch.Tensor  # (B,K,t,t) bg_sim on the token grid
    fg: torch.Tensor  # (B,K,H,W) fg_sim at image size = the foreground prior
    bg: torch.Tensor  # (B,K,H,W) bg_sim at image size
    disc: torch.Tensor  # (B,K,H,W) minmax(max(fg - bg, 0)) = the discriminative prior

    @property
    def priors(self) -> torch.Tensor:
        """(B,K,2,H,W): channel 0 the foreground prior, channel 1 the discriminative prior."""
        return torch.stack([self.fg, self.disc], dim=2)


class PseudoPromptGenerator(nn.Module):
    """Turns (query, supports, support masks) into DINOv2 priors; the backbone stays frozen.

    `dino` is any module with `patch_features(x (N,3,H',W') normalised) -> (N,C,H'/14,W'/14)`.
    """

    def __init__(self, dino: nn.Module):
        super().__init__()
        if not callable(getattr(dino, "patch_features", None)):
            raise TypeError(f"dino: {type(dino).__name__} has no patch_features(x) method")
        self.dino = dino.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(DINO_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(DINO_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.dino.eval()  # frozen: never in training mode
        return self

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """DINOv2 patch tokens of 0..255 RGB images (N,3,H,W) -> (N,C,t,t)."""
        size = (dino_size(images.shape[-2]), dino_size(images.shape[-1]))
        x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=True)
        return self.dino.patch_features((x - self.mean) / self.std)

    @torch.no_grad()
    def maps(self, query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor,
             tokens: torch.Tensor | None = None) -> PriorMaps:
        """Every intermediate map of the priors (for the tutorials); `forward` keeps two of them.

        tokens: the DINOv2 tokens (B+BK,C,t,t) of [queries, supports] if already known (e.g.
        cached); DINOv2 is then not run."""
        b, k, h, w = _check_inputs(query, supports, support_masks)
        if tokens is None:
            tokens = self.tokens(torch.cat([query, supports.flatten(0, 1)]))
        elif tokens.dim() != 4 or tokens.shape[0] != b + b * k:
            raise ValueError(f"tokens: expected (B+BK,C,t,t) with B+BK = {b + b * k}, got {tuple(tokens.shape)}")
        feats = tokens.float()  # (B+BK,C,t,t)
        grid = feats.shape[-2:]
        q = feats[:b].repeat_interleave(k, dim=0)  # (BK,C,t,t), row b*K+i pairs with shot i
        s = feats[b:]  # (BK,C,t,t)
        m = F.interpolate(
            support_masks.flatten(0, 1).unsqueeze(1).float(), size=grid, mode="bilinear", align_corners=True
        )  # (BK,1,t,t)
        fg_tok = minmax_normalize(cosine_map(q, masked_average(s, m)), dims=(2, 3))  # (BK,1,t,t)
        bg_tok = minmax_normalize(cosine_map(q, masked_average(s, 1 - m)), dims=(2, 3))
        fg, bg, disc = priors_at_image_size(fg_tok, bg_tok, (h, w))  # (BK,1,H,W) each
        return PriorMaps(*(x.view(b, k, *x.shape[-2:]) for x in (fg_tok, bg_tok, fg, bg, disc)))

    def forward(self, query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        """query (B,3,H,W) and supports (B,K,3,H,W) in 0..255 RGB, support_masks (B,K,H,W) in
        {0,1} (ignore pixels already zeroed), optional known tokens (see `maps`) -> priors
        (B,K,2,H,W) [foreground, discriminative]."""
        return self.maps(query, supports, support_masks, tokens).priors


def priors_at_image_size(fg_tokens: torch.Tensor, bg_tokens: torch.Tensor, size) -> tuple[torch.Tensor, ...]:
    """The token-grid similarity maps fg_sim, bg_sim (N,1,t,t) in [0,1] -> (fg, bg, disc), each
    (N,1,H,W) at `size` = (H,W): bilinear upsampling, then the contrast taken at image size."""
    fg = F.interpolate(fg_tokens, size=size, mode="bilinear", align_corners=True)
    bg = F.interpolate(bg_tokens, size=size, mode="bilinear", align_corners=True)
    disc = minmax_normalize((fg - bg).clamp_min(0), dims=(2, 3))
    return fg, bg, disc


def _check_inputs(query, supports, support_masks) -> tuple[int, int, int, int]:
    if query.dim() != 4 or query.shape[1] != 3:
        raise ValueError(f"query: expected (B,3,H,W) RGB, got {tuple(query.shape)}")
    b, _, h, w = query.shape
    if supports.dim() != 5 or supports.shape[0] != b or supports.shape[2:] != (3, h, w):
        raise ValueError(f"supports: expected (B,K,3,H,W) = ({b},K,3,{h},{w}), got {tuple(supports.shape)}")
    k = supports.shape[1]
    if support_masks.shape != (b, k, h, w):
        raise ValueError(f"support_masks: expected (B,K,H,W) = ({b},{k},{h},{w}), got {tuple(support_masks.shape)}")
    return b, k, h, w
