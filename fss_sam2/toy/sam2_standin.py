"""The toy profile's stand-in for the pretrained SAM 2, trained once and cached.

No pretrained weights exist offline. A 64-wide tiny-toy SAM 2 (`TOY_SAM2`, 2.4 M parameters;
every parameter, image encoder included) is pretrained the way SAM 2 is, on video and class-agnostic: in a clip, frame a's
mask of the tracked individual -> memory -> segment it in frame b (the naive "support as
memory" path of ``FSSAM(query_memory=False)``, run through FSSAM's own stages); the clips hold
companions (other individuals, some of the same class), so a tracker has to read its memory
to pick the right one. Promptable steps (a click on frame a -> its mask) are an option. Its
clips are rendered in memory from the world's seed, at clip indices far from those on disk,
which stay held out for ``evaluate_tracking``. They show all 20 classes, each fold's novel
classes included: SAM 2's own video data is class-agnostic too, and one SAM 2 stand-in serves
every fold. A loss on the memory attention itself (object cells of frame b attend to the
object's memory cells, `_attention_loss`) is what makes it read its memory in minutes of CPU:
without it the tiny model damps the memory and segments "the most object-like thing"
(emptying the memory mask changed nothing; notebook 02 measures this).

Toy models, toy numbers: they make the synthetic-world tutorial meaningful, nothing more.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..backbones.sam2_model import ImageFeatures, build_sam2_model, encode_image
from ..constants import IGNORE
from ..data.episode_dataset import binarise
from ..data.sources import read_image, read_label
from ..data.transforms import resize
from ..engine.checkpoint import atomic_save
from ..metrics import binary_iou, foreground_iou, intersection_union, logits_to_prediction
from ..model import FSSAM, split_features
from .training import loss_summary, lr_factor
from .world import NUM_TOY_CLASSES, make_clip, read_clips_meta

PRETRAIN_CLIP_OFFSET = 1_000_000  # pretraining clip k of seed s is world clip OFFSET * (s + 1) + k
TOY_SAM2 = "tiny-toy-64"  # the stand-in's size (backbones/sam2_model.py): what configs/toy.yaml builds
# 1000 steps of the 64-wide model cost about what 400 of the 256-wide tiny-toy did (232 s vs 165 s on
# 2 idle cores) and track better on the held-out clips (IoU 0.69 vs 0.61; docs/toy_world.md)
SAM2_STEPS = 1000


@dataclass(frozen=True)
class Sam2PretrainConfig:
    """Hyper-parameters of the SAM 2 stand-in besides the step count (all in the cache key)."""

    sam2: str = TOY_SAM2  # the SAM 2 size pretrained
    image_size: int = 128
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 15  # linear warm-up steps, then cosine decay to 0
    clips: int = 192  # clips rendered for pretraining; pairs of their frames are drawn
    # weight of a promptable step (a click on frame a -> its mask); 0 = tracking only. At equal
    # CPU time it did not help (it costs ~1/3 more per step), so it is off by default.
    prompt_weight: float = 0.0
    clip_grad: float = 1.0
    # weight of a loss on the memory attention itself (`_attention_loss`): object cells of frame b
    # attend to the object's memory cells. Without it the tiny model never learns, in minutes of
    # CPU, to read its memory at all (it damps the memory instead); 0 = off
    attention_weight: float = 1.0


# ---- SAM 2: clips --------------------------------------------------------------------------


def _clip_arrays(images, labels, class_id: int, size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames -> uint8 images (F,3,S,S) and {0,1,255} masks (F,S,S), stretched to size x size."""
    out_i, out_m = [], []
    for t, (image, label) in enumerate(zip(images, labels)):
        mask = binarise(label, class_id, NUM_TOY_CLASSES, f"{where} frame {t}")
        image, mask = resize(image, mask, (size, size))
        out_i.append(np.clip(image + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1))
        out_m.append(mask)
    return np.stack(out_i), np.stack(out_m)


