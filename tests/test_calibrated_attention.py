"""Memory assembly and Support-Calibrated Memory Attention (reference §1.6, §1.7, W2)."""
import copy
import math

import pytest
import torch
from sam2.modeling.position_encoding import apply_rotary_enc

from fss_sam2.backbones.sam2_model import build_sam2_model
from fss_sam2.modules.calibrated_attention import (
    calibrated_memory_attention,
    calibration_bias,
    support_calibrated_attention,
)
from fss_sam2.modules.memory_assembly import assemble_memory

GRID = 8  # tiny-toy at 128 px -> 8x8 memory grid


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam2_model("tiny-toy", image_size=128)


def random_episode(sam, B, K, grid=GRID, seed=0):
    """Random mask_memory-like outputs, assembled, plus a query feature and support masks."""
    g = torch.Generator().manual_seed(seed)
    C, D = sam.mem_dim, sam.hidden_dim
    sup, sup_pos = torch.randn(B, K, C, grid, grid, generator=g), torch.randn(B, K, C, grid, grid, generator=g)
    qry, qry_pos = torch.randn(B, C, grid, grid, generator=g), torch.randn(B, C, grid, grid, generator=g)
    sup_ptr, qry_ptr = torch.randn(B, K, D, generator=g), torch.randn(B, D, generator=g)
    memory, memory_pos, n_ptr = assemble_memory(sam, sup, sup_pos, qry, qry_pos, sup_ptr, qry_ptr)
    curr = torch.randn(grid * grid, B, D, generator=g)
    curr_pos = torch.randn(grid * grid, B, D, generator=g)
    mask = (torch.rand(B, K, 1, grid, grid, generator=g) > 0.6).float()
    return dict(curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos, n_ptr=n_ptr,
                mask=mask, parts=(sup, sup_pos, qry, qry_pos, sup_ptr, qry_ptr))


def run(sam, ep, **kw):
    return calibrated_memory_attention(
        sam.memory_attention, ep["curr"], ep["curr_pos"], ep["memory"], ep["memory_pos"], ep["n_ptr"],
        kw.pop("support_mask", ep["mask"]), **kw,
    )


# ---------------------------------------------------------------- naive references (§1.7)


def naive_calibration(k, mask):
    """c (B,H,1,N): the S = mask.shape[1] first frames of k are supports, the next is the query."""
    B, H = k.shape[:2]
    S, N = mask.shape[1], mask[0, 0].numel()
    out = torch.zeros(B, H, 1, N)
    for b in range(B):
        m = mask[b].reshape(S, N)  # row-major grid -> token index
        for h in range(H):
            kq = k[b, h, S * N:(S + 1) * N]
            for i in range(S):
                ks = k[b, h, i * N:(i + 1) * N]
                proto = (ks * m[i][:, None]).sum(0) / (m[i].sum() + 5e-4)
                cos = (kq @ proto) / (kq.norm(dim=1).clamp_min(1e-7) * proto.norm().clamp_min(1e-7))
                out[b, h, 0] += (cos - cos.min()) / (cos.max() - cos.min() + 1e-7) / S
    return out.detach()


def naive_kernel(q, k, v, mask, scale=10.0, detach_bias=True):
    """Loops over batch, head and query row; S = mask.shape[1] support frames come first."""
    B, H, n, d = q.shape
    S, N = mask.shape[1], n
    calib = naive_calibration(k, mask)
    outs = []
    for b in range(B):
        out_b = []
        for h in range(H):
            kk, vv, c = k[b, h], v[b, h], calib[b, h, 0]
            k2 = torch.cat([sum(kk[i * N:(i + 1) * N] for i in range(S)) / S, kk[S * N:]])
            v2 = torch.cat([sum(vv[i * N:(i + 1) * N] for i in range(S)) / S, vv[S * N:]])
            rows = []
            for r in range(n):
                a = (k2 @ q[b, h, r]) / math.sqrt(d)
                aq = a[N:2 * N]
                a_hat = (aq - aq.min()) / (aq.max() - aq.min() + 1e-7)
                bias = scale * torch.minimum(a_hat + c - 1, torch.zeros(()))
                if detach_bias:
                    bias = bias.detach()
                a = torch.cat([a[:N], aq + bias, a[2 * N:]])
                rows.append(torch.softmax(a, dim=0) @ v2)
            out_b.append(torch.stack(rows))
        outs.append(torch.stack(out_b))
    return torch.stack(outs), calib  # (B,H,n,d), (B,H,1,N)


