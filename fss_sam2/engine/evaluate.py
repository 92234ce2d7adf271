"""Evaluate a few-shot model on a fixed list of episodes (reference §3.5), and `fss-sam2 evaluate`.

A model is any callable with FSSAM's convention
  model(query (B,3,S,S) 0..255, supports (B,K,3,S,S), support_masks (B,K,S,S) {0,1,255}) -> logits (B,S,S)
Logits are resized back to each query's original label size and thresholded there, so batching
episodes (the resized tensors are batched, raw labels stay per episode) leaves the protocol as it
is; only a model's batched kernels may round its logits differently in the last bits (FSSAM on a
CPU: ~2e-7), which can flip a pixel only where a logit is that close to 0.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.episode_dataset import EpisodeDataset, collate
from ..data.episodes import Episode, split_classes
from ..data.sources import ListSource
from ..data.toy import SYNTHETIC_NOTE
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
    return {**meter.compute(), "seconds": time.perf_counter() - start}


# -- a checkpoint on the official protocol: `fss-sam2 evaluate` --------------------------------

TOY_LABEL = SYNTHETIC_NOTE


def load_checkpoint_model(checkpoint, cfg=None, overrides: Sequence[str] = (), device="cpu"):
    """(FSSAM in eval mode, kind) from our `last.pt` / `best.pt` ('ours') or an authors' release
    checkpoint ('official').

    ours: architecture, switches and frozen-weight files come from the checkpoint's own config;
    `model.*` keys set in `overrides` (an ablation switch, a moved `model.sam2_checkpoint`) apply
    on top. official: `cfg` (required) names the SAM 2 size, DINOv2, switches and image size.
    """
    from ..backbones.sam2_checkpoint import load_checkpoint_file
    from ..config import parse_overrides, to_dict
    from ..loading import SWITCHES, checkpoint_kind, load_model

    path = str(checkpoint)
    ckpt = load_checkpoint_file(path)
    kind = checkpoint_kind(ckpt, path)
    if kind == "official":
        if cfg is None:
            raise ValueError(f"{path}: an authors' FSSAM checkpoint; pass --config too (it names the SAM 2 size, "
                             "DINOv2 and the image size)")
        return load_model(path, image_size=cfg.data.image_size, device=device, **to_dict(cfg.model)), kind
    explicit = parse_overrides(overrides).get("model", {}) if overrides else {}
    keep = (*SWITCHES, "sam2_checkpoint", "dino_checkpoint")
    model = load_model(path, device=device, **{k: v for k, v in explicit.items() if k in keep})
    trained = ckpt["config"]["data"]
    if cfg is not None and cfg.data.dataset == trained["dataset"] and cfg.data.fold != trained["fold"]:
        warnings.warn(f"{path}: trained on fold {trained['fold']}, evaluated on fold {cfg.data.fold}, whose novel "
                      "classes it saw in training")
    return model, kind


def compile_model(model, device: torch.device) -> None:
    """`torch.compile` FSSAM's post-encoder part, or a clear error where it cannot run."""
    import shutil

    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise ValueError("--compile: torch.compile does not support this Python / torch build; run without --compile")
    compilers = (os.environ.get("CXX"), "g++", "clang++", "c++")
    if device.type == "cpu" and not any(c and shutil.which(c) for c in compilers):
        raise ValueError("--compile: torch.compile needs a C++ compiler on the CPU (g++ or clang++, or $CXX); "
                         "install one or run without --compile")
    model.compile_post_encoder()


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
    out/episodes.csv (first seed; episodes_seed{S}.csv for each when several) and, with
    `overlays`, out/overlays/episode_NNNN.png. `cache`: a FeatureCache (None: no cache)."""
    from ..config import autocast, to_dict
    from ..data import open_source
    from ..data.episodes import make_episodes, write_episodes_csv
    from .train import resolve_device

    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: expected distinct seeds")
    d = cfg.data
    out = Path(out)
    dev = resolve_device(device or cfg.train.device, 0, 1)
    source = open_source(d.dataset, d.root)
    model, kind = load_checkpoint_model(checkpoint, cfg, overrides, dev)
    if compile:
        compile_model(model, dev)
    size = model.image_size  # ours: the size it was trained at
    if size != d.image_size:
        warnings.warn(f"{checkpoint}: the model runs at {size} px, not data.image_size={d.image_size}; using {size}")
    step = call_model if cache is None else cache.step
    batch_size = batch_size or d.val_batch
    workers = d.workers if workers is None else workers
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for n, seed in enumerate(seeds):
        eps = make_episodes(source, d.fold, d.shot, episodes=episodes, seed=seed, split="val")
        if n == 0:
            write_episodes_csv(out / "episodes.csv", eps)
        if len(seeds) > 1:
            write_episodes_csv(out / f"episodes_seed{seed}.csv", eps)
        with autocast(dev, cfg.train.precision):
            r = evaluate(model, source, eps, size=size, fold=d.fold, split="val", device=dev, batch_size=batch_size,
                         num_workers=workers, progress=progress, step=step)
            if n == 0 and overlays > 0:
                write_overlays(model, source, eps[:overlays], size, d.fold, dev, step, out / "overlays")
        runs.append({"seed": seed, **r})
    synthetic = source.dataset == "toy"
    result = {
        "model": "FSSAM", "checkpoint": str(checkpoint), "checkpoint_kind": kind,
        "dataset": source.dataset, "root": str(d.root), "fold": d.fold, "shot": d.shot, "image_size": size,
        "synthetic": synthetic, "label": TOY_LABEL if synthetic else None,
        "episodes": episodes, **_mean_over_seeds(runs), "seeds": runs,
        "device": str(dev), "precision": cfg.train.precision, "batch": batch_size, "workers": workers,
        "cache": None if cache is None else cache.stats(), "compile": compile, "config": to_dict(cfg),
    }
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
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


def write_overlays(model, source, episodes: Sequence[Episode], size: int, fold: int, device, step, out: Path) -> None:
    """out/episode_NNNN.png: the supports with their masks, the query with its ground truth and
    the query with the scored prediction, side by side at the query's original size."""
    from .predict import overlay_mask, save_png

    data = EpisodeDataset(source, episodes, size=size, fold=fold, split="val")
    for i in range(len(data)):
        batch = collate([data[i]])
        with torch.inference_mode():
            logits = step(model, batch, device)[0]  # (S,S)
        raw = batch["raw_label"][0]  # (H0,W0)
        shape = tuple(raw.shape)
        query = source.load_image(data.items[episodes[i].query])  # (H0,W0,3) uint8
        panels = [overlay_mask(_resized(img.permute(1, 2, 0), shape), _resized(mask == 1, shape), (40, 200, 60))
                  for img, mask in zip(batch["supports"][0], batch["support_masks"][0])]
        panels.append(overlay_mask(query, raw.numpy() == 1, (40, 200, 60)))
        panels.append(overlay_mask(query, logits_to_prediction(logits, shape).cpu().numpy() == 1, (230, 40, 40)))
        save_png(np.concatenate(panels, axis=1), out / f"episode_{i:04d}.png")


