"""Mask -> memory and Iterative Memory Refinement, against re-computations written separately."""
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from fss_sam2.backbones.sam2_model import build_sam2_model, encode_image
from fss_sam2.modules.mask_memory import mask_to_memory
from fss_sam2.modules.memory_refinement import downsample_to_memory, iterative_memory_refinement

# ---------------------------------------------------------------- IMR


def imr_inputs(b=2, k=1, c=16, h=8, seed=0):
    """Memories sharing an object direction where the masks / priors are high, so W is not 0."""
    g = torch.Generator().manual_seed(seed)
    obj = torch.randn(1, c, 1, 1, generator=g)
    support_mask = torch.rand(b, k, 1, h, h, generator=g)
    prior_fg = torch.rand(b, 1, h, h, generator=g)
    prior_ae = torch.rand(b, 1, h, h, generator=g)
    support = torch.randn(b, k, c, h, h, generator=g) + 3 * support_mask * obj
    fg = torch.randn(b, c, h, h, generator=g) + 3 * prior_fg * obj
    ae = torch.randn(b, c, h, h, generator=g) + 3 * prior_ae * obj
    return support, fg, ae, support_mask, prior_fg, prior_ae


def reference_imr(support, fg, ae, support_mask, prior_fg, prior_ae, rounds, version):
    """Per episode, per shot, per round, float64 numpy."""

    def minmax(x):
        return (x - x.min()) / (x.max() - x.min() + 1e-7)

    def sim(x, y, w):  # x, y (C,h,w), w (h,w)
        proto = (y * w).sum(axis=(1, 2)) / (w.sum() + 5e-4)
        dots = np.einsum("c,cij->ij", proto, x)
        return minmax(dots / (np.linalg.norm(proto) * np.linalg.norm(x, axis=0) + 1e-7))

    S, Fm, A, M, Pf, Pa = (t.detach().double().numpy() for t in (support, fg, ae, support_mask, prior_fg, prior_ae))
    out = []
    for i in range(S.shape[0]):
        a, pae = A[i].copy(), Pa[i, 0].copy()
        s_qs = np.mean([sim(Fm[i], S[i, j], M[i, j, 0]) for j in range(S.shape[1])], axis=0)
        for _ in range(rounds):
            w = np.maximum(sim(Fm[i], a, pae) + s_qs - 1, 0)
            if version == "v2":
                w = minmax(w)
            a = w * Fm[i] + (1 - w) * a
            pae = minmax(w * Pf[i, 0] + (1 - w) * pae)
        out.append(a)
    return np.stack(out)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_imr_matches_reference(k, version):
    inputs = imr_inputs(k=k, seed=k)
    refined, steps = iterative_memory_refinement(*inputs, rounds=3, version=version, history=True)
    assert refined.shape == inputs[1].shape
    np.testing.assert_allclose(refined.double().numpy(), reference_imr(*inputs, 3, version), atol=1e-5)
    assert len(steps) == 3
    for step in steps:
        for name in ("W", "S_qq", "S_qs", "prior_disc"):
            assert step[name].shape == (2, 1, 8, 8)
            assert step[name].min() >= 0 and step[name].max() <= 1 + 1e-6, name
        assert step["W"].max() > 0.1  # the blend actually happens
    torch.testing.assert_close(steps[-1]["disc_memory"], refined)
    assert torch.equal(steps[0]["S_qs"], steps[2]["S_qs"])  # support similarity fixed


def test_imr_blends_only_where_support_agrees():
    b, c, h = 1, 8, 8
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(c, generator=g), torch.randn(c, generator=g)
    fg = torch.empty(b, c, h, h)
    fg[..., :4] = u.view(c, 1, 1)  # left half looks like the support object
    fg[..., 4:] = v.view(c, 1, 1)
    mask = torch.zeros(b, 1, 1, h, h)
    mask[..., :4] = 1
    support = fg.unsqueeze(1).clone()
    ae = torch.randn(b, c, h, h, generator=g) + 2 * u.view(c, 1, 1)  # its prototype leans to u
    prior = torch.rand(b, 1, h, h, generator=g)
    refined, steps = iterative_memory_refinement(support, fg, ae, mask, prior, prior, rounds=3, history=True)
    s_qs = steps[0]["S_qs"][0, 0]
    assert torch.all(s_qs[:, :4] > 1 - 1e-5) and torch.all(s_qs[:, 4:] < 1e-5)
    assert torch.equal(refined[..., 4:], ae[..., 4:])  # W = 0 where the support disagrees
    before = (ae[..., :4] - fg[..., :4]).norm()
    after = (refined[..., :4] - fg[..., :4]).norm()
    assert after < 0.8 * before


def test_imr_zero_rounds_and_gradients():
    support, fg, ae, mask, pf, pa = imr_inputs(k=2)
    assert torch.equal(iterative_memory_refinement(support, fg, ae, mask, pf, pa, rounds=0), ae)
    leaves = [t.clone().requires_grad_() for t in (support, fg, ae)]
    iterative_memory_refinement(leaves[0], leaves[1], leaves[2], mask, pf, pa).square().sum().backward()
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_imr_bad_arguments():
    inputs = imr_inputs(k=2)
    with pytest.raises(ValueError, match="version"):
        iterative_memory_refinement(*inputs, version="v3")
    for rounds in (-1, 1.5):
        with pytest.raises(ValueError, match="rounds"):
            iterative_memory_refinement(*inputs, rounds=rounds)
    support, fg, ae, mask, pf, pa = inputs
    with pytest.raises(ValueError, match="support_mask"):
        iterative_memory_refinement(support, fg, ae, mask[:, :1], pf, pa)
    with pytest.raises(ValueError, match="prior_disc"):
        iterative_memory_refinement(support, fg, ae, mask, pf, pa[..., :4])