def naive_memory_attention(ma, curr, curr_pos, memory, memory_pos, n_ptr, mask):
    """Sequence-first re-statement of the calibrated memory attention (eval mode)."""
    x = (curr + 0.1 * curr_pos).transpose(0, 1)  # (B,n,256)
    pos = curr_pos.transpose(0, 1)
    mem, keys = memory.transpose(0, 1), (memory + memory_pos).transpose(0, 1)  # (B,L,64)
    for layer in ma.layers:
        x = layer._forward_sa(x, pos)
        attn = layer.cross_attn_image
        H = attn.num_heads

        def heads(t):  # (B,T,C) -> (B,H,T,C/H)
            return t.reshape(t.shape[0], t.shape[1], H, -1).permute(0, 2, 1, 3)

        q = heads(attn.q_proj(layer.norm2(x)))
        k = heads(attn.k_proj(keys))
        v = heads(attn.v_proj(mem))
        L = k.shape[2]
        q, k_rot = apply_rotary_enc(q, k[:, :, :L - n_ptr], attn.freqs_cis, repeat_freqs_k=True)
        k = torch.cat([k_rot, k[:, :, L - n_ptr:]], dim=2)
        out, _ = naive_kernel(q, k, v, mask)
        out = out.permute(0, 2, 1, 3).reshape(x.shape)
        x = x + attn.out_proj(out)
        x = x + layer.linear2(torch.relu(layer.linear1(layer.norm3(x))))
    return ma.norm(x).transpose(0, 1)


