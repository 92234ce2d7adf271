"""FSSAM: few-shot segmentation on an unmodified SAM 2 (reference §1), and its ablations.

One forward, shapes for a 512 input with Hiera-S (h = w = 32, the memory grid):
  priors (B,K,2,512,512) from DINOv2 (PPG)  -> prior_fg, prior_ae (B,1,512,512), shot mean
  SAM 2 image features of query and supports (frozen)
  memories (B·K or B,64,32,32) of: support GT, query prior_fg (M_fg), query prior_ae (M_ae)
  IMR: M_ae refined with M_fg, 3 rounds
  memory bank [supports, refined query memory, pointers] -> SCMA memory attention
  SAM 2 mask decoder (no prompts) -> logits (B,512,512)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .backbones.sam2_model import ImageFeatures, encode_image
from .modules.calibrated_attention import KSHOT_MODES, calibrated_memory_attention
from .modules.decoder import decode_masks
from .modules.mask_memory import mask_to_memory
from .modules.memory_assembly import assemble_memory
from .modules.memory_refinement import VERSIONS, downsample_to_memory, iterative_memory_refinement
from .modules.prompt_generator import PseudoPromptGenerator, dino_size

IGNORE = 255
# SAM 2 parts FSSAM trains (reference §1.10); everything else is frozen.
TRAINABLE = ("sam_mask_decoder", "memory_encoder", "memory_attention")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, mask_ignore: bool = False) -> torch.Tensor:
    """Official squared-denominator Dice, mean over the batch (reference §1.9).

    logits (B,H,W); target (B,H,W) in {0,1,255}. By default ignore pixels (255) count as
    background, as in the release (W4); `mask_ignore=True` leaves them out instead.
    """
    p = torch.sigmoid(logits.float()).flatten(1)  # (B,HW)
    t = (target == 1).float().flatten(1)
    if mask_ignore:
        valid = (target != IGNORE).float().flatten(1)
        p, t = p * valid, t * valid
    inter = (p * t).sum(1)
    denom = (p.pow(2).sum(1) + t.pow(2).sum(1)).clamp_min(1e-8)
    return (1 - 2 * inter / denom).mean()


@dataclass
class EpisodeFeatures:
    """What the frozen encoders give for the B + B·K images of an episode batch, in the order of
    `FSSAM.images`: row b is query b, row B + b·K + i is support i of episode b. Pass it to
    `FSSAM.forward(features=...)` to skip the encoders (e.g. from `engine.cache.FeatureCache`)."""

    sam: ImageFeatures | None = None  # SAM 2 image features; None: run SAM 2's image encoder
    tokens: torch.Tensor | None = None  # (B+B·K,C,t,t) DINOv2 patch tokens; None: run DINOv2


def _cat_features(feats: list[ImageFeatures]) -> ImageFeatures:
    return ImageFeatures(
        pix=torch.cat([f.pix for f in feats]),
        pos=torch.cat([f.pos for f in feats]),
        high_res=[torch.cat(level) for level in zip(*(f.high_res for f in feats))],
    )


def _split_features(feats: ImageFeatures, n: int) -> tuple[ImageFeatures, ImageFeatures]:
    first = ImageFeatures(feats.pix[:n], feats.pos[:n], [h[:n] for h in feats.high_res])
    rest = ImageFeatures(feats.pix[n:], feats.pos[n:], [h[n:] for h in feats.high_res])
    return first, rest


class FSSAM(nn.Module):
    """FSSAM over a stock ``SAM2Base`` (`sam2`) and a frozen DINOv2 (`dino`).

    Switches (defaults = the released 1-shot behaviour):
      num_refine: IMR rounds (3; 0 = no IMR);  refine_version: "v1" | "v2"
      calibrate: Support-Calibrated Memory Attention (True; False = plain SAM 2 memory attention)
      kshot_calibration: "mean" (intended K-shot semantics) | "official" (released 5-shot, W2)
      query_memory: pseudo query memory from the priors (True; False = the naive "support as
        memory" SAM 2 baseline the paper argues against: supports only, no priors, no SCMA)
      priors_only: return the discriminative prior itself as the prediction (no SAM 2)
      dice_ignore: Dice without ignore pixels (False = official, W4)
      memory_dtype: cast memories (e.g. torch.bfloat16, as the release does); None keeps fp32
    """

    def __init__(
        self,
        sam2: nn.Module,
        dino: nn.Module,
        *,
        num_refine: int = 3,
        refine_version: str = "v1",
        calibrate: bool = True,
        kshot_calibration: str = "mean",
        query_memory: bool = True,
        priors_only: bool = False,
        dice_ignore: bool = False,
        bias_scale: float = 10.0,
        memory_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if refine_version not in VERSIONS:
            raise ValueError(f"refine_version={refine_version!r}: expected one of {VERSIONS}")
        if kshot_calibration not in KSHOT_MODES:
            raise ValueError(f"kshot_calibration={kshot_calibration!r}: expected one of {KSHOT_MODES}")
        if not isinstance(num_refine, int) or num_refine < 0:
            raise ValueError(f"num_refine={num_refine!r}: expected an integer >= 0")
        self.sam2 = sam2
        self.prompt_generator = PseudoPromptGenerator(dino)
        self.num_refine = num_refine
        self.refine_version = refine_version
        self.calibrate = calibrate
        self.kshot_calibration = kshot_calibration
        self.query_memory = query_memory
        self.priors_only = priors_only
        self.dice_ignore = dice_ignore
        self.bias_scale = bias_scale
        self.memory_dtype = memory_dtype
        self._compiled_post_encoder = None  # see compile_post_encoder
        if self.uses_dino:
            try:
                dino_size(self.image_size)
            except ValueError as e:
                raise ValueError(f"image_size={self.image_size} (SAM 2's): {e}") from None
        self.requires_grad_(False)
        for name in TRAINABLE:
            getattr(self.sam2, name).requires_grad_(True)

    @property
    def image_size(self) -> int:
        return self.sam2.image_size

    @property
    def uses_sam(self) -> bool:
        """Whether forward runs SAM 2 (and its frozen image encoder)."""
        return not self.priors_only

    @property
    def uses_dino(self) -> bool:
        """Whether forward computes DINOv2 priors (unless they are given)."""
        return self.query_memory or self.priors_only

    @staticmethod
    def images(query: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """The frozen encoders' batch: queries (B,3,H,W), then supports (B,K,3,H,W) -> (B+B·K,3,H,W)."""
        return torch.cat([query, supports.flatten(0, 1)])

    def compile_post_encoder(self, **options) -> None:
        """`torch.compile` the part after the frozen encoders (memories, IMR, SCMA, decoder)."""
        self._compiled_post_encoder = torch.compile(self._post_encoder, **options)

    # ---- parameters and state -------------------------------------------------------------
    def trainable_parameters(self) -> list[dict]:
        """The official AdamW groups: mask decoder, memory encoder, memory attention."""
        return [
            {"name": name, "params": [p for p in getattr(self.sam2, name).parameters() if p.requires_grad]}
            for name in TRAINABLE
        ]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        prefixes = tuple(f"sam2.{name}." for name in TRAINABLE)
        return {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{source}: trainable weights do not match this model "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)

    def loss(self, logits: torch.Tensor, query_label: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, query_label, mask_ignore=self.dice_ignore)

    # ---- forward --------------------------------------------------------------------------
    def compute_priors(self, query, supports, support_masks) -> torch.Tensor:
        """DINOv2 priors (B,K,2,H,W) for caching; support_masks may hold 255."""
        return self.prompt_generator(query, supports, _binary(support_masks))

    def forward(self, query, supports, support_masks, priors=None, return_priors=False, features=None):
        """query (B,3,H,W) and supports (B,K,3,H,W) RGB in 0..255, support_masks (B,K,H,W) in
        {0,1,255}; priors: cached (B,K,2,H,W) from `compute_priors`; features: the frozen
        encoders' outputs (`EpisodeFeatures`), which are then not run. -> logits (B,H,W)."""
        b, k = self._check(query, supports, support_masks)
        features = EpisodeFeatures() if features is None else features
        _check_features(features, b * (k + 1))
        masks = _binary(support_masks)  # (B,K,H,W), ignore -> 0
        if self.uses_dino and priors is None:
            priors = self.prompt_generator(query, supports, masks, tokens=features.tokens)  # (B,K,2,H,W)
        if priors is not None and priors.shape != (b, k, 2, *query.shape[-2:]):
            raise ValueError(f"priors: expected (B,K,2,H,W) = ({b},{k},2,{query.shape[-2]},{query.shape[-1]}), got {tuple(priors.shape)}")
        if self.priors_only:
            prior_ae = priors[:, :, 1].mean(1)  # (B,H,W) in [0,1]
            logits = torch.logit(prior_ae.clamp(1e-6, 1 - 1e-6))
        else:
            feats = features.sam
            if feats is None:
                with torch.no_grad():
                    feats = encode_image(self.sam2, self.images(query, supports))  # B + B·K images
            post = self._compiled_post_encoder or self._post_encoder
            logits = post(feats, masks, priors)
        return (logits, priors) if return_priors else logits

    def _post_encoder(self, feats: ImageFeatures, masks: torch.Tensor, priors: torch.Tensor | None) -> torch.Tensor:
        """SAM 2 features of the B + B·K images, masks (B,K,H,W) in {0,1}, priors -> logits (B,H,W)."""
        sam = self.sam2
        b, k = masks.shape[:2]
        query_feats, support_feats = _split_features(feats, b)
        grid = query_feats.pix.shape[-2:]  # (h,w) memory grid

        # one memory-encoder batch: supports with their GT, then the query with each prior
        if self.query_memory:
            prior_fg = priors[:, :, 0].mean(1, keepdim=True)  # (B,1,H,W)
            prior_ae = priors[:, :, 1].mean(1, keepdim=True)
            mem = mask_to_memory(
                sam,
                _cat_features([support_feats, query_feats, query_feats]),
                torch.cat([masks.flatten(0, 1).unsqueeze(1), prior_fg, prior_ae]),
                memory_dtype=self.memory_dtype,
            )
        else:
            mem = mask_to_memory(sam, support_feats, masks.flatten(0, 1).unsqueeze(1), self.memory_dtype)
        bk = b * k
        support_memory = mem.memory[:bk].unflatten(0, (b, k))  # (B,K,64,h,w)
        support_pos = mem.pos[:bk].unflatten(0, (b, k))
        support_ptr = mem.obj_ptr[:bk].unflatten(0, (b, k))  # (B,K,256)

        query_memory = query_pos = query_ptr = None
        support_mask_grid = None
        if self.query_memory:
            fg_memory, ae_memory = mem.memory[bk : bk + b], mem.memory[bk + b :]  # (B,64,h,w)
            soft = downsample_to_memory(masks.flatten(0, 1).unsqueeze(1), grid).unflatten(0, (b, k))
            query_memory = iterative_memory_refinement(
                support_memory,
                fg_memory,
                ae_memory,
                soft,  # (B,K,1,h,w)
                downsample_to_memory(prior_fg, grid),
                downsample_to_memory(prior_ae, grid),
                rounds=self.num_refine,
                version=self.refine_version,
            )
            query_pos = mem.pos[bk + b :]
            query_ptr = mem.obj_ptr[bk + b :]  # pointer of the initial contrast prior (official)
            support_mask_grid = downsample_to_memory(
                masks.flatten(0, 1).unsqueeze(1), grid, mode="nearest"
            ).unflatten(0, (b, k))  # (B,K,1,h,w)

        memory, memory_pos, num_ptr = assemble_memory(
            sam, support_memory, support_pos, query_memory, query_pos, support_ptr, query_ptr
        )
        curr = query_feats.pix.flatten(2).permute(2, 0, 1)  # (hw,B,256)
        curr_pos = query_feats.pos.flatten(2).permute(2, 0, 1)
        out = calibrated_memory_attention(
            sam.memory_attention,
            curr,
            curr_pos,
            memory,
            memory_pos,
            num_ptr,
            support_mask=support_mask_grid,
            num_shots=k,
            calibrate=self.calibrate and self.query_memory,
            kshot_calibration=self.kshot_calibration,
            bias_scale=self.bias_scale,
        )  # (hw,B,256)
        pix_with_mem = out.permute(1, 2, 0).reshape(b, -1, *grid)  # (B,256,h,w)
        return decode_masks(sam, pix_with_mem, query_feats.high_res).logits[:, 0]  # (B,H,W)

    def _check(self, query, supports, support_masks) -> tuple[int, int]:
        s = self.image_size
        if query.dim() != 4 or tuple(query.shape[1:]) != (3, s, s):
            raise ValueError(f"query: expected (B,3,{s},{s}) RGB in 0..255 (model image_size {s}), got {tuple(query.shape)}")
        b = query.shape[0]
        if supports.dim() != 5 or supports.shape[0] != b or tuple(supports.shape[2:]) != (3, s, s):
            raise ValueError(f"supports: expected (B,K,3,{s},{s}) with B={b}, got {tuple(supports.shape)}")
        k = supports.shape[1]
        if k < 1:
            raise ValueError("supports: at least one support image is needed (K >= 1)")
        if tuple(support_masks.shape) != (b, k, s, s):
            raise ValueError(f"support_masks: expected (B,K,H,W) = ({b},{k},{s},{s}), got {tuple(support_masks.shape)}")
        return b, k


def _check_features(features: EpisodeFeatures, n: int) -> None:
    """Injected features must cover the n = B + B·K images of the batch."""
    if features.sam is not None and features.sam.pix.shape[0] != n:
        raise ValueError(f"features.sam: {features.sam.pix.shape[0]} images, expected B + B·K = {n}")
    if features.tokens is not None and features.tokens.shape[0] != n:
        raise ValueError(f"features.tokens: {features.tokens.shape[0]} images, expected B + B·K = {n}")


def _binary(support_masks: torch.Tensor) -> torch.Tensor:
    """{0,1,255} masks -> float {0,1}: ignore pixels count as background (official)."""
    return (support_masks == 1).float()
