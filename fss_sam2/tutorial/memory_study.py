"""SAM 2's memory read on a video vs on a few-shot episode (notebook 02).

The naive "support as memory" SAM 2 (`FSSAM(query_memory=False)`) encodes each support image
with its mask into a memory and lets the query attend to it, exactly as SAM 2 carries an object
from frame 0 to frame t of a video. `read_memory` keeps, from the model's trace, the
cross-attention weights of every memory-attention layer; `study` scores batches of either kind:
- clip pairs (`clip_pairs`): frame 0 of a toy clip with its mask -> frame t of the same clip
  (tracking: the same individual), or of another clip of the same class (another individual);
- few-shot episodes (an `EpisodeDataset`): a support of the class -> a query showing another
  individual of it, among other objects.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..data.episode_dataset import binarise, collate
from ..data.sources import read_image, read_label
from ..data.transforms import val_transform
from ..metrics import foreground_iou, logits_to_prediction
from ..toy.world import NUM_TOY_CLASSES, read_clips_meta
from .session import label_on_grid


@dataclass
class MemoryRead:
    """The naive forward of a batch, opened up (h = w = image_size / 16, n = h*w)."""

    logits: torch.Tensor  # (B,S,S)
    attention: list[torch.Tensor]  # per layer (B,heads,n,L): query pixel -> [K*n support tokens, 4K pointers]
    shots: int
    grid: tuple[int, int]

    def support_attention(self, index: int, region: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, where the query pixels of `region` (h,w) bool look in the support memory of
        episode `index`, averaged over those pixels and the heads: (K,h,w) each."""
        h, w = self.grid
        if tuple(region.shape) != (h, w) or not region.any():
            raise ValueError(f"support_attention: region must be a non-empty ({h},{w}) bool map, "
                             f"got {tuple(region.shape)}")
        rows = region.flatten().to(self.attention[0].device)
        return [a[index].mean(0)[rows, : self.shots * h * w].mean(0).reshape(self.shots, h, w) for a in self.attention]


def read_memory(model, query: torch.Tensor, supports: torch.Tensor, support_masks: torch.Tensor) -> MemoryRead:
    """What `FSSAM(query_memory=False)` computes for query (B,3,S,S), supports (B,K,3,S,S) and
    support_masks (B,K,S,S) in {0,1,255}: supports -> memories -> memory attention -> decoder,
    read from the model's own trace."""
    if model.query_memory:
        raise ValueError("read_memory: expects the naive model, FSSAM(query_memory=False)")
    trace = model.trace(query, supports, support_masks)
    grid = tuple(trace.query_features.pix.shape[-2:])
    return MemoryRead(trace.logits, trace.attention.weights, supports.shape[1], grid)


def clip_pairs(root: str | Path, size: int, other_instance: bool = False) -> list[dict]:
    """Frame 0 of every clip of the toy world at `root` (its mask as the one support) with each
    later frame t of the same clip, or (`other_instance`) of the next clip of the same class;
    clips without such a partner are skipped. Samples as `EpisodeDataset` gives, plus `gap` = t."""
    root = Path(root)
    clips = read_clips_meta(root)["clips"]

    def frames(rec):
        for image, label in zip(rec["images"], rec["labels"]):
            where = str(root / label)
            yield read_image(root / image), binarise(read_label(root / label), rec["class_id"], NUM_TOY_CLASSES, where)

    samples = []
    for i, rec in enumerate(clips):
        if other_instance:
            same = [c for c in clips[i + 1:] + clips[:i] if c["class_id"] == rec["class_id"]]
            if not same:
                continue
            target = same[0]
        else:
            target = rec
        support, support_mask = val_transform(*next(frames(rec)), size)
        for t, (image, label) in enumerate(frames(target)):
            if t == 0:
                continue
            query, query_label = val_transform(image, label, size)
            samples.append({
                "query": query,  # (3,S,S)
                "query_label": query_label,  # (S,S)
                "supports": support[None],  # (1,3,S,S)
                "support_masks": support_mask[None],  # (1,S,S)
                "raw_label": torch.from_numpy(label.astype(np.int64)),  # (H,W) original size
                "cls": rec["class_id"],
                "index": len(samples),
                "gap": t,
            })
    return samples


def with_empty_memory(samples: Sequence[dict]) -> list[dict]:
    """The same samples with every support mask emptied: a model that reads its memory should
    segment worse from these, one that ignores it segments the same."""
    return [{**s, "support_masks": torch.zeros_like(s["support_masks"])} for s in samples]


def attention_shares(read: MemoryRead, query_label: torch.Tensor, support_masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Share of attention (heads and layers averaged) that query pixels give the support
    memory's object locations, from the query's object pixels ("object -> object") and from its
    background pixels ("background -> object"), and the share on pointer tokens. Labels (B,S,S)
    and support masks (B,K,S,S) in {0,1,255} are sampled onto the memory grid (nearest).
    -> (B,) each; NaN where the query grid holds no such pixel."""
    grid, k = read.grid, read.shots
    n = grid[0] * grid[1]
    query = label_on_grid(query_label, grid).flatten(1)  # (B,n)
    support = label_on_grid(support_masks.flatten(0, 1), grid).view(query.shape[0], k * n) == 1  # (B,K*n)
    attn = torch.stack([a.mean(1) for a in read.attention]).mean(0)  # (B,n,L)
    on_object = (attn[..., : k * n] * support[:, None]).sum(-1)  # (B,n)
    on_pointers = attn[..., k * n :].sum(-1)

    def mean_over(values, region):
        return (values * region).sum(1) / region.sum(1).where(region.sum(1) > 0, torch.nan)

    obj, bg = (query == 1).float(), (query == 0).float()
    return {
        "object -> object": mean_over(on_object, obj),
        "background -> object": mean_over(on_object, bg),
        "on pointers": on_pointers.mean(1),
    }


def study(model, samples: Sequence[dict], batch_size: int = 16, device: str | torch.device = "cpu") -> pd.DataFrame:
    """One row per sample, in order: class, foreground IoU at the original label size (1 when
    prediction and label are both empty) and the `attention_shares`."""
    device = torch.device(device)
    rows = []
    for batch in DataLoader(samples, batch_size=batch_size, collate_fn=collate):
        read = read_memory(model, *(batch[k].to(device) for k in ("query", "supports", "support_masks")))
        shares = attention_shares(read, batch["query_label"].to(device), batch["support_masks"].to(device))
        for b, raw in enumerate(batch["raw_label"]):
            iou = foreground_iou(logits_to_prediction(read.logits[b].cpu(), raw.shape), raw)
            rows.append({"cls": int(batch["cls"][b]), "iou": iou,
                         **{name: float(v[b]) for name, v in shares.items()}})
    return pd.DataFrame(rows)