def random_qkv(B=2, H=2, side=4, d=8, frames=3, n_ptr=12, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    N = side * side
    L = N * frames + n_ptr
    q = torch.randn(B, H, N, d, generator=g)
    k = torch.randn(B, H, L, d, generator=g)
    v = torch.randn(B, H, L, d, generator=g)
    mask = (torch.rand(B, frames - 1, 1, side, side, generator=g) > 0.5).float()
    return [t.requires_grad_(grad) for t in (q, k, v)] + [mask]


# ---------------------------------------------------------------- memory assembly (§1.6)


def test_assemble_memory_layout(sam):
    B, K = 2, 3
    ep = random_episode(sam, B, K)
    sup, sup_pos, qry, qry_pos, sup_ptr, qry_ptr = ep["parts"]
    memory, memory_pos, n_ptr = ep["memory"], ep["memory_pos"], ep["n_ptr"]
    hw, C = GRID * GRID, sam.mem_dim
    assert n_ptr == 4 * (K + 1)
    assert memory.shape == memory_pos.shape == (hw * (K + 1) + n_ptr, B, C)
    tpos = sam.maskmem_tpos_enc[sam.num_maskmem - 1].flatten()
    y, x = 3, 5
    for f in range(K + 1):
        feat = sup[:, f] if f < K else qry
        pos = sup_pos[:, f] if f < K else qry_pos
        token = f * hw + y * GRID + x
        assert torch.equal(memory[token], feat[:, :, y, x])
        assert torch.allclose(memory_pos[token], pos[:, :, y, x] + tpos)
        ptr = sup_ptr[:, f] if f < K else qry_ptr
        for j in range(4):  # pointer of frame f, sub-token j = channels j*64:(j+1)*64
            assert torch.equal(memory[hw * (K + 1) + 4 * f + j], ptr[:, j * C:(j + 1) * C])
    assert not memory_pos[hw * (K + 1):].any()


def test_assembly_and_uncalibrated_match_upstream_video_path(sam):
    """K supports + query memory as K+1 conditioning frames of upstream SAM 2's tracker."""
    B, K = 2, 2
    ep = random_episode(sam, B, K, seed=1)
    sup, sup_pos, qry, qry_pos, sup_ptr, qry_ptr = ep["parts"]
    frames = [(sup[:, i], sup_pos[:, i], sup_ptr[:, i]) for i in range(K)] + [(qry, qry_pos, qry_ptr)]
    cond = {t: {"maskmem_features": m, "maskmem_pos_enc": [p], "obj_ptr": o} for t, (m, p, o) in enumerate(frames)}
    with torch.no_grad():
        upstream = sam._prepare_memory_conditioned_features(
            frame_idx=K + 1, is_init_cond_frame=False, current_vision_feats=[ep["curr"]],
            current_vision_pos_embeds=[ep["curr_pos"]], feat_sizes=[(GRID, GRID)],
            output_dict={"cond_frame_outputs": cond, "non_cond_frame_outputs": {}}, num_frames=K + 2,
        )  # (B,256,h,w)
        ours = run(sam, ep, calibrate=False)
    assert torch.equal(ours.permute(1, 2, 0).reshape(upstream.shape), upstream)


def test_support_only_memory(sam):
    """No query memory (naive "support as memory" ablation): K frames, 4K pointer tokens."""
    B, K = 2, 2
    ep = random_episode(sam, B, K, seed=15)
    sup, sup_pos, _, _, sup_ptr, _ = ep["parts"]
    memory, memory_pos, n_ptr = assemble_memory(sam, sup, sup_pos, None, None, sup_ptr, None)
    hw = GRID * GRID
    assert n_ptr == 4 * K and memory.shape == (hw * K + n_ptr, B, sam.mem_dim)
    assert torch.equal(memory[: hw * K], ep["memory"][: hw * K])
    assert torch.equal(memory[hw * K:], ep["memory"][hw * (K + 1): hw * (K + 1) + n_ptr])
    assert torch.equal(memory_pos[: hw * K], ep["memory_pos"][: hw * K])
    args = (sam.memory_attention, ep["curr"], ep["curr_pos"], memory, memory_pos, n_ptr)
    with torch.no_grad():
        ref = sam.memory_attention(ep["curr"], memory, ep["curr_pos"], memory_pos, n_ptr)
        ours, maps = calibrated_memory_attention(*args, num_shots=K, calibrate=False, return_maps=True)
    assert torch.equal(ours, ref) and maps.query_attention == []
    with pytest.raises(ValueError, match="needs the query-memory frame"):
        calibrated_memory_attention(*args, ep["mask"], num_shots=K)


# ---------------------------------------------------------------- calibrate=False parity


@pytest.mark.parametrize("B,K", [(1, 1), (2, 3)])
def test_uncalibrated_is_bit_identical_to_upstream(sam, B, K):
    ep = random_episode(sam, B, K, seed=2)
    with torch.no_grad():
        ref = sam.memory_attention(ep["curr"], ep["memory"], ep["curr_pos"], ep["memory_pos"], ep["n_ptr"])
        ours = run(sam, ep, calibrate=False)
        no_mask = run(sam, ep, calibrate=False, support_mask=None)
    assert ours.shape == (GRID * GRID, B, 256)
    assert torch.equal(ours, ref)
    assert torch.equal(no_mask, ref)


def test_uncalibrated_is_bit_identical_on_small_32x32():
    torch.manual_seed(0)
    small = build_sam2_model("small", image_size=512)  # 4 layers, FFN 2048, 32x32 grid
    assert len(small.memory_attention.layers) == 4
    ep = random_episode(small, 1, 1, grid=32, seed=3)
    with torch.no_grad():
        ref = small.memory_attention(ep["curr"], ep["memory"], ep["curr_pos"], ep["memory_pos"], ep["n_ptr"])
        ours = run(small, ep, calibrate=False)
        calibrated = run(small, ep)
    assert torch.equal(ours, ref)
    assert not torch.allclose(calibrated, ref, atol=1e-3)


# ---------------------------------------------------------------- SCMA math vs naive loops


@pytest.mark.parametrize("frames", [2, 4])
def test_kernel_matches_naive_reference(frames):
    q, k, v, mask = random_qkv(frames=frames, n_ptr=4 * frames)
    out, _, calib = support_calibrated_attention(q, k, v, mask)
    ref, ref_calib = naive_kernel(q, k, v, mask)
    assert out.shape == q.shape and calib.shape == (2, 2, 1, 16)
    torch.testing.assert_close(calib, ref_calib, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("K,mode", [(1, "mean"), (3, "mean"), (3, "official")])
def test_memory_attention_matches_naive_reference(sam, K, mode):
    ep = random_episode(sam, 1, K, seed=4)
    mask = ep["mask"] if mode == "mean" else ep["mask"][:, :1]
    with torch.no_grad():
        ours = run(sam, ep, kshot_calibration=mode)
        ref = naive_memory_attention(sam.memory_attention, ep["curr"], ep["curr_pos"], ep["memory"],
                                     ep["memory_pos"], ep["n_ptr"], mask)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_bias_range_detached_and_formula():
    g = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(2, 1, 16, 16, generator=g)).requires_grad_()
    calib = torch.rand(2, 1, 1, 16, generator=g)
    calib[..., 0] = 1.0
    calib[..., 1] = 0.0
    bias = calibration_bias(logits, calib, 10.0)
    assert not bias.requires_grad
    assert bias.min() >= -10.0 and bias.max() <= 0.0 and bias.min() < -5.0
    lo, hi = logits.amin(-1, keepdim=True), logits.amax(-1, keepdim=True)
    a_hat = (logits - lo) / (hi - lo + 1e-7)
    torch.testing.assert_close(bias[..., 1], 10 * (a_hat[..., 1] - 1).detach())  # c = 0: 10*(Â-1)
    row_max = logits.argmax(-1, keepdim=True)
    assert not bias.gather(-1, row_max)[calib.expand_as(logits).gather(-1, row_max) == 1].any()
    torch.testing.assert_close(calibration_bias(logits, calib, 2.5), bias / 4)


@pytest.mark.parametrize("mode", ["mean", "official"])
def test_bias_only_on_calibrated_block(mode):
    """softmax(A + bias) / softmax(A) is row-constant outside the biased block, exp(bias) inside."""
    K, side = 3, 4
    N = side * side
    q, k, v, mask = random_qkv(side=side, frames=K + 1, n_ptr=4 * (K + 1), seed=6)
    S = K if mode == "mean" else 1
    _, probs, _ = support_calibrated_attention(q, k, v, mask[:, :S], return_probs=True)
    if S > 1:  # the keys the kernel attends: [mean support, query, pointers]
        k = torch.cat([k[:, :, :S * N].unflatten(2, (S, N)).mean(2), k[:, :, S * N:]], dim=2)
    plain = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    assert probs.shape == plain.shape == (2, 2, N, k.shape[2])
    ratio = probs / plain
    outside = torch.cat([ratio[..., :N], ratio[..., 2 * N:]], dim=-1)
    norm = outside[..., :1]
    torch.testing.assert_close(outside, norm.expand_as(outside), rtol=1e-4, atol=0)
    exp_bias = ratio[..., N:2 * N] / norm
    assert exp_bias.max() <= 1 + 1e-4 and exp_bias.min() >= math.exp(-10) * (1 - 1e-4)
    assert exp_bias.min() < 0.5  # the block really is biased


def test_gradients_flow_to_projections_not_through_bias(sam):
    q, k, v, mask = random_qkv(frames=3, n_ptr=12, seed=7, grad=True)
    w = torch.randn(2, 2, 16, 8, generator=torch.Generator().manual_seed(8))
    grads = {}
    for name, fn in [("ours", lambda: support_calibrated_attention(q, k, v, mask)[0]),
                     ("detached", lambda: naive_kernel(q, k, v, mask)[0]),
                     ("attached", lambda: naive_kernel(q, k, v, mask, detach_bias=False)[0])]:
        grads[name] = torch.autograd.grad((fn() * w).sum(), (q, k, v))
    for ours, ref in zip(grads["ours"], grads["detached"]):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert (grads["ours"][0] - grads["attached"][0]).abs().max() > 1e-3  # the test can fail

    ep = random_episode(sam, 2, 2, seed=9)
    sam.memory_attention.zero_grad()
    run(sam, ep).square().mean().backward()
    for layer in sam.memory_attention.layers:
        attn = layer.cross_attn_image
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    sam.memory_attention.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- K-shot modes (W2)


def test_one_shot_official_equals_mean(sam):
    ep = random_episode(sam, 2, 1, seed=10)
    with torch.no_grad():
        mean = run(sam, ep, kshot_calibration="mean")
        official = run(sam, ep, kshot_calibration="official")
        plain = run(sam, ep, calibrate=False)
    assert torch.equal(mean, official)
    assert not torch.allclose(mean, plain, atol=1e-3)


def test_kshot_official_reproduces_the_misread_layout(sam):
    K, N = 3, GRID * GRID
    ep = random_episode(sam, 2, K, seed=11)
    with torch.no_grad():
        mean, mean_maps = run(sam, ep, return_maps=True)
        official, maps = run(sam, ep, kshot_calibration="official", return_maps=True)
        # only the first support mask reaches the official attention
        other = ep["mask"].clone()
        other[:, 1:] = 1 - other[:, 1:]
        assert torch.equal(run(sam, ep, support_mask=other, kshot_calibration="official"), official)
        first = ep["mask"].clone()
        first[:, :1] = 1 - first[:, :1]
        assert not torch.allclose(run(sam, ep, support_mask=first, kshot_calibration="official"), official)
        assert not torch.allclose(mean, official, atol=1e-3)

        # layer 0 sees the raw memory: official c compares support 1's prototype with
        # support 2's keys (the misread "query" block); mean c averages K maps on the real query
        attn = sam.memory_attention.layers[0].cross_attn_image
        B = 2
        k = attn.k_proj((ep["memory"] + ep["memory_pos"]).transpose(0, 1))
        k = k.reshape(B, -1, attn.num_heads, k.shape[-1] // attn.num_heads).transpose(1, 2)
        n_rope = k.shape[2] - ep["n_ptr"]
        q0 = torch.zeros(B, attn.num_heads, N, k.shape[-1])
        _, k_rot = apply_rotary_enc(q0, k[:, :, :n_rope], attn.freqs_cis, repeat_freqs_k=True)
        c_official = naive_calibration(k_rot, ep["mask"][:, :1])
        c_mean = naive_calibration(k_rot, ep["mask"])
    torch.testing.assert_close(maps.calibration[0], c_official, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean_maps.calibration[0], c_mean, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- maps, training, errors


def test_return_maps_do_not_change_output(sam):
    K, N = 2, GRID * GRID
    ep = random_episode(sam, 2, K, seed=12)
    with torch.no_grad():
        out = run(sam, ep)
        out_maps, maps = run(sam, ep, return_maps=True)
        plain, plain_maps = run(sam, ep, calibrate=False, return_maps=True)
        ref = sam.memory_attention(ep["curr"], ep["memory"], ep["curr_pos"], ep["memory_pos"], ep["n_ptr"])
    assert torch.equal(out, out_maps) and torch.equal(plain, ref)
    n_layers = len(sam.memory_attention.layers)
    assert len(maps.calibration) == len(maps.query_attention) == n_layers
    assert plain_maps.calibration == [] and len(plain_maps.query_attention) == n_layers
    for c, a, p in zip(maps.calibration, maps.query_attention, plain_maps.query_attention):
        assert c.shape == (2, 1, 1, N) and c.min() >= 0 and c.max() <= 1
        assert a.shape == p.shape == (2, 1, N, N)
        assert a.min() >= 0 and a.sum(-1).max() <= 1 + 1e-5
        assert p.min() >= 0 and p.sum(-1).max() <= 1 + 1e-5
        assert not a.requires_grad


def test_attention_weights_keep_grad_and_give_the_same_output(sam):
    ep = random_episode(sam, 2, 1, seed=13)
    memory = ep["memory"].clone().requires_grad_(True)
    plain = run(sam, {**ep, "memory": memory}, calibrate=False)
    out, maps = run(sam, {**ep, "memory": memory}, calibrate=False, return_maps=True, attention_weights=True)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)  # explicit softmax vs the fused kernel
    L = ep["memory"].shape[0]
    assert len(maps.weights) == len(sam.memory_attention.layers)
    for w in maps.weights:
        assert w.shape == (2, 1, GRID * GRID, L) and w.requires_grad
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 1, GRID * GRID))
    maps.weights[-1][..., :GRID * GRID].sum().backward()  # a loss on the weights reaches the memory
    assert memory.grad is not None and memory.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="attention_weights needs calibrate=False"):
        run(sam, ep, calibrate=True, return_maps=True, attention_weights=True)


