"""Evaluate a few-shot model on a fixed list of episodes (reference §3.5).

A model is any callable with FSSAM's convention
  model(query (B,3,S,S) 0..255, supports (B,K,3,S,S), support_masks (B,K,S,S) {0,1,255}) -> logits (B,S,S)
Logits are resized back to each query's original label size and thresholded there, so batching
episodes (the resized tensors are batched, raw labels stay per episode) cannot change the result.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.episode_dataset import EpisodeDataset, collate
from ..data.episodes import Episode, split_classes
from ..data.sources import ListSource
from ..metrics import FssMeter, logits_to_prediction


def call_model(model: Callable, batch: dict, device: torch.device) -> torch.Tensor:
    """The default step: model(query, supports, support_masks) on `device` -> logits (B,S,S)."""
    return model(batch["query"].to(device), batch["supports"].to(device), batch["support_masks"].to(device))


def evaluate(
    model: Callable,
    source: ListSource,
    episodes: Sequence[Episode],
    size: int = 512,
    fold: int | None = None,
    split: str = "val",
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    step: Callable[[Callable, dict, torch.device], torch.Tensor] = call_model,
) -> dict:
    """mIoU over `split`'s classes of `fold`, FB-IoU, pIoU, per-class IoU, episodes, seconds.

    `fold` defaults to the one whose classes the episodes ask for (unique for val episodes).

    `step(model, batch, device)` computes the logits of a collated batch (keys of
    `EpisodeDataset` plus 'index' and 'cls'); replace it to feed a model extra inputs, e.g.
    cached priors looked up by episode index.
    """
    device = torch.device(device)
    data = EpisodeDataset(source, episodes, size=size, fold=fold, split=split)
    fold = data.fold
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                        pin_memory=device.type == "cuda")
    meter = FssMeter(split_classes(source, split, fold))
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"{source.dataset} fold {fold}", unit="batch", disable=not progress)
    try:
        with torch.inference_mode():
            for batch in bar:
                logits = step(model, batch, device)  # (B,S,S)
                want = tuple(batch["query_label"].shape)
                if tuple(logits.shape) != want:
                    raise ValueError(f"model returned logits {tuple(logits.shape)}, expected (B,S,S) = {want}")
                for b, raw in enumerate(batch["raw_label"]):
                    meter.update(logits_to_prediction(logits[b], raw.shape[-2:]), raw, batch["cls"][b])
                if progress:
                    bar.set_postfix(miou=f"{meter.running_miou():.3f}")
    finally:
        if module is not None:
            module.train(was_training)
    return {**meter.compute(), "seconds": time.perf_counter() - start}
