"""What notebook 02's figures show of the naive SAM 2's memory read (`memory_study.read_memory`):
the model inputs of a few samples, the IoU of every tracked frame, and where a query's object
cells look in the memory. The figures themselves are `viz.frame_strip` and `viz.attention_rows`."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .memory_study import MemoryRead, read_memory
from .session import binary_scores, label_on_grid


def stack(samples: Sequence[dict], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """[query (B,3,S,S), supports (B,K,3,S,S), support_masks (B,K,S,S)] of B samples (each
    `query` (3,S,S), `supports` (K,3,S,S), `support_masks` (K,S,S)), on `device`: the arguments
    of a model or of `memory_study.read_memory`."""
    return [torch.stack([s[k] for s in samples]).to(device) for k in ("query", "supports", "support_masks")]


def frame_ious(samples: Sequence[dict], read: MemoryRead) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (B,S,S) of the B samples' memory read and the IoU (B,) of each against its
    `query_label` (S,S) (threshold 0.5, ignore pixels left out)."""
    probs = torch.sigmoid(read.logits)  # (B,S,S)
    iou = binary_scores(probs, torch.stack([s["query_label"] for s in samples]).to(probs.device))["iou"]  # (B,)
    return probs, iou


def object_attention(model, sample: dict, device: str | torch.device = "cpu") -> tuple[torch.Tensor, list]:
    """The memory read of one sample by the naive `model`, opened at the query's object: its
    object cells on the memory grid, region (h,w) bool (every cell when the query shows no
    object), and per memory-attention layer where those cells look in the support memory,
    (K,h,w) each (heads and cells averaged; `MemoryRead.support_attention`)."""
    read = read_memory(model, *stack([sample], device))
    grid = read.grid
    query_grid = label_on_grid(sample["query_label"][None], grid)[0] == 1  # (h,w)
    region = query_grid if query_grid.any() else torch.ones(grid, dtype=torch.bool)
    return region, read.support_attention(0, region.to(read.logits.device))