def test_train_mode_dropout(sam):
    ep = random_episode(sam, 2, 2, seed=13)
    ma = copy.deepcopy(sam.memory_attention).train()
    args = (ep["curr"], ep["curr_pos"], ep["memory"], ep["memory_pos"], ep["n_ptr"])

    def seeded(seed, fn):
        torch.manual_seed(seed)
        return fn()

    # uncalibrated: same dropout draws as upstream, in the same order
    ref = seeded(1, lambda: ma(ep["curr"], ep["memory"], ep["curr_pos"], ep["memory_pos"], ep["n_ptr"]))
    assert torch.equal(seeded(1, lambda: calibrated_memory_attention(ma, *args, calibrate=False)), ref)
    # calibrated: only the cross-attention's attention dropout left on -> still stochastic
    for layer in ma.layers:
        layer.self_attn.dropout_p = 0.0
        for m in (layer.dropout, layer.dropout1, layer.dropout2, layer.dropout3):
            m.p = 0.0
    a = seeded(1, lambda: calibrated_memory_attention(ma, *args, ep["mask"]))
    b = seeded(1, lambda: calibrated_memory_attention(ma, *args, ep["mask"]))
    c = seeded(2, lambda: calibrated_memory_attention(ma, *args, ep["mask"]))
    with torch.no_grad():
        eval_out = calibrated_memory_attention(ma.eval(), *args, ep["mask"])
    assert a.shape == eval_out.shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, eval_out)


