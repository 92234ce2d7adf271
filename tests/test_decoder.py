"""Prompt-free decoding without object-score gating (reference §1.8, §2.4 item 4)."""
import pytest
import torch

from fss_sam2.backbones.sam2_model import build_sam2_model, encode_image
from fss_sam2.modules.decoder import decode_masks


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam2_model("tiny-toy", image_size=128)


@pytest.fixture(scope="module")
def feats(sam):
    images = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        return encode_image(sam, images)


def set_object_score(sam, value):
    """Make the object-score head output `value` for every input (masks are unaffected)."""
    last = sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    last.weight.data.zero_()
    last.bias.data.fill_(value)


def test_matches_upstream_when_object_present(sam, feats):
    set_object_score(sam, 4.0)
    with torch.no_grad():
        out = decode_masks(sam, feats.pix, feats.high_res)
        _, _, ious, low_res, high_res, _, obj = sam._forward_sam_heads(
            feats.pix, high_res_features=feats.high_res, multimask_output=True
        )
    B = feats.pix.shape[0]
    assert out.logits.shape == (B, 1, 128, 128) and out.logits.dtype == torch.float32
    assert out.low_res.shape == (B, 1, 32, 32) and out.iou.shape == (B,) and out.object_score.shape == (B, 1)
    assert torch.equal(out.logits, high_res)
    assert torch.equal(out.low_res, low_res)
    assert torch.equal(out.iou, ious.max(dim=-1).values)
    assert torch.equal(out.object_score, obj) and (obj > 0).all()


def test_negative_object_score_does_not_gate(sam, feats):
    set_object_score(sam, 4.0)
    with torch.no_grad():
        present = decode_masks(sam, feats.pix, feats.high_res)
    set_object_score(sam, -4.0)
    with torch.no_grad():
        absent = decode_masks(sam, feats.pix, feats.high_res)
        upstream_low_res = sam._forward_sam_heads(
            feats.pix, high_res_features=feats.high_res, multimask_output=True
        )[3]
    assert (absent.object_score < 0).all()
    assert (upstream_low_res == -1024).all()  # upstream would have erased the prediction
    assert torch.equal(absent.logits, present.logits)
    assert absent.logits.std() > 0 and (absent.logits > -1000).all()


def test_gradients_reach_the_decoder(sam, feats):
    pix = feats.pix.clone().requires_grad_()
    sam.sam_mask_decoder.zero_grad(set_to_none=True)
    decode_masks(sam, pix, feats.high_res).logits.sigmoid().mean().backward()
    assert pix.grad.abs().sum() > 0
    assert sam.sam_mask_decoder.output_upscaling[0].weight.grad.abs().sum() > 0
    sam.sam_mask_decoder.zero_grad(set_to_none=True)


def test_bad_shapes_are_named(sam, feats):
    with pytest.raises(ValueError, match="pix_with_mem has shape"):
        decode_masks(sam, feats.pix[:, :, :4], feats.high_res)
    with pytest.raises(ValueError, match="high_res"):
        decode_masks(sam, feats.pix, feats.high_res[:1])
    with pytest.raises(ValueError, match="high_res sizes"):
        decode_masks(sam, feats.pix, feats.high_res[::-1])
