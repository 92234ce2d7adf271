"""The toy profile's stand-in for the pretrained DINOv2, trained once and cached.

The tiny-toy DINOv2 learns patch features on ONE fold's base classes only: it reads just the
fold's training list (which drops every image showing a novel class), never a val image.
Objective: per-patch classification into base classes + background (a linear head, dropped
afterwards), a prototype-matching loss shaped like FSSAM's discriminative prior (cosine to
the masked average of a support of the same class, foreground against background) and one
for its foreground prior alone; RGB channels are shuffled (colour carries no class here).

Toy models, toy numbers: they make the synthetic-world tutorial meaningful, nothing more.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones.dinov2 import build_dinov2
from ..data import open_source
from ..constants import IGNORE
from ..data.transforms import resize
from ..engine.checkpoint import atomic_save
from ..modules.common import cosine_map, masked_average
from ..modules.prompt_generator import DINO_MEAN, DINO_PATCH, DINO_STD, dino_size
from .training import loss_summary, lr_factor

DINO_STEPS = 900


@dataclass(frozen=True)
class DinoPretrainConfig:
    """Hyper-parameters of the DINOv2 stand-in besides the step count (all in the cache key)."""

    image_size: int = 128  # episode side; DINOv2 sees image_size * 35 / 32 (140 at 128)
    batch: int = 32  # pairs (query, support) of one base class: 2 x batch images a step
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 15
    classify_weight: float = 0.5  # per-patch base-class + background cross-entropy
    prototype_weight: float = 1.0  # FSSAM-like prototype matching: foreground vs background prototype
    # the foreground prototype alone (cosine > 0.5 on the class): without it the foreground prior
    # came out inverted (higher on background than on the object)
    foreground_weight: float = 1.0
    temperature: float = 0.5
    min_zoom: float = 0.65  # random crops keep this fraction of the side or more
    # shuffle the RGB channels of each crop: colour carries no class in the synthetic world
    permute_colours: bool = True


# ---- DINOv2: base-class patch features -----------------------------------------------------


class _BaseClassImages:
    """The fold's training images in memory: images (N,3,S,S) uint8 and label maps (N,S,S)
    int64 of base-class indices (0 background, 1..len(base), IGNORE); plus, per base class,
    the images that serve it. Reads nothing but the training list of the fold."""

    def __init__(self, source, fold: int, size: int, progress: bool):
        fold_list = source.fold_list("train", fold)
        if not fold_list.items:
            raise ValueError(f"{source.root / 'lists' / 'train'}: fold {fold} has no training images")
        self.base = source.base(fold)
        novel = set(source.novel(fold))
        lut = np.full(256, IGNORE, np.int64)
        lut[0] = 0
        lut[self.base] = np.arange(1, len(self.base) + 1)
        index = {item: n for n, item in enumerate(fold_list.items)}
        images, labels = [], []
        for item in tqdm(fold_list.items, desc=f"fold {fold} base-class images", disable=not progress):
            label = source.load_label(item)
            leaked = novel.intersection(np.unique(label).tolist())
            if leaked:
                raise ValueError(f"{item.label}: in the training list of fold {fold} but shows novel classes {sorted(leaked)}")
            image, label = resize(source.load_image(item), label, (size, size))
            images.append(np.clip(image + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1))
            labels.append(lut[label])
        self.images = torch.from_numpy(np.stack(images))
        self.labels = torch.from_numpy(np.stack(labels))
        # class index k (1..) -> images serving it (class area >= the list's threshold)
        self.by_class = {
            k: np.array([index[it] for it in fold_list.by_class.get(c, [])], np.int64)
            for k, c in enumerate(self.base, 1)
        }
        self.classes = [k for k, ids in self.by_class.items() if len(ids) >= 2]
        if not self.classes:
            raise ValueError(f"fold {fold}: no base class has two training images")

    def pairs(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> image indices (2B,) = [queries, supports], class index of each pair (B,)."""
        cls = rng.choice(self.classes, size=batch)
        q, s = zip(*(rng.choice(self.by_class[c], size=2, replace=False) for c in cls))
        return torch.from_numpy(np.array(q + s)), torch.from_numpy(cls)


def _augment(images: torch.Tensor, labels: torch.Tensor, classes: int, out: int, patch: int,
             min_zoom: float, rng: np.random.Generator, permute_colours: bool = False):
    """Random zoomed crop + horizontal flip, resampled to the DINOv2 input.

    images (N,3,S,S) uint8, labels (N,S,S) class indices < classes or IGNORE -> images
    (N,3,out,out) float 0..255 and per-patch class fractions (N,classes+1,t,t), t = out/patch;
    the last channel is the ignore fraction."""
    n = images.shape[0]
    zoom = torch.from_numpy(rng.uniform(min_zoom, 1.0, n)).float()
    shift = torch.from_numpy(rng.uniform(-1, 1, (n, 2))).float() * (1 - zoom)[:, None]
    flip = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = zoom * flip, zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (n, 1, out, out), align_corners=False)
    x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if permute_colours:
        perm = torch.from_numpy(np.stack([rng.permutation(3) for _ in range(n)]))  # (N,3)
        x = x.gather(1, perm[:, :, None, None].expand_as(x))
    lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    lab = lab[:, 0].long().clamp_max(classes)  # (N,out,out), IGNORE -> channel `classes`
    t = out // patch
    cell = torch.arange(out) // patch
    cell = (cell[:, None] * t + cell[None]).view(1, out, out)  # patch index of every pixel
    flat = (torch.arange(n).view(n, 1, 1) * (classes + 1) + lab) * t * t + cell
    counts = torch.bincount(flat.flatten(), minlength=n * (classes + 1) * t * t)
    return x, counts.view(n, classes + 1, t, t).float() / (patch * patch)