def test_invalid_inputs_are_named(sam):
    ep = random_episode(sam, 2, 2, seed=14)
    ma = sam.memory_attention
    args = (ma, ep["curr"], ep["curr_pos"], ep["memory"], ep["memory_pos"], ep["n_ptr"])
    with pytest.raises(ValueError, match="support_mask has shape"):
        calibrated_memory_attention(*args, ep["mask"][:, :1])
    with pytest.raises(ValueError, match="calibrate=True needs support_mask"):
        calibrated_memory_attention(*args, None)
    with pytest.raises(ValueError, match="num_shots=5"):
        calibrated_memory_attention(*args, ep["mask"], num_shots=5)
    with pytest.raises(ValueError, match="memory length"):
        calibrated_memory_attention(*args[:3], ep["memory"][:-1], ep["memory_pos"][:-1], ep["n_ptr"], ep["mask"])
    with pytest.raises(ValueError, match="kshot_calibration"):
        calibrated_memory_attention(*args, ep["mask"], kshot_calibration="first")
    with pytest.raises(ValueError, match="square grid"):
        calibrated_memory_attention(ma, ep["curr"][:-1], ep["curr_pos"][:-1], *args[3:], ep["mask"])
    with pytest.raises(ValueError, match="curr_pos"):
        calibrated_memory_attention(ma, ep["curr"], None, *args[3:], ep["mask"])
    sup, sup_pos, qry, qry_pos, sup_ptr, qry_ptr = ep["parts"]
    with pytest.raises(ValueError, match="support_ptr"):
        assemble_memory(sam, sup, sup_pos, qry, qry_pos, sup_ptr[:, :1], qry_ptr)
    with pytest.raises(ValueError, match="all given or all None"):
        assemble_memory(sam, sup, sup_pos, qry, None, sup_ptr, qry_ptr)