def test_downsample_to_memory():
    ramp = torch.linspace(0, 1, 128).expand(2, 1, 128, 128)
    small = downsample_to_memory(ramp, 8)  # align_corners=True keeps both ends exactly
    torch.testing.assert_close(small[0, 0, 3], torch.linspace(0, 1, 8))
    mask = (torch.rand(2, 1, 128, 128) > 0.5).float()
    assert torch.equal(downsample_to_memory(mask, (8, 8), mode="nearest"), mask[..., ::16, ::16])
    with pytest.raises(ValueError, match="mode"):
        downsample_to_memory(mask, 8, mode="area")


# ---------------------------------------------------------------- mask -> memory


@pytest.fixture(scope="module")
def sam_feats():
    torch.manual_seed(0)
    sam = build_sam2_model("tiny-toy", image_size=128)
    with torch.no_grad():
        feats = encode_image(sam, torch.rand(2, 3, 128, 128) * 255)
    return sam, feats


def reference_memory(sam, feats, mask):
    """The same computation spelled out with SAM 2's submodules (no SAM2Base helpers)."""
    b = mask.shape[0]
    sparse, dense = sam.sam_prompt_encoder(
        points=(torch.zeros(b, 1, 2), -torch.ones(b, 1, dtype=torch.int32)), boxes=None,
        masks=sam.mask_downsample(mask),
    )
    _, _, tokens, score = sam.sam_mask_decoder(
        image_embeddings=feats.pix, image_pe=sam.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=False, repeat_image=False, high_res_features=feats.high_res,
    )
    present = (score > 0) & (mask.flatten(1) > 0).any(dim=1, keepdim=True)  # (B,1)
    ptr = torch.where(present, sam.obj_ptr_proj(tokens[:, 0]), sam.no_obj_ptr)
    enc = sam.memory_encoder
    x = enc.pix_feat_proj(feats.pix) + enc.mask_downsampler(20 * torch.sigmoid(20 * mask - 10) - 10)
    x = enc.out_proj(enc.fuser(x))
    return x, enc.position_encoding(x), ptr


@contextmanager
def score_shift(sam, offset):
    """Shift the decoder's object-score logit to force either branch of its gate."""
    bias = sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    with torch.no_grad():
        bias += offset
    try:
        yield
    finally:
        with torch.no_grad():
            bias -= offset


@pytest.fixture(params=[0.0, 100.0, -100.0], ids=["random", "present", "absent"])
def score_offset(request, sam_feats):
    with score_shift(sam_feats[0], request.param):
        yield request.param


def test_mask_to_memory_matches_submodules(sam_feats, score_offset):
    sam, feats = sam_feats
    torch.manual_seed(1)
    mask = torch.zeros(2, 1, 128, 128)
    mask[0] = torch.rand(1, 128, 128)  # soft prior
    mask[1, :, 32:96, 40:100] = 1  # binary ground truth
    out = mask_to_memory(sam, feats, mask)
    assert out.memory.shape == out.pos.shape == (2, 64, 8, 8) and out.obj_ptr.shape == (2, 256)
    memory, pos, ptr = reference_memory(sam, feats, mask)
    torch.testing.assert_close(out.memory, memory, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pos, pos)
    torch.testing.assert_close(out.obj_ptr, ptr, atol=1e-5, rtol=1e-5)
    if score_offset < 0:  # upstream also gates on the decoder's score: no object, no pointer
        torch.testing.assert_close(out.obj_ptr, sam.no_obj_ptr.expand(2, -1), atol=0, rtol=0)
    if score_offset > 0:
        assert (out.obj_ptr - sam.no_obj_ptr).abs().amax(dim=1).min() > 1e-3


def test_empty_mask_gives_no_object_pointer(sam_feats, score_offset):
    sam, feats = sam_feats
    mask = torch.zeros(2, 1, 128, 128)
    mask[1, :, :64] = 1
    ptr = mask_to_memory(sam, feats, mask).obj_ptr
    assert torch.equal(ptr[0], sam.no_obj_ptr[0])  # even when the decoder says "present"
    if score_offset > 0:
        assert not torch.allclose(ptr[1], sam.no_obj_ptr[0])


def test_mask_to_memory_dtype_grad_and_errors(sam_feats):
    sam, feats = sam_feats
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 16:80, 16:80] = 1
    out = mask_to_memory(sam, feats, mask, memory_dtype=torch.bfloat16)
    assert out.memory.dtype == torch.bfloat16 and out.pos.dtype == torch.float32
    sam.zero_grad()
    mask_to_memory(sam, feats, mask).memory.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sam.memory_encoder.parameters())
    sam.zero_grad()
    with score_shift(sam, 100.0):  # pointer present: the mask decoder gets gradients through it
        mask_to_memory(sam, feats, mask).obj_ptr.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sam.sam_mask_decoder.parameters())
    sam.zero_grad()
    with pytest.raises(ValueError, match="mask"):
        mask_to_memory(sam, feats, mask[..., :64, :64])
