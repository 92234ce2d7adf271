"""Memory assembly: K support memories + the query memory + their object pointers.

FSSAM hands SAM 2's memory attention one memory bank per episode, as the release does, laid
out like upstream ``SAM2Base._prepare_memory_conditioned_features`` lays out K+1 conditioning
frames: every frame has temporal slot t_pos = 0, so every frame gets
``maskmem_tpos_enc[num_maskmem - 1]``; each 256-d pointer is split into 256 // 64 = 4 tokens
of 64 with zero position (SAM 2.0 configs have no pointer tpos encoding).

Sequence layout (L = hw*(K+1) + 4*(K+1)):
    [sup_1 (hw) ... sup_K (hw), query (hw), ptr sup_1 (4) ... ptr sup_K (4), ptr query (4)]
Without a query memory (the naive "support as memory" SAM 2 ablation) the query frame and its
pointer are left out: L = hw*K + 4*K.
"""
from __future__ import annotations

import torch


def _check(name: str, x: torch.Tensor, shape: tuple) -> None:
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ",".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"assemble_memory: {name} has shape {tuple(x.shape)}, expected {want}")


def assemble_memory(
    sam,
    support_memory: torch.Tensor,  # (B,K,C,h,w), C = sam.mem_dim
    support_pos: torch.Tensor,  # (B,K,C,h,w)
    query_memory: torch.Tensor | None,  # (B,C,h,w), None: support-only memory
    query_pos: torch.Tensor | None,  # (B,C,h,w)
    support_ptr: torch.Tensor,  # (B,K,D), D = sam.hidden_dim
    query_ptr: torch.Tensor | None,  # (B,D)
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Build (memory (L,B,C), memory_pos (L,B,C), num_obj_ptr_tokens) for one episode batch."""
    C, D = sam.mem_dim, sam.hidden_dim
    if support_memory.dim() != 5:
        raise ValueError(
            f"assemble_memory: support_memory has shape {tuple(support_memory.shape)}, "
            "expected (B,K,C,h,w)"
        )
    B, K, _, h, w = support_memory.shape
    _check("support_memory", support_memory, (B, K, C, h, w))
    _check("support_pos", support_pos, (B, K, C, h, w))
    _check("support_ptr", support_ptr, (B, K, D))
    query = (query_memory, query_pos, query_ptr)
    if any(x is None for x in query) and not all(x is None for x in query):
        raise ValueError("assemble_memory: query_memory, query_pos and query_ptr must be all given or all None")
    if query_memory is not None:
        _check("query_memory", query_memory, (B, C, h, w))
        _check("query_pos", query_pos, (B, C, h, w))
        _check("query_ptr", query_ptr, (B, D))
    if D % C:
        raise ValueError(f"assemble_memory: hidden_dim {D} is not a multiple of mem_dim {C}")

    # frames (F,B,C,h,w) -> sequence-first tokens, frame-major (F*hw,B,C): supports, then query
    frames = [support_memory.transpose(0, 1)]  # (K,B,C,h,w)
    frame_pos = [support_pos.transpose(0, 1)]
    ptrs = [support_ptr.transpose(0, 1)]  # (K,B,D)
    if query_memory is not None:
        frames.append(query_memory[None])
        frame_pos.append(query_pos[None])
        ptrs.append(query_ptr[None])
    spatial = torch.cat(frames).flatten(3).permute(0, 3, 1, 2).flatten(0, 1)
    spatial_pos = torch.cat(frame_pos).flatten(3).permute(0, 3, 1, 2).flatten(0, 1)
    # every frame is a conditioning frame (t_pos = 0) -> the last temporal slot
    spatial_pos = spatial_pos + sam.maskmem_tpos_enc[sam.num_maskmem - 1]  # (1,1,C) broadcast

    # pointers (F,B,D) -> (F, D//C, B, C) -> (F*D//C, B, C), as upstream splits them
    ptrs = torch.cat(ptrs)
    ptrs = ptrs.reshape(ptrs.shape[0], B, D // C, C).permute(0, 2, 1, 3).flatten(0, 1)
    ptr_pos = ptrs.new_zeros(ptrs.shape)

    memory = torch.cat([spatial, ptrs])  # (L,B,C)
    memory_pos = torch.cat([spatial_pos, ptr_pos])
    return memory, memory_pos, ptrs.shape[0]