# ---------------------------------------------------------------- fused kernel (SDPA + bias mask)
# `fused=True` / `fused_kernel=True` / `FSSAM(fused_attention=True)`: the bias as an additive mask
# of F.scaled_dot_product_attention. Equal to the explicit kernel up to rounding, never bit for
# bit; the default (explicit) path must stay bit-identical. Tolerances below, with the max abs
# differences measured on CPU (torch 2.13, fp32 unless noted).
# fp32: measured max abs differences <= 3.3e-7 (random tensors, small and paper shapes, outputs
# and gradients), <= 8.3e-7 (tiny-toy memory attention, outputs up to ~5), <= 1.9e-7 (FSSAM logits)
FUSED_ATOL = FUSED_RTOL = 1e-5


def paper_qkv(K, seed=0, grad=False):
    """Paper shapes: n = N = 1024 (32x32 grid), d = 256, 1 head, K supports + query memory +
    4(K+1) pointer tokens (L' = 2N + 4(K+1) after the shot averaging)."""
    g = torch.Generator().manual_seed(seed)
    N, d, L = 1024, 256, 1024 * (K + 1) + 4 * (K + 1)
    q, k, v = (torch.randn(1, 1, T, d, generator=g) for T in (N, L, L))
    mask = (torch.rand(1, K, 1, 32, 32, generator=g) > 0.5).float()
    return [t.requires_grad_(grad) for t in (q, k, v)] + [mask]