def _resized(x: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """An (S,S,3) image or (S,S) bool mask stretched to `shape` (bilinear / nearest)."""
    if x.dtype == torch.bool:
        m = torch.nn.functional.interpolate(x[None, None].float(), size=shape, mode="nearest")[0, 0]
        return m.numpy() > 0.5
    img = torch.nn.functional.interpolate(x.permute(2, 0, 1)[None].float(), size=shape, mode="bilinear",
                                          align_corners=False)[0]
    return img.permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def _evaluate_command(a: argparse.Namespace) -> int:
    from ..config import load_config
    from .cache import FeatureCache

    cfg = load_config(a.config, a.overrides)
    cache = None
    if a.cache or a.cache_dir:
        cache = FeatureCache(max_bytes=int(a.cache_gib * 2**30), disk=a.cache_dir)
    if a.compile:
        print("--compile: the first batch compiles the post-encoder model (minutes on a CPU)", flush=True)
    r = evaluate_checkpoint(cfg, a.checkpoint, a.out, episodes=a.episodes, seeds=a.seeds, batch_size=a.batch,
                            workers=a.workers, device=a.device, cache=cache, compile=a.compile, overlays=a.overlays,
                            overrides=a.overrides, progress=not a.quiet)
    std = r.get("std", {})
    spread = lambda k: f" ± {100 * std[k]:.2f}" if k in std else ""  # noqa: E731
    print(f"{r['dataset']} fold {r['fold']}, {r['shot']}-shot, {r['episodes']} episodes x {len(r['seeds'])} seed(s): "
          f"mIoU {100 * r['miou']:.2f}{spread('miou')}  FB-IoU {100 * r['fb_iou']:.2f}{spread('fb_iou')}")
    if r["synthetic"]:
        print(f"[{TOY_LABEL}]")
    print(f"results -> {Path(a.out) / 'results.json'}")
    return 0


def add_evaluate_cli(subparsers) -> None:
    """Register `fss-sam2 evaluate` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint (ours or the authors') on the official protocol",
        description="Official protocol by default: 1000 episodes of the val list of the config's fold, seed 321, "
                    "stretch resize to the model size, logits resized back to each label's size, threshold 0.5. "
                    "Writes DIR/results.json, DIR/episodes.csv (episodes_seed{S}.csv per seed when several).",
    )
    p.add_argument("--config", required=True, help="YAML config: dataset, root, fold, shot (and, for an authors' "
                                                   "checkpoint, the SAM 2 size and DINOv2)")
    p.add_argument("--checkpoint", required=True, help="our last.pt / best.pt, or an authors' best_{1|5}shot.pth")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[321], help="one evaluation per seed; mean ± std")
    p.add_argument("--batch", type=int, help="episodes per batch (default: data.val_batch; results do not change)")
    p.add_argument("--workers", type=int, help="DataLoader processes (default: data.workers)")
    p.add_argument("--device", help="cpu | cuda | cuda:N | auto (default: train.device)")
    p.add_argument("--cache", action="store_true", help="cache the frozen encoders' outputs in memory")
    p.add_argument("--cache-dir", help="also keep them on disk in this folder (implies --cache)")
    p.add_argument("--cache-gib", type=float, default=4.0, help="memory budget of the cache (GiB)")
    p.add_argument("--compile", action="store_true", help="torch.compile the post-encoder model")
    p.add_argument("--overlays", type=int, default=0, metavar="K", help="write PNG overlays of the first K episodes")
    p.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="config overrides, e.g. root=data/pascal or model.num_refine=0",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate_command)