def render_pretrain_clips(world_seed: int, world_size: int, frames: int, count: int, seed: int,
                          image_size: int, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` clips of the world, never the ones on disk -> images (N,F,3,S,S) uint8, masks
    (N,F,S,S) uint8 {0,1,255} of the tracked individual (its companions unlabelled)."""
    images, masks = [], []
    first = PRETRAIN_CLIP_OFFSET * (seed + 1)
    for k in tqdm(range(count), desc="render pretraining clips", disable=not progress):
        class_id, frame_list, label_list = make_clip(world_seed, first + k, world_size, frames)
        i, m = _clip_arrays(frame_list, label_list, class_id, image_size, f"pretraining clip {first + k}")
        images.append(i)
        masks.append(m)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def _frame_pairs(images, masks, batch: int, rng: np.random.Generator):
    """Random (frame a, frame b) of one clip, both flipped together half the time.
    -> images a, b (B,3,S,S) float 0..255, masks a, b (B,S,S) int64 {0,1,255}."""
    n, f = masks.shape[:2]
    clip = rng.integers(n, size=batch)
    ta = rng.integers(f, size=batch)
    tb = (ta + rng.integers(1, f, size=batch)) % f  # another frame, any gap, either direction
    ia, ib = images[clip, ta].float(), images[clip, tb].float()
    ma, mb = masks[clip, ta].long(), masks[clip, tb].long()
    flip = torch.from_numpy(rng.random(batch) < 0.5)
    ia[flip], ib[flip] = ia[flip].flip(-1), ib[flip].flip(-1)
    ma[flip], mb[flip] = ma[flip].flip(-1), mb[flip].flip(-1)
    return ia, ib, ma, mb


# ---- SAM 2: the tracking path ---------------------------------------------------------------


def tracker(sam) -> FSSAM:
    """The naive support-as-memory FSSAM over `sam` (no DINOv2): the path SAM 2 uses to carry
    an object from frame a to frame b of a video, and the one its stand-in is pretrained on.
    Leaves `sam`'s requires_grad flags as FSSAM sets them (the caller may change them)."""
    return FSSAM(sam, None, query_memory=False)


def _track(model: FSSAM, support: ImageFeatures, support_mask: torch.Tensor, query: ImageFeatures,
           weights: bool = False):
    """FSSAM's stages on the naive path, 1 shot: support_mask (B,1,S,S) in {0,1} -> memory ->
    memory attention on the query -> decoder. -> (DecoderOutput with all three masks, the
    memory-attention maps with the softmax weights of every layer [(B,heads,hw,hw+4)] with grad
    when `weights`, else None)."""
    mem = model.memories(query, support, support_mask, None)
    pix_with_mem, maps = model.attend(query, mem, None, weights_with_grad=weights)
    return model.decode(pix_with_mem, query.high_res), maps


def _attention_loss(weights: list[torch.Tensor], mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """Where the query looks in the memory: every query cell of the tracked individual (frame b)
    should give its attention to the individual's memory cells (frame a), every other query cell
    to anything else (other memory cells, the object pointers); -log of that attention mass,
    layers and heads averaged. weights [(B,H,n,L)], masks (B,S,S) in {0,1,255} (nearest to the
    grid; pairs whose frame a shows no memory cell of the individual are left out)."""
    side = math.isqrt(weights[0].shape[-2])
    grid = lambda m: F.interpolate(m[:, None].float(), size=(side, side), mode="nearest").flatten(1)  # noqa: E731
    a, qb = grid(mask_a), grid(mask_b)  # (B,n)
    object_keys = (a == 1).float()
    valid = (qb != IGNORE).float() * (object_keys.sum(1, keepdim=True) > 0)  # (B,n)
    losses = []
    for w in weights:
        on_object = (w.mean(1)[..., : side * side] * object_keys[:, None]).sum(-1)  # (B,n)
        mass = torch.where(qb == 1, on_object, 1 - on_object).clamp_min(1e-6)
        losses.append(-(mass.log() * valid).sum() / valid.sum().clamp_min(1))
    return torch.stack(losses).mean()


def _random_points(masks: torch.Tensor, rng: np.random.Generator):
    """One positive click per mask (B,S,S) at a random foreground pixel (a padding point where
    there is none) -> coords (B,1,2) in pixels (x, y), labels (B,1) int32."""
    b, _, w = masks.shape
    fg = (masks == 1).flatten(1).float()  # (B,S*S)
    has = fg.sum(1) > 0
    u = torch.from_numpy(rng.random(b)).float()
    cdf = fg.cumsum(1) / fg.sum(1, keepdim=True).clamp_min(1)
    idx = torch.searchsorted(cdf, u[:, None]).clamp_max(fg.shape[1] - 1)[:, 0]  # (B,)
    coords = torch.stack([idx % w, idx // w], 1).float() + 0.5
    labels = torch.where(has, 1, -1).int()
    return coords[:, None], labels[:, None]


def _mask_losses(logits: torch.Tensor, iou_pred: torch.Tensor, score: torch.Tensor, target: torch.Tensor,
                 best_only: bool):
    """SAM-style mask loss: Dice + BCE of each of the 3 masks (averaged, or only the best one's
    when `best_only`: an ambiguous prompt), MSE of every predicted IoU, BCE of the object score;
    ignore pixels left out. -> (loss, IoU of the mask the IoU head picks (B,))."""
    valid = (target != IGNORE).float()[:, None]  # (B,1,S,S)
    t = (target == 1).float()[:, None]
    p = torch.sigmoid(logits)  # (B,3,S,S)
    n_valid = valid.sum((2, 3)).clamp_min(1)
    bce = (F.binary_cross_entropy_with_logits(logits, t.expand_as(logits), reduction="none") * valid).sum((2, 3)) / n_valid
    inter = (p * t * valid).sum((2, 3))
    dice = 1 - (2 * inter + 1) / ((p * valid).sum((2, 3)) + (t * valid).sum((2, 3)) + 1)
    seg = dice + bce  # (B,3)
    batch = torch.arange(len(seg))
    seg = seg[batch, seg.detach().argmin(1)] if best_only else seg.mean(1)
    with torch.no_grad():
        iou = binary_iou(logits > 0, t.bool(), valid.bool())  # (B,3)
    present = ((t * valid).sum((1, 2, 3)) > 0).float()[:, None]  # (B,1)
    loss = seg.mean() + F.mse_loss(iou_pred.float(), iou) + F.binary_cross_entropy_with_logits(score.float(), present)
    return loss, iou[batch, iou_pred.detach().argmax(1)]


# ---- SAM 2: pretraining and the tracking check ---------------------------------------------


def pretrain_toy_sam2(root: str | Path, out_file: str | Path, steps: int = SAM2_STEPS, seed: int = 0,
                      progress: bool = True, config: Sam2PretrainConfig | None = None,
                      device: str | torch.device = "cpu") -> dict:
    """Pretrain every parameter of the toy SAM 2 (`config.sam2`) on clips of the world at `root` (one
    individual tracked among companions) and save it as a SAM 2.0 release file ``{"model": state_dict}`` at `out_file`.

    Each step: a batch of (frame a, frame b) pairs of one clip; frame a's mask -> memory ->
    segment frame b (the 3 output masks all supervised: a memory leaves no ambiguity), plus
    `config.attention_weight` x the memory-attention loss (`_attention_loss`); with
    `config.prompt_weight` > 0 also a random click on frame a -> its mask (best of 3). The
    clips are rendered from the world's seed at indices far from those on disk, and show all
    20 classes (class-agnostic, like SAM 2's video data). The file holds the weights in fp16.
    Returns metrics: losses (per step),
    loss_first / loss_last, train_iou_first / _last (frame b, the mask the IoU head picks),
    seconds_render, seconds (all), steps.
    """
    config = config or Sam2PretrainConfig()
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1")
    meta = read_clips_meta(root)
    device = torch.device(device)
    t0 = time.perf_counter()
    images, masks = render_pretrain_clips(meta["seed"], meta["size"], meta["frames"], config.clips, seed,
                                          config.image_size, progress)
    t_render = time.perf_counter() - t0
    rng = np.random.default_rng([seed, 2])
    losses, ious = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        sam = build_sam2_model(config.sam2, config.image_size, device=device)
        model = tracker(sam)
        sam.requires_grad_(True).train()
        params = [p for p in sam.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, config.warmup))
        bar = tqdm(range(steps), desc="pretrain toy SAM 2", disable=not progress)
        for _ in bar:
            ia, ib, ma, mb = (x.to(device) for x in _frame_pairs(images, masks, config.batch, rng))
            feats = encode_image(sam, torch.cat([ia, ib]))  # with grad: the image encoder trains too
            fa, fb = split_features(feats, config.batch)
            out, maps = _track(model, fa, (ma == 1).float()[:, None], fb, weights=config.attention_weight > 0)
            loss, iou = _mask_losses(out.all_logits, out.all_iou, out.object_score, mb, best_only=False)
            if config.attention_weight > 0:
                loss = loss + config.attention_weight * _attention_loss(maps.weights, ma, mb)
            if config.prompt_weight > 0:
                points, labels = (x.to(device) for x in _random_points(ma.cpu(), rng))
                pix = fa.pix + sam.no_mem_embed.view(1, -1, 1, 1)  # a frame without memory (SAM 2)
                prompted = model.decode(pix, fa.high_res, points, labels)
                loss = loss + config.prompt_weight * _mask_losses(
                    prompted.all_logits, prompted.all_iou, prompted.object_score, ma, best_only=True)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, config.clip_grad)
            opt.step()
            sched.step()
            losses.append(loss.item())
            ious.append(iou.mean().item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", iou=f"{ious[-1]:.2f}")
        sam.eval().requires_grad_(False)
    # stored in fp16 (4.8 MB, so that the package can ship it): the stand-in *is* the rounded weights,
    # trained here or shipped alike; the rounding moved its held-out tracking IoU by 2e-5
    atomic_save({"model": {k: v.cpu().half() if v.dtype == torch.float32 else v.cpu()
                           for k, v in sam.state_dict().items()}}, Path(out_file))
    n = max(1, steps // 10)
    return {
        "steps": steps,
        "losses": losses,
        **loss_summary(losses),
        "train_iou_first": float(np.mean(ious[:n])),
        "train_iou_last": float(np.mean(ious[-n:])),
        "seconds_render": round(t_render, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }


@torch.inference_mode()
def evaluate_tracking(sam, root: str | Path, batch_size: int = 8, device: str | torch.device = "cpu",
                      progress: bool = False) -> dict:
    """Same-instance tracking on the world's clips on disk: frame 0's mask -> memory -> frame t
    (t >= 1), through the naive support-as-memory path (the one of ``FSSAM(query_memory=False)``).

    IoU is taken at each frame's original size, ignore pixels left out. Returns miou (mean over
    frames of the per-frame IoU), iou (accumulated), iou_by_gap ([t=1, ..., t=F-1]), frames, seconds.
    """
    root = Path(root)
    meta = read_clips_meta(root)
    device = torch.device(device)
    size = sam.image_size
    was_training, grads = sam.training, {name: p.requires_grad for name, p in sam.named_parameters()}
    model = tracker(sam)
    sam.eval()
    t0 = time.perf_counter()
    queries = []  # (support image, support mask, query image, raw query mask, gap)
    for rec in meta["clips"]:
        frames = [read_image(root / p) for p in rec["images"]]
        labels = [binarise(read_label(root / p), rec["class_id"], NUM_TOY_CLASSES, str(root / p)) for p in rec["labels"]]
        sup_i, sup_m = resize(frames[0], labels[0], (size, size))
        for t in range(1, len(frames)):
            queries.append((sup_i, sup_m, resize(frames[t], labels[t], (size, size))[0], labels[t], t))
    per_frame, gaps = [], []
    inter = union = 0
    try:
        for start in tqdm(range(0, len(queries), batch_size), desc="tracking", disable=not progress):
            chunk = queries[start : start + batch_size]
            sup = torch.from_numpy(np.stack([c[0] for c in chunk])).permute(0, 3, 1, 2).float().to(device)
            sup_m = torch.from_numpy(np.stack([c[1] for c in chunk]) == 1).float()[:, None].to(device)
            qry = torch.from_numpy(np.stack([c[2] for c in chunk])).permute(0, 3, 1, 2).float().to(device)
            fs, fq = split_features(encode_image(sam, torch.cat([sup, qry])), len(chunk))
            best = _track(model, fs, sup_m, fq)[0].logits[:, 0]  # (B,S,S)
            for b, (_, _, _, raw, gap) in enumerate(chunk):
                pred = logits_to_prediction(best[b].cpu(), raw.shape)
                (_, i), (_, u) = intersection_union(pred, raw)
                per_frame.append(foreground_iou(pred, raw))
                gaps.append(gap)
                inter, union = inter + i, union + u
    finally:
        sam.train(was_training)
        for name, p in sam.named_parameters():
            p.requires_grad_(grads[name])
    per_frame, gaps = np.array(per_frame), np.array(gaps)
    return {
        "miou": float(per_frame.mean()),
        "iou": inter / max(union, 1),
        "iou_by_gap": [float(per_frame[gaps == g].mean()) for g in range(1, meta["frames"])],
        "frames": len(per_frame),
        "seconds": round(time.perf_counter() - t0, 2),
    }


