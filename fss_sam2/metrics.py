"""Few-shot segmentation metrics of the official protocol (the release's, unchanged).

Per episode, the intersection and union of background (0) and foreground (1) are counted over
the pixels whose label is not 255. Then
  mIoU   = mean over the fold's classes of  sum_{episodes of c} I_fg / sum U_fg  (+1e-10),
           a class-wise accumulated IoU; a class without episodes counts 0, as officially
  FB-IoU = mean of  sum_{all episodes} I_bg / sum U_bg  and  sum I_fg / sum U_fg
  pIoU   = the foreground term of FB-IoU alone.
Counts are integers, so the result does not depend on the order or batching of episodes.
The meter also keeps every episode's counts (`FssMeter.episodes`), which the bootstrap intervals
of `fss_sam2.stats` resample.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.lists import IGNORE

EPS = 1e-10  # official denominator epsilon


def logits_to_prediction(logits: torch.Tensor, out_size: Sequence[int], threshold: float = 0.5) -> torch.Tensor:
    """Logits (H,W) or (B,H,W) -> binary {0,1} uint8 at `out_size` = (Ho,Wo): bilinear resize
    with align_corners=True, then sigmoid >= threshold (0.5: the official `ori_resize` evaluation)."""
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits of shape {tuple(logits.shape)}: expected (H,W) or (B,H,W)")
    x = logits.float().reshape(-1, 1, *logits.shape[-2:])  # (B,1,H,W)
    x = F.interpolate(x, size=tuple(int(s) for s in out_size), mode="bilinear", align_corners=True)
    pred = (torch.sigmoid(x) >= threshold).to(torch.uint8)  # (B,1,Ho,Wo)
    return pred[:, 0] if logits.dim() == 3 else pred[0, 0]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def intersection_union(pred, label) -> tuple[tuple[int, int], tuple[int, int]]:
    """((I_bg, I_fg), (U_bg, U_fg)) of a binary prediction against a {0,1,255} label."""
    pred, label = _numpy(pred), _numpy(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape}: shapes differ")
    if ((pred != 0) & (pred != 1)).any():
        raise ValueError("prediction holds values other than 0 and 1")
    if ((label != 0) & (label != 1) & (label != IGNORE)).any():
        raise ValueError(f"label holds values other than 0, 1 and {IGNORE}: binarise it first")
    valid = label != IGNORE
    p, t = pred.astype(bool) & valid, (label == 1) & valid
    p0, t0 = ~pred.astype(bool) & valid, (label == 0) & valid
    inter = (int((p0 & t0).sum()), int((p & t).sum()))
    union = (int((p0 | t0).sum()), int((p | t).sum()))
    return inter, union


def foreground_iou(pred, label) -> float:
    """IoU of one binary prediction's foreground with a {0,1,255} label's, ignore pixels left
    out; 1 when both are empty (a per-episode score, unlike the class-wise mIoU)."""
    (_, inter), (_, union) = intersection_union(pred, label)
    return inter / union if union else 1.0


def binary_iou(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
               dims=(-2, -1), empty: float = 1.0) -> torch.Tensor:
    """IoU of boolean masks over `dims` (batched, on the masks' device), pixels outside `valid`
    left out; `empty` where prediction and target are both empty. (B,...,H,W) -> (B,...)."""
    if valid is not None:
        pred, target = pred & valid, target & valid
    inter = (pred & target).sum(dims).float()
    union = (pred | target).sum(dims).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, empty))


def summed_iou(inter, union) -> np.ndarray:
    """IoU of accumulated counts, I / (U + 1e-10), elementwise (...) -> (...) float64: per class
    from its sums of I_fg and U_fg (a class without episodes scores 0 / 1e-10 = 0; the mean over
    the classes is the mIoU), or of the background and foreground sums (their mean: FB-IoU)."""
    return np.asarray(inter, dtype=np.float64) / (np.asarray(union, dtype=np.float64) + EPS)


class FssMeter:
    """Accumulates episodes of the given classes (the fold's novel classes)."""

    def __init__(self, classes: Iterable[int]):
        self.classes = [int(c) for c in classes]
        if not self.classes:
            raise ValueError("FssMeter needs at least one class")
        self.inter = {c: 0 for c in self.classes}  # class -> sum I_fg
        self.union = {c: 0 for c in self.classes}  # class -> sum U_fg
        self.count = {c: 0 for c in self.classes}  # class -> episodes
        self.fb_inter = [0, 0]  # sum over episodes of (I_bg, I_fg)
        self.fb_union = [0, 0]
        self.episodes: list[tuple[int, int, int, int, int]] = []  # per update: cls, I_bg, I_fg, U_bg, U_fg

    def update(self, pred, label, cls: int) -> None:
        """One episode: binary prediction and {0,1,255} label of the same (H,W), its class."""
        cls = int(cls)
        if cls not in self.inter:
            raise ValueError(f"class {cls} is not among the meter's classes {self.classes}")
        inter, union = intersection_union(pred, label)
        self.inter[cls] += inter[1]
        self.union[cls] += union[1]
        self.count[cls] += 1
        self.episodes.append((cls, *inter, *union))
        for i in (0, 1):
            self.fb_inter[i] += inter[i]
            self.fb_union[i] += union[i]

    def running_miou(self) -> float:
        """mIoU over the classes seen so far (for progress bars; 0 before any episode)."""
        seen = [c for c in self.classes if self.count[c]]
        return float(summed_iou([self.inter[c] for c in seen], [self.union[c] for c in seen]).mean()) if seen else 0.0

    def compute(self) -> dict:
        """miou, fb_iou, piou, per_class {cls: iou}, episodes; fractions in [0, 1]."""
        unseen = [c for c in self.classes if not self.count[c]]
        if unseen and any(self.count.values()):
            warnings.warn(f"classes {unseen} have no episodes; they count 0 in the mIoU (official rule)")
        iou = summed_iou([self.inter[c] for c in self.classes], [self.union[c] for c in self.classes])  # (C,)
        per_class = {c: float(v) for c, v in zip(self.classes, iou)}
        bg, fg = (self.fb_inter[i] / (self.fb_union[i] + EPS) for i in (0, 1))
        return {
            "miou": float(iou.mean()),
            "fb_iou": (bg + fg) / 2,
            "piou": fg,
            "per_class": per_class,
            "episodes": sum(self.count.values()),
        }