def _dino_losses(feats: torch.Tensor, frac: torch.Tensor, pair_class: torch.Tensor, head: nn.Module,
                 config: DinoPretrainConfig) -> tuple[torch.Tensor, dict]:
    """feats (2B,C,t,t) [queries, supports], frac (2B,K+2,t,t) class fractions (last = ignore)."""
    valid = 1 - frac[:, -1:]  # (2B,1,t,t)
    target = frac[:, :-1] / valid.clamp_min(1e-6)  # (2B,K+1,t,t) over non-ignore pixels
    parts = {}
    if config.classify_weight > 0:
        logits = head(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (2B,K+1,t,t)
        ce = -(target * F.log_softmax(logits, 1)).sum(1, keepdim=True)
        parts["classify"] = (ce * valid).sum() / valid.sum().clamp_min(1)
    if config.prototype_weight > 0 or config.foreground_weight > 0:
        b = pair_class.shape[0]
        pick = pair_class.view(b, 1, 1, 1).expand(b, 1, *frac.shape[-2:])
        fg = frac[:, :-1].gather(1, torch.cat([pick, pick]))  # (2B,1,t,t) fraction of the pair's class
        q, s, fg_q, fg_s, valid_q, valid_s = feats[:b], feats[b:], fg[:b], fg[b:], valid[:b], valid[b:]
        t = (fg_q / valid_q.clamp_min(1e-6)).clamp(0, 1)  # (B,1,t,t) target: the query's class fraction
        fg_cos = cosine_map(q, masked_average(s, fg_s))  # (B,1,t,t) what the foreground prior is made of
        bg_cos = cosine_map(q, masked_average(s, valid_s - fg_s))
        logits = {"prototype": (fg_cos - bg_cos) / config.temperature,  # the discriminative prior
                  "foreground": (fg_cos - 0.5) / config.temperature}  # the foreground prior, alone
        for name, logit in logits.items():
            bce = F.binary_cross_entropy_with_logits(logit, t, reduction="none")
            parts[name] = (bce * valid_q).sum() / valid_q.sum().clamp_min(1)
    loss = sum(getattr(config, f"{name}_weight") * value for name, value in parts.items())
    return loss, {k: v.item() for k, v in parts.items()}


def pretrain_toy_dino(root: str | Path, fold: int, out_file: str | Path, steps: int = DINO_STEPS, seed: int = 0,
                      progress: bool = True, config: DinoPretrainConfig | None = None,
                      device: str | torch.device = "cpu", source=None) -> dict:
    """Train the tiny-toy DINOv2 on fold `fold`'s base classes (its training list only) and save
    the backbone alone, with hub keys, at `out_file` (``build_dinov2("tiny-toy", checkpoint=...)``).

    `source` replaces ``open_source("toy", root)`` (e.g. a wrapper that records what is read).
    Returns metrics: losses (per step), loss_first / loss_last, the last tenth of each loss
    part, images, seconds (load, train), steps.
    """
    config = config or DinoPretrainConfig()
    if config.classify_weight <= 0 and config.prototype_weight <= 0:
        raise ValueError("DinoPretrainConfig: classify_weight and prototype_weight are both 0, nothing to train")
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1")
    source = source if source is not None else open_source("toy", root)
    device = torch.device(device)
    t0 = time.perf_counter()
    data = _BaseClassImages(source, fold, config.image_size, progress)
    t_load = time.perf_counter() - t0
    side = dino_size(config.image_size)  # 140 at 128
    mean = torch.tensor(DINO_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(DINO_STD, device=device).view(1, 3, 1, 1)
    rng = np.random.default_rng([seed, 3])
    num_base = len(data.base)
    losses, parts_log = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        dino = build_dinov2("tiny-toy").to(device).requires_grad_(True).train()
        head = nn.Linear(dino.config.dim, num_base + 1).to(device)
        params = [*dino.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, config.warmup))
        bar = tqdm(range(steps), desc=f"pretrain toy DINOv2 (fold {fold} base classes)", disable=not progress)
        for _ in bar:
            idx, pair_class = data.pairs(config.batch, rng)
            x, frac = _augment(data.images[idx], data.labels[idx], num_base + 1, side, DINO_PATCH,
                               config.min_zoom, rng, config.permute_colours)
            feats = dino.patch_features(((x.to(device) - mean) / std))  # (2B,C,t,t)
            loss, parts = _dino_losses(feats, frac.to(device), pair_class.to(device), head, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            parts_log.append(parts)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        dino.eval().requires_grad_(False)
    atomic_save({k: v.cpu() for k, v in dino.state_dict().items()}, Path(out_file))
    n = max(1, steps // 10)
    return {
        "steps": steps,
        "fold": fold,
        "losses": losses,
        **loss_summary(losses),
        **{f"{k}_last": float(np.mean([p[k] for p in parts_log[-n:]])) for k in parts_log[0]},
        "images": len(data.images),
        "seconds_load": round(t_load, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


