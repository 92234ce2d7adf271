"""Evaluate a few-shot model on a fixed list of episodes (the release's protocol;
docs/deviations.md, "Evaluation episodes").

A model is any callable with FSSAM's convention
  model(query (B,3,S,S) 0..255, supports (B,K,3,S,S), support_masks (B,K,S,S) {0,1,255}) -> logits (B,S,S)
Logits are resized back to each query's original label size and thresholded there, so batching
episodes (the resized tensors are batched, raw labels stay per episode) leaves the protocol as it
is; only a model's batched kernels may round its logits differently in the last bits (FSSAM on a
CPU: ~2e-7), which can flip a pixel only where a logit is that close to 0.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..backbones.sam2_checkpoint import load_checkpoint_file
from ..config import to_dict
from ..constants import SYNTHETIC_NOTE
from ..data import open_source
from ..data.episode_dataset import EpisodeDataset, collate
from ..data.episodes import Episode, make_episodes, split_classes, write_episodes_csv
from ..data.sources import ListSource
from ..loading import SWITCHES, load_checkpoint_model, training_record
from ..methods import method_name
from ..metrics import FssMeter, logits_to_prediction
from ..stats import EPISODE_SCORES, RESAMPLES, EpisodeScores, bootstrap_ci95, write_episode_scores
from .overlays import write_overlays
from .runtime import atomic_write_text, autocast, compile_model, resolve_device


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
    scores: bool = False,
) -> dict:
    """mIoU over `split`'s classes of `fold`, FB-IoU, pIoU, per-class IoU, episodes, seconds;
    with `scores`, also `episode_scores`: (class, I_bg, I_fg, U_bg, U_fg) of every episode in
    list order (`FssMeter.episodes`, what the bootstrap intervals of `fss_sam2.stats` resample).

    `fold` defaults to the one whose classes the episodes ask for (unique for val episodes).

    `step(model, batch, device)` computes the logits of a collated batch (keys of
    `EpisodeDataset` plus 'index' and 'cls'); replace it to feed a model extra inputs, e.g.
    `FeatureCache.step` (engine/cache.py) serves FSSAM's frozen encoders from a cache.
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
    result = {**meter.compute(), "seconds": time.perf_counter() - start}
    return {**result, "episode_scores": meter.episodes} if scores else result


# -- a checkpoint on the official protocol: `fss-sam2 evaluate` --------------------------------

TOY_LABEL = SYNTHETIC_NOTE


def evaluate_checkpoint(
    cfg,
    checkpoint,
    out: str | Path,
    episodes: int = 1000,
    seeds: Sequence[int] = (321,),
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | None = None,
    cache=None,
    compile: bool = False,
    overlays: int = 0,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict:
    """The official protocol on the val list of `cfg`'s fold, for each seed; writes out/results.json,
    out/episodes.csv (first seed; episodes_seed{S}.csv for each when several), out/episode_scores.csv
    (every episode's counts, each seed: `fss_sam2.stats`) and, with `overlays`,
    out/overlays/episode_NNNN.png. `cache`: a FeatureCache (None: no cache).

    results.json names the evaluated model by its switches as built (`method`, e.g. "FSSAM w/o
    IMR", and every switch), what its weights were trained with (`trained_shot`,
    `training_seed`: None for the authors' files) and the 95% bootstrap intervals of the first
    seed's mIoU and FB-IoU (`miou_ci95`, `fb_iou_ci95`; `ci95_seed` names that seed)."""
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: expected distinct seeds")
    d = cfg.data
    out = Path(out)
    dev = resolve_device(device or cfg.train.device, 0, 1)
    source = open_source(d.dataset, d.root)
    state = load_checkpoint_file(checkpoint)  # read once: the model and its training record
    model, kind = load_checkpoint_model(checkpoint, cfg, overrides, dev, state=state)
    if compile:
        compile_model(model, dev)
    size = model.image_size  # ours: the size it was trained at
    if size != d.image_size:
        warnings.warn(f"{checkpoint}: the model runs at {size} px, not data.image_size={d.image_size}; using {size}")
    step = call_model if cache is None else cache.step
    batch_size = batch_size or d.val_batch
    workers = d.workers if workers is None else workers
    out.mkdir(parents=True, exist_ok=True)
    runs, scores = [], []
    for n, seed in enumerate(seeds):
        eps = make_episodes(source, d.fold, d.shot, episodes=episodes, seed=seed, split="val",
                            stream=d.stream, stream_workers=d.stream_workers)
        if n == 0:
            write_episodes_csv(out / "episodes.csv", eps)
        if len(seeds) > 1:
            write_episodes_csv(out / f"episodes_seed{seed}.csv", eps)
        with autocast(dev, cfg.train.precision):
            r = evaluate(model, source, eps, size=size, fold=d.fold, split="val", device=dev, batch_size=batch_size,
                         num_workers=workers, progress=progress, step=step, scores=True)
            if n == 0 and overlays > 0:
                write_overlays(model, source, eps[:overlays], size, d.fold, dev, step, out / "overlays")
        counts = np.asarray(r.pop("episode_scores"), dtype=np.int64).reshape(-1, 5)
        scores.append((seed, EpisodeScores(tuple(r["per_class"]), tuple(eps), counts)))
        runs.append({"seed": seed, **r})
    write_episode_scores(out / EPISODE_SCORES, scores)
    ci95 = bootstrap_ci95(scores[0][1])
    switches = {k: getattr(model, k) for k in SWITCHES}  # as built: the checkpoint's config and the overrides
    synthetic = source.dataset == "toy"
    result = {
        "model": "FSSAM", "method": method_name(switches, d.shot), **switches,
        "checkpoint": str(checkpoint), "checkpoint_kind": kind, **training_record(checkpoint, state=state),
        "dataset": source.dataset, "root": str(d.root), "fold": d.fold, "shot": d.shot, "image_size": size,
        "synthetic": synthetic, "label": TOY_LABEL if synthetic else None,
        "episodes": episodes, "stream": d.stream, "stream_workers": d.stream_workers,
        **_mean_over_seeds(runs), "miou_ci95": ci95["miou"], "fb_iou_ci95": ci95["fb_iou"],
        "ci95_seed": seeds[0], "ci95_resamples": RESAMPLES, "episode_scores": EPISODE_SCORES, "seeds": runs,
        "device": str(dev), "precision": cfg.train.precision, "batch": batch_size, "workers": workers,
        "cache": None if cache is None else cache.stats(), "compile": compile, "config": to_dict(cfg),
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    return result


def _mean_over_seeds(runs: list[dict]) -> dict:
    """miou, fb_iou, piou, per_class averaged over seeds; with several seeds also their sample
    standard deviation (ddof 1) under `std`."""
    keys = ("miou", "fb_iou", "piou")
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    mean["per_class"] = {c: float(np.mean([r["per_class"][c] for r in runs])) for c in runs[0]["per_class"]}
    if len(runs) > 1:
        mean["std"] = {k: float(np.std([r[k] for r in runs], ddof=1)) for k in keys}
    return mean


