"""Support-Calibrated Memory Attention (SCMA; paper, "Support-Calibrated Memory Attention").

Runs a stock ``sam2`` ``MemoryAttention`` layer by layer with its own weights: self-attention
through ``layer._forward_sa``, then our cross-attention (same projections, heads, RoPE,
dropout, ``out_proj``), then the layer's FFN, then the final norm. With ``calibrate=False``
this is upstream ``MemoryAttention.forward`` op for op (bit-identical in eval mode).

With calibration, in every layer, after projection and RoPE (h = w = grid side, N = h*w):
  1. per support frame i, prototype p_i = masked average of its keys (as an h x w map per head)
     under the support mask (the model's helper, which the release's SCMA lacks:
     docs/deviations.md, "Masked average in SCMA"); c_i = min-max over the N query-memory
     keys of cos(p_i, k_q); c = mean_i c_i, (B,heads,1,N);
  2. support keys/values are averaged over shots -> keys [mean support, query, pointers];
  3. logits A = q k^T / sqrt(d); on the query-memory block only, bias = s * min(Â + c - 1, 0)
     (Â: row-wise min-max of that block), detached, in [-s, 0];
  4. softmax, attention dropout (training), out = attn v.

``kshot_calibration``: "mean" (default) is the intended K-shot rule above. "official" is how
the released 5-shot weights were trained (docs/deviations.md, "K-shot calibration"): only
the first support mask reaches the attention, so it believes K = 1 and reads the layout
[sup_1 | sup_2 | rest]: sup_1 is the support block (no averaging), sup_2 is calibrated as if
it were the query memory, and supports 3..K, the real query memory and all pointers form the
unbiased tail. For K = 1 the two modes are identical.

``fused`` / ``fused_kernel`` (off by default; the default path is the release's explicit one and
stays bit-identical): only the query-memory logits block A_q = q k_q^T / sqrt(d) (n x N) is
computed, under no_grad, for the bias (it needs A_q's row-wise min-max); the bias is scattered
into an additive float mask (B,H,n,L'), zero outside the query-memory block, and
``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=...)`` does steps 3-4. Equal
to the explicit path up to rounding (fp32 on CPU: max abs difference ~1e-7 at the paper's
shapes; tests/test_calibrated_attention.py states the tolerances), with the same gradients (the
bias is detached in both). Attention dropout (training) draws a different mask than the
explicit ``F.dropout`` on the probabilities: same distribution, not the same bits. When the
softmax weights are wanted (``return_probs`` / ``return_maps``, for figures) the explicit path
runs instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention

from fss_sam2.modules.common import cosine_map, masked_average, minmax_normalize

KSHOT_MODES = ("mean", "official")


@dataclass
class AttentionMaps:
    """Per-layer maps for figures (detached). One entry per memory-attention layer."""

    # (B,heads,1,N) calibration map c; empty when calibrate=False
    calibration: list[torch.Tensor] = field(default_factory=list)
    # (B,heads,N,N) softmax weights each query pixel gives the real query-memory frame;
    # empty for a support-only memory
    query_attention: list[torch.Tensor] = field(default_factory=list)
    # (B,heads,N,L) every softmax weight over the attended keys (L' keys once SCMA averages
    # the supports); detached, except with `attention_weights=True` (plain attention)
    weights: list[torch.Tensor] = field(default_factory=list)


def calibration_map(
    support_keys: torch.Tensor,  # (B,H,S,N,d) RoPE-rotated keys of S support frames
    query_keys: torch.Tensor,  # (B,H,N,d) keys of the query-memory frame
    support_mask: torch.Tensor,  # (B,S,1,h,w), h*w = N
) -> torch.Tensor:
    """c = mean over shots of min-max(cos(masked-average support key, query keys)): (B,H,1,N)."""
    B, H, S, N, d = support_keys.shape
    h, w = support_mask.shape[-2:]
    feat = support_keys.permute(0, 2, 1, 4, 3).reshape(B * S * H, d, h, w)
    mask = support_mask.to(feat.dtype)[:, :, None].expand(B, S, H, 1, h, w).reshape(B * S * H, 1, h, w)
    proto = masked_average(feat, mask)  # (B*S*H,d,1,1)
    keys = query_keys.transpose(-2, -1)[:, None].expand(B, S, H, d, N).reshape(B * S * H, d, h, w)
    sim = minmax_normalize(cosine_map(keys, proto), dims=(2, 3))  # (B*S*H,1,h,w)
    return sim.reshape(B, S, H, N).mean(dim=1).unsqueeze(2)


@torch.no_grad()
def calibration_bias(query_logits: torch.Tensor, calib: torch.Tensor, bias_scale: float) -> torch.Tensor:
    """bias_scale * min(rowwise_minmax(A_q) + c - 1, 0), no gradient: (B,H,n,N) in [-s, 0]."""
    a_hat = minmax_normalize(query_logits, dims=-1)
    return bias_scale * (a_hat + calib - 1).clamp(max=0)


def support_calibrated_attention(
    q: torch.Tensor,  # (B,H,n,d) after RoPE
    k: torch.Tensor,  # (B,H,L,d) after RoPE, L = N*(frames) + pointer tokens
    v: torch.Tensor,  # (B,H,L,d)
    support_mask: torch.Tensor,  # (B,S,1,h,w)
    bias_scale: float = 10.0,
    dropout_p: float = 0.0,
    return_probs: bool = False,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """SCMA kernel with S = support_mask.shape[1] support frames first, then the query frame.

    Returns (out (B,H,n,d), softmax weights (B,H,n,L') or None, calibration map (B,H,1,N)),
    with L' = L - (S-1)*N once the support frames are averaged.

    `fused`: the calibration bias as an additive mask of `F.scaled_dot_product_attention`
    instead of the explicit logits / softmax / `attn @ v` (equal up to rounding; see the module
    docstring). Ignored with `return_probs` (the weights need the explicit path).
    """
    S, N = support_mask.shape[1], q.shape[-2]
    support_k = k[:, :, : S * N].unflatten(2, (S, N))  # (B,H,S,N,d)
    with torch.no_grad():
        calib = calibration_map(support_k, k[:, :, S * N : (S + 1) * N], support_mask)
    if S > 1:  # average support keys/values over shots -> (B,H,N + rest,d)
        k = torch.cat([support_k.mean(dim=2), k[:, :, S * N :]], dim=2)
        v = torch.cat([v[:, :, : S * N].unflatten(2, (S, N)).mean(dim=2), v[:, :, S * N :]], dim=2)
    if fused and not return_probs:
        with torch.no_grad():  # only the query-memory block A_q (n x N) of the logits
            query_logits = q @ k[:, :, N : 2 * N].transpose(-2, -1) / math.sqrt(q.shape[-1])
            bias = calibration_bias(query_logits, calib, bias_scale)  # (B,H,n,N)
            # additive mask (B,H,n,L'): 0 on the support block and the tail, the bias between
            mask = F.pad(bias, (N, k.shape[-2] - 2 * N)).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None, calib
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B,H,n,L')
    query_block = logits[..., N : 2 * N]
    query_block += calibration_bias(query_block, calib, bias_scale)
    probs = logits.softmax(dim=-1)
    attn = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    return attn @ v, (probs if return_probs else None), calib


def _project_with_rope(attn: RoPEAttention, q, k, v, num_k_exclude_rope: int):
    """RoPEAttention.forward up to the attention kernel: projections, heads, RoPE."""
    q = attn._separate_heads(attn.q_proj(q), attn.num_heads)  # (B,H,n,d)
    k = attn._separate_heads(attn.k_proj(k), attn.num_heads)  # (B,H,L,d)
    v = attn._separate_heads(attn.v_proj(v), attn.num_heads)
    n = q.shape[-2]
    attn.freqs_cis = attn.freqs_cis.to(q.device)  # cached on the module, as upstream does
    if attn.freqs_cis.shape[0] != n:
        side = math.isqrt(n)
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(q.device)
    num_k_rope = k.size(-2) - num_k_exclude_rope  # pointer tokens stay unrotated
    q, k[:, :, :num_k_rope] = apply_rotary_enc(
        q, k[:, :, :num_k_rope], freqs_cis=attn.freqs_cis, repeat_freqs_k=attn.rope_k_repeat
    )
    return q, k, v


def _validate(memory_attention, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens,
              support_mask, num_shots, calibrate, kshot_calibration) -> tuple[int, bool]:
    """Check shapes; return K (support frames) and whether a query-memory frame follows them."""
    where = "calibrated_memory_attention"
    if kshot_calibration not in KSHOT_MODES:
        raise ValueError(f"{where}: kshot_calibration={kshot_calibration!r}, expected one of {KSHOT_MODES}")
    D = memory_attention.d_model
    if curr.dim() != 3 or curr.shape[2] != D:
        raise ValueError(f"{where}: curr has shape {tuple(curr.shape)}, expected (hw,B,{D})")
    n, B, _ = curr.shape
    if curr_pos is None or curr_pos.shape != curr.shape:
        got = None if curr_pos is None else tuple(curr_pos.shape)
        raise ValueError(f"{where}: curr_pos has shape {got}, expected {tuple(curr.shape)} like curr")
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{where}: curr has {n} tokens; RoPE needs a square grid (hw = side^2)")
    for i, layer in enumerate(memory_attention.layers):
        attn = layer.cross_attn_image
        if not isinstance(attn, RoPEAttention) or not attn.rope_k_repeat:
            raise ValueError(f"{where}: layer {i} cross-attention must be a RoPEAttention with rope_k_repeat")
    C = memory_attention.layers[0].cross_attn_image.kv_in_dim
    if memory.dim() != 3 or memory.shape[1:] != (B, C):
        raise ValueError(f"{where}: memory has shape {tuple(memory.shape)}, expected (L,{B},{C})")
    if memory_pos is None or memory_pos.shape != memory.shape:
        got = None if memory_pos is None else tuple(memory_pos.shape)
        raise ValueError(f"{where}: memory_pos has shape {got}, expected {tuple(memory.shape)} like memory")
    L = memory.shape[0]
    if not 0 <= num_obj_ptr_tokens < L:
        raise ValueError(f"{where}: num_obj_ptr_tokens={num_obj_ptr_tokens} not in [0, memory length {L})")
    spatial = L - num_obj_ptr_tokens
    if spatial % n or spatial < n:
        raise ValueError(
            f"{where}: memory length {L} must be hw*frames + num_obj_ptr_tokens with hw={n} "
            f"(got {spatial} spatial tokens for {num_obj_ptr_tokens} pointer tokens)"
        )
    frames = spatial // n
    if num_shots is None:  # assume K supports + the query memory
        if frames < 2:
            raise ValueError(f"{where}: memory holds {frames} frame of {n} tokens, expected K supports + query (>= 2)")
        K = frames - 1
    elif num_shots < 1 or frames not in (num_shots, num_shots + 1):
        raise ValueError(
            f"{where}: num_shots={num_shots} but the memory holds {frames} frames of {n} tokens "
            f"(expected {num_shots}+1 with the query memory, or {num_shots} supports only)"
        )
    else:
        K = num_shots
    if calibrate and frames == K:
        raise ValueError(f"{where}: calibrate=True needs the query-memory frame after the {K} support frames")
    if support_mask is not None and tuple(support_mask.shape) != (B, K, 1, side, side):
        raise ValueError(
            f"{where}: support_mask has shape {tuple(support_mask.shape)}, expected ({B},{K},1,{side},{side})"
        )
    if calibrate and support_mask is None:
        raise ValueError(f"{where}: calibrate=True needs support_mask (B,K,1,h,w)")
    return K, frames == K + 1


def calibrated_memory_attention(
    memory_attention,
    curr: torch.Tensor,  # (N,B,256) query stride-16 features, sequence-first
    curr_pos: torch.Tensor,  # (N,B,256)
    memory: torch.Tensor,  # (L,B,64) from assemble_memory (query frame optional if calibrate=False)
    memory_pos: torch.Tensor,  # (L,B,64)
    num_obj_ptr_tokens: int,
    support_mask: torch.Tensor | None = None,  # (B,K,1,h,w) support masks on the memory grid
    num_shots: int | None = None,
    calibrate: bool = True,
    kshot_calibration: str = "mean",
    bias_scale: float = 10.0,
    return_maps: bool = False,
    attention_weights: bool = False,
    fused_kernel: bool = False,
):
    """FSSAM memory attention -> (N,B,256), or ((N,B,256), AttentionMaps) with return_maps
    (the maps are computed beside the output and change none of its bits).

    `fused_kernel` (calibrated attention): the calibration bias as an additive mask of
    `F.scaled_dot_product_attention` (`support_calibrated_attention(fused=True)`: equal to the
    default explicit kernel up to rounding); with return_maps the explicit kernel runs (the
    maps need its softmax weights).

    `attention_weights` (plain attention only, with return_maps): the softmax weights are
    computed explicitly, kept with their grad in `maps.weights` (for a loss on them) and used
    for the output instead of the fused kernel (equal up to rounding)."""
    if attention_weights and (calibrate or not return_maps):
        raise ValueError("calibrated_memory_attention: attention_weights needs calibrate=False and return_maps=True")
    K, has_query = _validate(memory_attention, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens,
                             support_mask, num_shots, calibrate, kshot_calibration)
    n = curr.shape[0]
    S = K if kshot_calibration == "mean" else 1  # support frames the kernel believes in
    mask = support_mask[:, :S] if calibrate else None
    # start of the real query-memory frame among the attended keys
    query_start = n * (1 + K - S) if calibrate else n * K
    maps = AttentionMaps() if return_maps else None

    output = curr
    if memory_attention.pos_enc_at_input:
        output = output + 0.1 * curr_pos
    if memory_attention.batch_first:  # (N,B,C) -> (B,N,C)
        output, curr_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
    keys_with_pos = memory + memory_pos

    for layer in memory_attention.layers:
        output = layer._forward_sa(output, curr_pos)
        # cross-attention (MemoryAttentionLayer._forward_ca with our kernel)
        attn = layer.cross_attn_image
        tgt2 = layer.norm2(output)
        q, k, v = _project_with_rope(
            attn,
            tgt2 + curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
            keys_with_pos if layer.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_obj_ptr_tokens,
        )
        dropout_p = attn.dropout_p if attn.training else 0.0
        if calibrate:
            out, probs, calib = support_calibrated_attention(
                q, k, v, mask, bias_scale, dropout_p, return_probs=return_maps, fused=fused_kernel
            )
            if return_maps:
                maps.calibration.append(calib)
        elif attention_weights:
            probs = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B,H,n,L)
            out = (F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            if return_maps:  # the weights the fused kernel used, for figures only
                with torch.no_grad():
                    probs = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
        if return_maps:
            maps.weights.append(probs if attention_weights else probs.detach())
            if has_query:
                maps.query_attention.append(probs[..., query_start : query_start + n].detach())
        out = attn.out_proj(attn._recombine_heads(out))
        output = output + layer.dropout2(out)
        # FFN
        tgt2 = layer.norm3(output)
        tgt2 = layer.linear2(layer.dropout(layer.activation(layer.linear1(tgt2))))
        output = output + layer.dropout3(tgt2)

    output = memory_attention.norm(output)
    if memory_attention.batch_first:  # back to (N,B,C)
        output = output.transpose(0, 1)
    return (output, maps) if return_maps else output
