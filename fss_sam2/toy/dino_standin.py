"""The toy profile's stand-in for the pretrained DINOv2, trained once and cached.

The real DINOv2 is trained on a vast image collection that holds objects of every kind: a
benchmark's "novel" classes are novel to the few-shot training only, not to the foundation
models. The stand-in is trained the same way round: on scenes rendered from the world's seed at
indices far from the images on disk (never a dataset image, train or val), showing all 20
shapes, and one stand-in serves every fold, as one SAM 2 stand-in does.

Its objective is not DINOv2's self-supervision (which needs far more data and compute than a
CPU has in minutes) but what that self-supervision gives FSSAM: patch features in which two
individuals of one kind match. Pairs of scenes sharing a shape are drawn; the loss is a
prototype matching shaped like FSSAM's priors (cosine of query patches to the masked average
of the support's object, against the support's background, and the foreground prototype alone)
plus, optionally, a per-patch shape classification (a linear head, dropped afterwards). RGB
channels are shuffled (colour carries no class here). docs/toy_world.md, "The stand-ins".

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
from ..constants import IGNORE
from ..data.lists import class_pixel_counts
from ..data.sources import read_image, read_label
from ..data.transforms import resize
from ..engine.checkpoint import atomic_save
from ..modules.common import cosine_map, masked_average
from ..modules.prompt_generator import DINO_MEAN, DINO_PATCH, DINO_STD, PseudoPromptGenerator, dino_size
from .training import loss_summary, lr_factor
from .world import NUM_TOY_CLASSES, VAL_EVERY, make_image, read_clips_meta, scaled_min_pixels

DINO_STEPS = 900
PRETRAIN_IMAGE_OFFSET = 1_000_000  # pretraining image k of seed s is world image OFFSET * (s + 1) + k


@dataclass(frozen=True)
class DinoPretrainConfig:
    """Hyper-parameters of the DINOv2 stand-in besides the step count (all in the cache key)."""

    image_size: int = 128  # episode side; DINOv2 sees image_size * 35 / 32 (140 at 128)
    images: int = 2000  # scenes rendered for pretraining (all 20 shapes); pairs of them are drawn
    batch: int = 32  # pairs (query, support) sharing a shape: 2 x batch images a step
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 15
    classify_weight: float = 0.5  # per-patch shape (20 + background) cross-entropy; 0 = off
    prototype_weight: float = 1.0  # FSSAM-like prototype matching: foreground vs background prototype
    # the foreground prototype alone (cosine > 0.5 on the object): without it the foreground prior
    # came out inverted (higher on background than on the object)
    foreground_weight: float = 1.0
    temperature: float = 0.5
    min_zoom: float = 0.65  # random crops keep this fraction of the side or more
    # shuffle the RGB channels of each crop: colour carries no class in the synthetic world
    permute_colours: bool = True


# ---- DINOv2: scenes rendered apart from the dataset ----------------------------------------


class RenderedScenes:
    """`count` scenes of the world (seed, size) at indices far from those on disk, in memory:
    images (N,3,S,S) uint8 and label maps (N,S,S) int64 (0 background, 1..20 shapes, IGNORE);
    plus, per shape, the scenes that show it over the dataset lists' area threshold."""

    def __init__(self, world_seed: int, world_size: int, count: int, size: int, seed: int, progress: bool):
        first = PRETRAIN_IMAGE_OFFSET * (seed + 1)
        need = scaled_min_pixels(world_size)
        images, labels, by_class = [], [], {c: [] for c in range(1, NUM_TOY_CLASSES + 1)}
        for n in tqdm(range(count), desc="render DINOv2 pretraining scenes", disable=not progress):
            image, label = make_image(world_seed, first + n, world_size)
            for c, pixels in class_pixel_counts(label).items():
                if pixels >= need:
                    by_class[c].append(n)
            image, label = resize(image, label, (size, size))
            images.append(np.clip(image + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1))
            labels.append(label.astype(np.int64))
        self.images = torch.from_numpy(np.stack(images))
        self.labels = torch.from_numpy(np.stack(labels))
        self.by_class = {c: np.array(ids, np.int64) for c, ids in by_class.items()}
        self.classes = [c for c, ids in self.by_class.items() if len(ids) >= 2]
        if not self.classes:
            raise ValueError(f"{count} rendered scenes: no shape shows in two of them; render more")

    def pairs(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> image indices (2B,) = [queries, supports], the shape of each pair (B,)."""
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


def pretrain_toy_dino(root: str | Path, out_file: str | Path, steps: int = DINO_STEPS, seed: int = 0,
                      progress: bool = True, config: DinoPretrainConfig | None = None,
                      device: str | torch.device = "cpu") -> dict:
    """Train the tiny-toy DINOv2 on scenes of the world at `root` rendered apart from its files
    (only its seed and size are read, from clips/clips.json) and save the backbone alone, with
    hub keys, at `out_file` (``build_dinov2("tiny-toy", checkpoint=...)``).

    Returns metrics: losses (per step), loss_first / loss_last, the last tenth of each loss
    part, images, seconds_render, seconds (all), steps.
    """
    config = config or DinoPretrainConfig()
    if config.classify_weight <= 0 and config.prototype_weight <= 0:
        raise ValueError("DinoPretrainConfig: classify_weight and prototype_weight are both 0, nothing to train")
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1")
    meta = read_clips_meta(root)
    device = torch.device(device)
    t0 = time.perf_counter()
    data = RenderedScenes(meta["seed"], meta["size"], config.images, config.image_size, seed, progress)
    t_render = time.perf_counter() - t0
    side = dino_size(config.image_size)  # 140 at 128
    mean = torch.tensor(DINO_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(DINO_STD, device=device).view(1, 3, 1, 1)
    rng = np.random.default_rng([seed, 3])
    classes = NUM_TOY_CLASSES
    losses, parts_log = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        dino = build_dinov2("tiny-toy").to(device).requires_grad_(True).train()
        head = nn.Linear(dino.config.dim, classes + 1).to(device)
        params = [*dino.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, config.warmup))
        bar = tqdm(range(steps), desc="pretrain toy DINOv2 (rendered scenes)", disable=not progress)
        for _ in bar:
            idx, pair_class = data.pairs(config.batch, rng)
            x, frac = _augment(data.images[idx], data.labels[idx], classes + 1, side, DINO_PATCH,
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
        "losses": losses,
        **loss_summary(losses),
        **{f"{k}_last": float(np.mean([p[k] for p in parts_log[-n:]])) for k in parts_log[0]},
        "images": len(data.images),
        "seconds_render": round(t_render, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


@torch.no_grad()
def _token_classes(generator: PseudoPromptGenerator, paths: list[tuple[Path, Path]], size: int,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv2 tokens (T,C) of the images and each token's class (T,): the class (0 background,
    1..20) holding at least half its non-ignore pixels, -1 where none does."""
    feats, classes = [], []
    for start in range(0, len(paths), batch):
        images, labels = [], []
        for image_path, label_path in paths[start : start + batch]:
            image, label = resize(read_image(image_path), read_label(label_path), (size, size))
            images.append(torch.from_numpy(np.array(image, np.float32)).permute(2, 0, 1))
            labels.append(torch.from_numpy(np.array(label, np.int64)))
        tokens = generator.tokens(torch.stack(images))  # (N,C,t,t)
        label = torch.stack(labels)
        label = torch.where(label == IGNORE, NUM_TOY_CLASSES + 1, label.clamp_max(NUM_TOY_CLASSES))
        onehot = F.one_hot(label, NUM_TOY_CLASSES + 2).permute(0, 3, 1, 2).float()  # (N,22,S,S), last = ignore
        frac = F.adaptive_avg_pool2d(onehot, tokens.shape[-2:])  # (N,22,t,t)
        share, cls = (frac[:, :-1] / (1 - frac[:, -1:]).clamp_min(1e-6)).max(1)  # over non-ignore pixels
        feats.append(tokens.permute(0, 2, 3, 1).flatten(0, 2))
        classes.append(torch.where(share >= 0.5, cls, -1).flatten())
    return torch.cat(feats), torch.cat(classes)


def evaluate_token_probe(dino: nn.Module, root: str | Path, image_size: int = 128, steps: int = 300,
                         seed: int = 0, batch: int = 50) -> dict:
    """How much of the class the stand-in's patch tokens carry: a linear probe (21 classes with
    the background, class-balanced cross-entropy, full-batch Adam) on the tokens of the world's
    images on disk, fitted on the training blocks and scored on the validation blocks
    (`VAL_EVERY`), all 20 classes in both. The real DINOv2's patch tokens name PASCAL's classes
    well enough for its priors; this measures whether the stand-in's do on the toy.

    Returns "object-token accuracy" (of the held-out tokens that are mostly one class, the share
    the probe names; predicting background counts as wrong), the same on the probe's own
    training tokens, "object vs background accuracy" (held out), "chance" (1/20), the token
    counts and seconds."""
    t0 = time.perf_counter()
    root = Path(root)
    images = sorted((root / "JPEGImages").glob("toy_*.jpg"))
    if not images:
        raise FileNotFoundError(f"{root / 'JPEGImages'}: no toy_*.jpg images (generate the world: fss-sam2 data toy)")
    held_out = [(int(p.stem[4:]) // NUM_TOY_CLASSES) % VAL_EVERY == VAL_EVERY - 1 for p in images]
    pairs = [(p, root / "SegmentationClassAug" / f"{p.stem}.png") for p in images]
    generator = PseudoPromptGenerator(dino).eval()
    split = {}
    for name, want in (("train", False), ("held out", True)):
        chosen = [pair for pair, h in zip(pairs, held_out) if h == want]
        if not chosen:
            raise ValueError(f"{root}: no {name} images for the probe ({len(images)} images on disk)")
        x, y = _token_classes(generator, chosen, image_size, batch)
        split[name] = (x[y >= 0], y[y >= 0])
    (x_train, y_train), (x_test, y_test) = split["train"], split["held out"]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    classes = NUM_TOY_CLASSES + 1
    weight = torch.bincount(y_train, minlength=classes).float()
    weight = weight.sum() / (classes * weight.clamp_min(1))  # class-balanced: the background dominates
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    z_train, z_test = (x_train - mean) / std, (x_test - mean) / std
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(probe(z_train), y_train, weight=weight).backward()
        opt.step()
    with torch.no_grad():
        pred_train, pred_test = probe(z_train).argmax(1), probe(z_test).argmax(1)
    obj_train, obj_test = y_train > 0, y_test > 0
    return {
        "object-token accuracy": float((pred_test[obj_test] == y_test[obj_test]).float().mean()),
        "object-token accuracy (probe's training images)": float((pred_train[obj_train] == y_train[obj_train]).float().mean()),
        "object vs background accuracy": float(((pred_test > 0) == obj_test).float().mean()),
        "chance": 1 / NUM_TOY_CLASSES,
        "object tokens": int(obj_test.sum()),
        "tokens": int(len(y_test)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