@pytest.mark.parametrize("frames,S", [(2, 1), (6, 5), (6, 1)])  # 1-shot; 5-shot mean; 5-shot official
def test_fused_kernel_matches_explicit(frames, S):
    q, k, v, mask = random_qkv(frames=frames, n_ptr=4 * frames, seed=20)
    # measured max abs difference 3.3e-7 (1-shot), 2.4e-7 (5-shot mean), 1.8e-7 (5-shot official)
    out, probs, calib = support_calibrated_attention(q, k, v, mask[:, :S])
    fused, fused_probs, fused_calib = support_calibrated_attention(q, k, v, mask[:, :S], fused=True)
    assert probs is None and fused_probs is None and torch.equal(calib, fused_calib)
    assert not torch.equal(fused, out)  # a different kernel, not the explicit one again
    torch.testing.assert_close(fused, out, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    ref, _ = naive_kernel(q, k, v, mask[:, :S])
    torch.testing.assert_close(fused, ref, atol=FUSED_ATOL, rtol=FUSED_RTOL)


@pytest.mark.parametrize("K", [1, 5])
def test_fused_kernel_matches_explicit_at_paper_shapes(K):
    """fp32 max abs difference measured: 1.0e-7 (K=1), 1.2e-7 (K=5), outputs up to ~0.2;
    gradients <= 2.2e-7 (grads up to ~0.23). bf16 autocast: fused vs explicit 1.5e-3 (K=1) /
    2.0e-3 (K=5), while explicit bf16 vs fp32 is 1.8e-3 / 2.8e-3 and fused bf16 vs fp32
    1.8e-3 / 1.4e-3."""
    q, k, v, mask = paper_qkv(K, seed=21, grad=True)
    out = support_calibrated_attention(q, k, v, mask)[0]
    fused = support_calibrated_attention(q, k, v, mask, fused=True)[0]
    torch.testing.assert_close(fused, out, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    w = torch.randn(q.shape, generator=torch.Generator().manual_seed(22))
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    fused_grads = torch.autograd.grad((fused * w).sum(), (q, k, v))
    for a, b in zip(fused_grads, grads):  # the bias is detached in both
        torch.testing.assert_close(a, b, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))
        out16 = support_calibrated_attention(qb, kb, vb, mask)[0].float()
        fused16 = support_calibrated_attention(qb, kb, vb, mask, fused=True)[0].float()
    assert fused16.dtype == out16.dtype == torch.float32
    torch.testing.assert_close(fused16, out16, atol=1e-2, rtol=0)  # bf16: 8 bits of mantissa
    # and the fused bf16 kernel is no further from fp32 than the explicit bf16 one (x2)
    assert (fused16 - out).abs().max() <= 2 * (out16 - out).abs().max()


def test_fused_gradients_match_explicit_and_stay_detached():
    q, k, v, mask = random_qkv(frames=3, n_ptr=12, seed=7, grad=True)
    w = torch.randn(2, 2, 16, 8, generator=torch.Generator().manual_seed(8))
    explicit = torch.autograd.grad((support_calibrated_attention(q, k, v, mask)[0] * w).sum(), (q, k, v))
    fused = torch.autograd.grad((support_calibrated_attention(q, k, v, mask, fused=True)[0] * w).sum(), (q, k, v))
    attached = torch.autograd.grad((naive_kernel(q, k, v, mask, detach_bias=False)[0] * w).sum(), (q, k, v))
    for a, b in zip(fused, explicit):  # measured <= 4.2e-7
        torch.testing.assert_close(a, b, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    assert (fused[0] - attached[0]).abs().max() > 1e-3  # no gradient through the bias


def test_fused_kernel_falls_back_to_explicit_for_probs():
    q, k, v, mask = random_qkv(frames=4, n_ptr=16, seed=23)
    out, probs, calib = support_calibrated_attention(q, k, v, mask, return_probs=True)
    fused, fused_probs, fused_calib = support_calibrated_attention(q, k, v, mask, return_probs=True, fused=True)
    assert torch.equal(fused, out) and torch.equal(fused_probs, probs) and torch.equal(fused_calib, calib)


def test_fused_kernel_dropout_is_unbiased():
    """Dropout > 0: the fused kernel draws its own masks (SDPA's), so no bit match with the
    explicit F.dropout; both are unbiased: the mean over M draws is the dropout-free output
    within 6 standard errors (deterministic under the seed)."""
    q, k, v, mask = random_qkv(B=1, H=1, frames=2, n_ptr=8, seed=24)
    M = 4000
    qm, km, vm, mm = (t.expand(M, *t.shape[1:]).contiguous() for t in (q, k, v, mask))
    ref = support_calibrated_attention(q, k, v, mask)[0]
    torch.manual_seed(0)
    for fused in (False, True):
        draws = support_calibrated_attention(qm, km, vm, mm, dropout_p=0.2, fused=fused)[0]  # (M,1,n,d)
        assert not torch.allclose(draws[0], ref[0], atol=1e-3)
        err = (draws.mean(0) - ref[0]).abs()
        assert (err <= 6 * draws.std(0) / math.sqrt(M) + 1e-6).all(), (fused, err.max())
    torch.manual_seed(1)
    a = support_calibrated_attention(q, k, v, mask, dropout_p=0.2, fused=True)[0]
    torch.manual_seed(1)
    b = support_calibrated_attention(q, k, v, mask, dropout_p=0.2, fused=True)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("K,mode", [(1, "mean"), (5, "mean"), (5, "official")])
def test_fused_memory_attention_matches_explicit(sam, K, mode):
    """Eval (dropout 0), tiny-toy: fp32 max abs difference measured 8.3e-7 (K=1) / 7.2e-7 (K=5,
    both modes) on outputs up to ~5 (atol/rtol 1e-5); bf16 autocast: fused vs explicit
    7.7e-3 / 7.8e-3 / 8.1e-3, while the explicit bf16 path itself is 6.5e-3 / 7.2e-3 / 6.6e-3
    from fp32 (atol 2e-2)."""
    ep = random_episode(sam, 2, K, seed=25)
    with torch.no_grad():
        out = run(sam, ep, num_shots=K, kshot_calibration=mode)
        fused = run(sam, ep, num_shots=K, kshot_calibration=mode, fused_kernel=True)
        out_maps, maps = run(sam, ep, num_shots=K, kshot_calibration=mode, return_maps=True, fused_kernel=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out16 = run(sam, ep, num_shots=K, kshot_calibration=mode).float()
            fused16 = run(sam, ep, num_shots=K, kshot_calibration=mode, fused_kernel=True).float()
    torch.testing.assert_close(fused, out, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    assert torch.equal(out_maps, out)  # maps requested: the explicit kernel, bit for bit
    assert len(maps.weights) == len(sam.memory_attention.layers)
    torch.testing.assert_close(fused16, out16, atol=2e-2, rtol=0)
    assert (fused16 - out).abs().max() <= 2 * (out16 - out).abs().max()


def test_fused_memory_attention_gradients_and_train_mode(sam):
    ep = random_episode(sam, 2, 2, seed=26)
    ma = copy.deepcopy(sam.memory_attention)
    params = [p for p in ma.parameters() if p.requires_grad]
    args = (ep["curr"], ep["curr_pos"], ep["memory"], ep["memory_pos"], ep["n_ptr"], ep["mask"])
    grads = {}
    for fused in (False, True):  # eval mode: dropout 0, gradients on
        out = calibrated_memory_attention(ma.eval(), *args, fused_kernel=fused)
        grads[fused] = torch.autograd.grad(out.square().mean(), params)
    for a, b in zip(grads[True], grads[False]):  # measured 1.9e-9 (grads up to ~1.5e-2)
        torch.testing.assert_close(a, b, atol=FUSED_ATOL, rtol=FUSED_RTOL)
    ma.train()  # attention dropout through SDPA: seeded, stochastic, differs from eval

    def seeded(seed):
        torch.manual_seed(seed)
        return calibrated_memory_attention(ma, *args, fused_kernel=True)

    a, b, c = seeded(1), seeded(1), seeded(2)
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.allclose(a, c)


def test_fssam_fused_attention_matches_and_default_is_unchanged():
    """FSSAM(fused_attention=True) vs the default on the tiny toy, 1- and 5-shot, both K-shot
    modes: logits max abs difference measured 1.8e-7 / 1.8e-7 (1-shot) and 1.5e-7 / 1.9e-7
    (5-shot mean / official), logits up to ~0.4; bf16 autocast (1-shot): 3.4e-3, the explicit
    bf16 model itself 4.2e-3 from fp32 (atol 2e-2). The default model is bit-identical to one
    built without the option."""
    from fss_sam2 import load_model
    from fss_sam2.model import FSSAM

    torch.manual_seed(0)
    model = load_model(sam2="tiny-toy", dino="tiny-toy", image_size=128)
    base = {"sam2": model.sam2, "dino": model.prompt_generator.dino}
    assert model.fused_attention is False
    g = torch.Generator().manual_seed(27)
    for k in (1, 5):
        query = torch.rand(2, 3, 128, 128, generator=g) * 255
        supports = torch.rand(2, k, 3, 128, 128, generator=g) * 255
        masks = torch.zeros(2, k, 128, 128, dtype=torch.long)
        masks[..., 32:96, 40:100] = 1
        for mode in ("mean", "official"):
            with torch.no_grad():
                ref = FSSAM(**base, kshot_calibration=mode).eval()(query, supports, masks)
                off = FSSAM(**base, kshot_calibration=mode, fused_attention=False).eval()(query, supports, masks)
                fused_model = FSSAM(**base, kshot_calibration=mode, fused_attention=True).eval()
                fused = fused_model(query, supports, masks)
            assert torch.equal(off, ref)
            torch.testing.assert_close(fused, ref, atol=FUSED_ATOL, rtol=FUSED_RTOL)
            if k == 1 and mode == "mean":
                assert torch.equal(model(query, supports, masks), ref)  # load_model's default
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    ref16 = model(query, supports, masks).float()
                    fused16 = fused_model(query, supports, masks).float()
                torch.testing.assert_close(fused16, ref16, atol=2e-2, rtol=0)
                # trace needs the weights: the explicit kernel, so the default model's logits
                assert torch.equal(fused_model.trace(query, supports, masks).logits, ref)
