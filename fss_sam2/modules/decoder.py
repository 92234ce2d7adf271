"""Decode the memory-conditioned query feature with SAM 2's mask decoder, as the release does.

No prompts (one padding point, label -1; no box; no mask -> ``no_mask_embed``), three masks,
the one with the highest predicted IoU kept, upsampled to the image size. Unlike upstream
``SAM2Base._forward_sam_heads`` there is no "object absent => logits = -1024" replacement:
the object-score head never zeroes the prediction (the release's SAM 2 copy removed it too;
docs/deviations.md, "Stock sam2, no vendored copy").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # (B,1,H,W) float32 at sam.image_size, the chosen mask
    low_res: torch.Tensor  # (B,1,4h,4w) float32, the chosen mask before upsampling
    iou: torch.Tensor  # (B,) predicted IoU of the chosen mask
    object_score: torch.Tensor  # (B,1) object-score logit (reported, never applied)
    all_logits: torch.Tensor  # (B,3,H,W) float32, all three masks at image size
    all_iou: torch.Tensor  # (B,3) their predicted IoUs


def mask_decoder_outputs(sam, pix: torch.Tensor, high_res: list[torch.Tensor], points=None, labels=None):
    """SAM 2's prompt encoder + mask decoder, all three masks: pix (B,256,h,w) ->
    (masks (B,3,4h,4w), ious (B,3), object_score (B,1)). Prompt: `points` (B,P,2) in pixels with
    `labels` (B,P), or none (one padding point, label -1)."""
    if points is None:
        points = torch.zeros(pix.shape[0], 1, 2, device=pix.device)
        labels = -torch.ones(pix.shape[0], 1, dtype=torch.int32, device=pix.device)
    sparse, dense = sam.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
    masks, ious, _, object_score = sam.sam_mask_decoder(
        image_embeddings=pix,
        image_pe=sam.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
        repeat_image=False,  # already one image per prompt
        high_res_features=high_res,
    )
    return masks, ious, object_score


def decode_masks(sam, pix_with_mem: torch.Tensor, high_res: list[torch.Tensor], points=None, labels=None) -> DecoderOutput:
    """pix_with_mem (B,256,h,w), high_res [(B,32,4h,4w), (B,64,2h,2w)] -> DecoderOutput.
    FSSAM gives no prompt; `points` / `labels` as in `mask_decoder_outputs` (SAM 2's promptable
    path, for the toy stand-in's pretraining)."""
    size = sam.sam_image_embedding_size
    expected = (sam.sam_prompt_embed_dim, size, size)
    if pix_with_mem.dim() != 4 or tuple(pix_with_mem.shape[1:]) != expected:
        want = ",".join(map(str, expected))
        raise ValueError(f"decode_masks: pix_with_mem has shape {tuple(pix_with_mem.shape)}, expected (B,{want})")
    B = pix_with_mem.shape[0]
    if len(high_res) != 2 or any(f.dim() != 4 or f.shape[0] != B for f in high_res):
        got = [tuple(f.shape) for f in high_res]
        raise ValueError(f"decode_masks: high_res must be two (B,C,H,W) maps with B={B}, got {got}")
    if high_res[0].shape[-2:] != (4 * size, 4 * size) or high_res[1].shape[-2:] != (2 * size, 2 * size):
        got = [tuple(f.shape) for f in high_res]
        raise ValueError(
            f"decode_masks: high_res sizes {got}, expected {4 * size}x{4 * size} and {2 * size}x{2 * size}"
        )

    device = pix_with_mem.device
    masks, ious, object_score = mask_decoder_outputs(sam, pix_with_mem, high_res, points, labels)
    best = ious.argmax(dim=-1)  # (B,)
    batch = torch.arange(B, device=device)
    masks = masks.float()
    # upsample all three, then pick (upstream's order: the same bits whatever the thread count)
    upsampled = F.interpolate(masks, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False)
    low_res = masks[batch, best].unsqueeze(1)  # (B,1,4h,4w)
    logits = upsampled[batch, best].unsqueeze(1)  # (B,1,H,W)
    return DecoderOutput(logits=logits, low_res=low_res, iou=ious[batch, best], object_score=object_score,
                         all_logits=upsampled, all_iou=ious)
