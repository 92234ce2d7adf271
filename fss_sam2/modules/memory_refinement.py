"""Iterative Memory Refinement (IMR; paper, "Iterative Memory Refinement"): blend the
foreground-prior query memory into the discriminative-prior query memory where both the
query and the support agree.

On the memory grid (h = w = image_size / 16), with F = fg_memory (M_fg), A = disc_memory (the
discriminative-prior query memory; "ae" in the authors' code), S_k the support memories, m_k
the soft support masks and P_fg, P_disc the downsampled priors:

    sim(X, Y, w) = minmax over locations of cos(X, masked_average(Y, w))
    S_qs = mean_k sim(F, S_k, m_k)                  (fixed across rounds)
    per round:  S_qq = sim(F, A, P_disc)
                W    = max(S_qq + S_qs - 1, 0)      (v2: W min-max normalised)
                A    = W*F + (1-W)*A
                P_disc = minmax(W*P_fg + (1-W)*P_disc)

Parameter-free; gradients flow through everything.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fss_sam2.modules.common import cosine_map, masked_average, minmax_normalize

VERSIONS = ("v1", "v2")  # v1: W as is (every released setting); v2: W min-max normalised


def downsample_to_memory(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """Resize masks / priors (B,C,H,W) to the memory grid `size` (int or (h,w)).

    "bilinear" (align_corners=True): soft support masks and priors for IMR. "nearest": the
    support mask for the calibrated memory attention. Both as the release resizes them.
    """
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    raise ValueError(f"mode={mode!r}: expected 'bilinear' or 'nearest'")


def prototype_similarity(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sim(X, Y, w): cosine of every location of x (N,C,h,w) to the w-weighted prototype of
    y (N,C,h,w), w (N,1,h,w), min-max normalised over locations -> (N,1,h,w) in [0,1]."""
    return minmax_normalize(cosine_map(x, masked_average(y, w)), dims=(2, 3))


def iterative_memory_refinement(
    support_memory: torch.Tensor,
    fg_memory: torch.Tensor,
    disc_memory: torch.Tensor,
    support_mask: torch.Tensor,
    prior_fg: torch.Tensor,
    prior_disc: torch.Tensor,
    rounds: int = 3,
    version: str = "v1",
    history: bool = False,
):
    """Refine the discriminative-prior query memory.

    support_memory (B,K,C,h,w), fg_memory / disc_memory (B,C,h,w), support_mask (B,K,1,h,w) soft,
    prior_fg / prior_disc (B,1,h,w). Returns the refined disc_memory (B,C,h,w) in disc_memory's dtype,
    and with `history=True` also one dict per round (detached W, disc_memory, prior_disc, S_qq, S_qs).
    """
    if version not in VERSIONS:
        raise ValueError(f"version={version!r}: expected one of {VERSIONS}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds={rounds!r}: expected an integer >= 0")
    b, k = _check_inputs(support_memory, fg_memory, disc_memory, support_mask, prior_fg, prior_disc)
    steps = []
    if rounds > 0:
        # S_qs: one prototype and one normalised map per shot, then the mean over shots.
        fg_per_shot = fg_memory.unsqueeze(1).expand_as(support_memory).flatten(0, 1)  # (BK,C,h,w)
        s_qs = prototype_similarity(fg_per_shot, support_memory.flatten(0, 1), support_mask.flatten(0, 1))
        s_qs = s_qs.view(b, k, *s_qs.shape[1:]).mean(dim=1)  # (B,1,h,w)
    for _ in range(rounds):
        s_qq = prototype_similarity(fg_memory, disc_memory, prior_disc)  # (B,1,h,w)
        weight = (s_qq + s_qs - 1).clamp_min(0)  # soft AND, in [0,1]
        if version == "v2":
            weight = minmax_normalize(weight, dims=(2, 3))
        disc_memory = (weight * fg_memory + (1 - weight) * disc_memory).to(disc_memory.dtype)
        prior_disc = minmax_normalize(weight * prior_fg + (1 - weight) * prior_disc, dims=(2, 3))
        if history:
            step = dict(W=weight, disc_memory=disc_memory, prior_disc=prior_disc, S_qq=s_qq, S_qs=s_qs)
            steps.append({name: t.detach() for name, t in step.items()})
    return (disc_memory, steps) if history else disc_memory


def _check_inputs(support_memory, fg_memory, disc_memory, support_mask, prior_fg, prior_disc) -> tuple[int, int]:
    if fg_memory.dim() != 4:
        raise ValueError(f"fg_memory: expected (B,C,h,w), got {tuple(fg_memory.shape)}")
    b, c, h, w = fg_memory.shape
    if disc_memory.shape != fg_memory.shape:
        raise ValueError(f"disc_memory: expected {tuple(fg_memory.shape)} like fg_memory, got {tuple(disc_memory.shape)}")
    if support_memory.dim() != 5 or support_memory.shape[0] != b or support_memory.shape[2:] != (c, h, w):
        raise ValueError(
            f"support_memory: expected (B,K,C,h,w) = ({b},K,{c},{h},{w}), got {tuple(support_memory.shape)}"
        )
    k = support_memory.shape[1]
    if support_mask.shape != (b, k, 1, h, w):
        raise ValueError(f"support_mask: expected (B,K,1,h,w) = ({b},{k},1,{h},{w}), got {tuple(support_mask.shape)}")
    for name, prior in (("prior_fg", prior_fg), ("prior_disc", prior_disc)):
        if prior.shape != (b, 1, h, w):
            raise ValueError(f"{name}: expected (B,1,h,w) = ({b},1,{h},{w}), got {tuple(prior.shape)}")
    return b, k
