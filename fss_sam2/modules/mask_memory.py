"""Mask -> SAM 2 memory: encode an image with a (soft) mask as a memory frame.

Used for the support ground truth and for both query priors (the paper's pseudo query
memory). Two parts, both from a stock ``SAM2Base`` (docs/deviations.md, "Stock sam2, no
vendored copy"):

1. ``sam._use_mask_as_output`` treats the mask as SAM's output: logits 20*m - 10 at image
   size, and an object pointer from one decoder pass prompted by ``mask_downsample(m)``.
   The pointer is gated twice, exactly as in the authors' code: upstream
   ``_forward_sam_heads`` replaces it by ``sam.no_obj_ptr`` when the decoder's object score
   is <= 0 (hard gate: SAM 2.0 configs have pred_obj_scores, fixed_no_obj_ptr and no
   soft_no_obj_ptr), then ``_use_mask_as_output`` does the same when the mask has no pixel
   > 0. The vendored copy only drops the -1024 masking of the decoder's *mask* logits, which
   this path discards, so upstream sam2 1.1.0 gives the released pointer.
2. ``sam.memory_encoder`` fuses the stride-16 image embedding with the mask prepared as in
   ``_encode_new_memory`` for a mask input: scale * sigmoid(logits) + bias with scale 20 and
   bias -10 in SAM 2.0 configs (20 * sigmoid(20m - 10) - 10), at image size (the encoder's
   mask downsampler brings it to the memory grid).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fss_sam2.backbones.sam2_model import ImageFeatures


@dataclass
class MaskMemory:
    """One memory frame per image (h = w = image_size / 16)."""

    memory: torch.Tensor  # (B,64,h,w) memory-encoder features
    pos: torch.Tensor  # (B,64,h,w) their sine position encoding
    obj_ptr: torch.Tensor  # (B,256) object pointer


def mask_to_memory(sam, feats: ImageFeatures, mask: torch.Tensor, memory_dtype=None) -> MaskMemory:
    """Encode images (their SAM 2 features) with masks (B,1,S,S) in [0,1], S = sam.image_size.

    Runs with grad (memory encoder and, through the pointer, the mask decoder). `memory_dtype`
    (e.g. torch.bfloat16, like the official explicit cast) casts the memory features; None keeps
    the encoder's dtype (docs/deviations.md, "Memory dtype").
    """
    b, s = feats.pix.shape[0], sam.image_size
    if mask.shape != (b, 1, s, s):
        raise ValueError(f"mask: expected (B,1,S,S) = ({b},1,{s},{s}) (S = sam.image_size), got {tuple(mask.shape)}")
    _, logits, _, _, _, obj_ptr, _ = sam._use_mask_as_output(
        backbone_features=feats.pix, high_res_features=feats.high_res, mask_inputs=mask
    )  # logits (B,1,S,S) = 20*m - 10, obj_ptr (B,256)
    mask_for_mem = torch.sigmoid(logits) * sam.sigmoid_scale_for_mem_enc + sam.sigmoid_bias_for_mem_enc
    out = sam.memory_encoder(feats.pix, mask_for_mem, skip_mask_sigmoid=True)
    memory = out["vision_features"]  # (B,64,h,w)
    if memory_dtype is not None:
        memory = memory.to(memory_dtype)
    return MaskMemory(memory=memory, pos=out["vision_pos_enc"][-1], obj_ptr=obj_ptr)
